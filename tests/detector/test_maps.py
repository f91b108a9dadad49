"""Anomaly maps: Gaussian blur against scipy, bicubic upsampling, summed feature sets, image scores."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from gpuksvd.detector.maps import anomaly_maps, gaussian_blur, image_scores, upsample


@pytest.mark.parametrize("shape", [(224, 224), (50, 37), (20, 9)])
def test_blur_matches_scipy_gaussian_filter(shape):
    maps = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    blurred = gaussian_blur(maps, sigma=4)
    for b in range(2):
        expected = gaussian_filter(maps[b].numpy(), sigma=4, mode="reflect", truncate=4.0)
        assert np.abs(blurred[b].numpy() - expected).max() < 1e-10


def test_upsample_is_bicubic_and_separate_sets_are_summed():
    low = torch.rand(3, 14, 14)
    big = upsample(low, (224, 224))
    assert big.shape == (3, 224, 224)
    # bicubic interpolation reproduces a constant exactly
    assert torch.allclose(upsample(torch.full((1, 7, 7), 2.5), (56, 56)), torch.full((1, 56, 56), 2.5))
    other = torch.rand(3, 28, 28)
    summed = anomaly_maps([low, other], (224, 224), sigma=0)
    assert torch.allclose(summed, upsample(low, (224, 224)) + upsample(other, (224, 224)))
    assert torch.equal(image_scores(summed), summed.flatten(1).amax(1))
