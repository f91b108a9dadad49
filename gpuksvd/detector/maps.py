"""From per-location scores to image-sized anomaly maps and image scores (paper, Sec. 2.4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> Tensor:
    """Normalised 1-D Gaussian of radius ``round(truncate·σ)`` (scipy.ndimage's convention)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing with reflected borders, like ``scipy.ndimage.gaussian_filter``
    (mode ``"reflect"``), as the PaDiM/PSDL reference code applies it.

    Parameters
    ----------
    maps : Tensor of shape (B, H, W)

    Returns
    -------
    Tensor of shape (B, H, W)
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, dtype=maps.dtype, device=maps.device)
    radius = (len(kernel) - 1) // 2
    x = maps[:, None]
    # scipy's "reflect" repeats the edge sample (d c b a | a b c d); torch's "reflect" does not,
    # so pad by flipping explicitly. Padding wider than the image is folded repeatedly.
    x = _symmetric_pad(x, radius, dim=-1)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = _symmetric_pad(x, radius, dim=-2)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def _symmetric_pad(x: Tensor, radius: int, dim: int) -> Tensor:
    size = x.shape[dim]
    index = torch.arange(-radius, size + radius, device=x.device)
    period = 2 * size
    index = index % period
    index = torch.where(index >= size, period - 1 - index, index)
    return x.index_select(dim, index)


def upsample(location_scores: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Bicubic upsampling of (B, h, w) location scores to (B, H, W), ``align_corners=False``."""
    return F.interpolate(location_scores[:, None], size=tuple(image_size), mode="bicubic",
                         align_corners=False)[:, 0]


def anomaly_maps(location_scores: list[Tensor], image_size: tuple[int, int], sigma: float = 4.0) -> Tensor:
    """Image-sized anomaly maps from one or more sets of per-location scores.

    Parameters
    ----------
    location_scores : list of Tensor of shape (B, h_i, w_i)
        One entry per feature set; several (the paper's "1+2+3": layers combined in the
        calculation, ``fusion="separate"``) are upsampled and summed.
    image_size : (H, W)
    sigma : float
        Standard deviation of the final Gaussian smoothing, in pixels (paper: 4).

    Returns
    -------
    Tensor of shape (B, H, W)
    """
    total = sum(upsample(scores, image_size) for scores in location_scores)
    return gaussian_blur(total, sigma)


def image_scores(maps: Tensor) -> Tensor:
    """Image anomaly score: the maximum of each (B, H, W) map → (B,)."""
    return maps.flatten(1).amax(1)

