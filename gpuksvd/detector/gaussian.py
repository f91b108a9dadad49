"""Per-location 2-D Gaussians over sparse-coding descriptors, and Mahalanobis distances.

PSDL describes each signal by two numbers — the L1 norm of its sparse code and its squared
reconstruction error — and models the training descriptors of each location by a Gaussian
(paper, Sec. 2.3). All locations are handled at once: no loop over P.
"""
from __future__ import annotations

import torch
from torch import Tensor


def code_descriptors(signals: Tensor, dictionary: Tensor, codes: Tensor) -> Tensor:
    """(L1 norm of the code, squared reconstruction error) of every signal.

    Parameters
    ----------
    signals : Tensor of shape (P, N, C)
    dictionary : Tensor of shape (P, K, C)
    codes : Tensor of shape (P, N, K)

    Returns
    -------
    Tensor of shape (P, N, 2)
    """
    reconstruction_error = (signals - codes @ dictionary).square().sum(-1)
    return torch.stack((codes.abs().sum(-1), reconstruction_error), -1)


def fit_gaussian(descriptors: Tensor, regularization: float = 0.01) -> tuple[Tensor, Tensor]:
    """Mean and precision of a Gaussian per location.

    Parameters
    ----------
    descriptors : Tensor of shape (P, N, D)
        N training descriptors per location (N ≥ 2).
    regularization : float
        Added to the diagonal of the covariance (``Σ + λ I``; the paper uses λ = 0.01).

    Returns
    -------
    mean : Tensor of shape (P, D)
    precision : Tensor of shape (P, D, D)
        ``(Σ + λ I)⁻¹`` with the unbiased sample covariance Σ, computed in float64.
    """
    n_signals = descriptors.shape[1]
    if n_signals < 2:
        raise ValueError(f"a Gaussian needs at least 2 training signals per location, got {n_signals}")
    values = descriptors.double()
    mean = values.mean(1)
    centered = values - mean[:, None]
    covariance = centered.mT @ centered / (n_signals - 1)
    covariance += regularization * torch.eye(values.shape[-1], dtype=torch.float64, device=values.device)
    precision = torch.linalg.inv(covariance)
    return mean.to(descriptors.dtype), precision.to(descriptors.dtype)


def mahalanobis(descriptors: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """Mahalanobis distance of each descriptor to its location's Gaussian.

    Parameters
    ----------
    descriptors : Tensor of shape (P, N, D)
    mean : Tensor of shape (P, D)
    precision : Tensor of shape (P, D, D)

    Returns
    -------
    Tensor of shape (P, N): ``sqrt((x − μ)ᵀ Σ⁻¹ (x − μ))``.
    """
    delta = descriptors - mean[:, None]
    squared = ((delta @ precision) * delta).sum(-1)
    return squared.clamp_min(0).sqrt()
