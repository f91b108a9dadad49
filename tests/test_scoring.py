"""Gaussian fit, Mahalanobis distance and anomaly maps against independent references."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from gpuksvd.gaussian import code_descriptors, fit_gaussian, mahalanobis
from gpuksvd.maps import anomaly_maps, gaussian_blur, image_scores, upsample


def test_mahalanobis_matches_float64_loop():
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(5, 40, 2, generator=gen) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    test = torch.randn(5, 7, 2, generator=gen)
    mean, precision = fit_gaussian(train, regularization=0.01)
    distances = mahalanobis(test, mean, precision)
    for p in range(5):
        x = train[p].double().numpy()
        mu = x.mean(0)
        cov = np.cov(x, rowvar=False) + 0.01 * np.eye(2)
        inv = np.linalg.inv(cov)
        for n in range(7):
            delta = test[p, n].double().numpy() - mu
            expected = np.sqrt(delta @ inv @ delta)
            assert abs(float(distances[p, n]) - expected) < 1e-4 * max(1.0, expected)


def test_fit_gaussian_needs_two_signals():
    with pytest.raises(ValueError, match="at least 2"):
        fit_gaussian(torch.zeros(3, 1, 2))


def test_code_descriptors():
    signals = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]])
    dictionary = torch.eye(2)[None]
    codes = torch.tensor([[[1.0, -1.0], [0.0, 0.5]]])
    descriptors = code_descriptors(signals, dictionary, codes)
    # L1 norms 2 and 0.5; squared errors (0² + 3²) and (0² + 0.5²)
    assert torch.allclose(descriptors, torch.tensor([[[2.0, 9.0], [0.5, 0.25]]]))


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
