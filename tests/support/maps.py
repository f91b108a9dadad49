"""Anomaly maps with known regions, and a slow, obviously correct AUPRO to test against."""
from __future__ import annotations

from bisect import bisect_right

import numpy as np
import torch
from scipy import ndimage


def random_maps(seed: int, n_images: int = 6, size: int = 16, levels: int | None = None):
    """Maps with rectangular (and one diagonal) anomalies; quantised to `levels` for ties."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_images, size, size), dtype=bool)
    for m in range(n_images // 2):
        for _ in range(rng.integers(1, 3)):
            r, c = rng.integers(0, size - 4, size=2)
            h, w = rng.integers(1, 5, size=2)
            masks[m, r:r + h, c:c + w] = True
    masks[0, np.arange(4), 11 + np.arange(4)] = True  # diagonal region: one region in 8-connectivity
    maps = rng.normal(size=masks.shape) + 1.5 * masks + rng.normal(size=masks.shape) * masks
    if levels is not None:
        maps = np.round(maps * levels / 4) / levels
    return torch.from_numpy(maps.astype(np.float32)), torch.from_numpy(masks)


def slow_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """A loop over thresholds and regions, then MVTec AD's `trapezoid` with x_max."""
    regions = []
    for image, mask in zip(maps, masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [image[labelled == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        fprs.append(np.mean(normal >= threshold))
        pros.append(np.mean([np.mean(region >= threshold) for region in regions]))
    x, y = np.array(fprs + [1.0]), np.array(pros + [1.0])
    ins = bisect_right(list(x), fpr_limit)
    correction = 0.0
    if x[ins - 1] < fpr_limit:
        y_at = y[ins - 1] + (y[ins] - y[ins - 1]) * (fpr_limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_at + y[ins - 1]) * (fpr_limit - x[ins - 1])
    x, y = x[:ins], y[:ins]
    return (np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) + correction) / fpr_limit
