"""Per-location Gaussians and Mahalanobis distances against float64 NumPy loops."""
import numpy as np
import pytest
import torch

from gpuksvd.detector.gaussian import code_descriptors, fit_gaussian, mahalanobis


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
