"""Pixel-level threshold sweeps: AUPRO, and the score histogram it shares with pixel AUROC.

A sweep over thresholds never loops in Python over thresholds or pixels. Every pixel's score is
mapped to a bin, ``bincount`` sums the pixels (or their weights) per bin and class, and a reversed
cumulative sum gives, for every threshold at once, the weight of the pixels scoring at or above
it. The pixels are processed in chunks, so memory stays bounded at any test-set size.

Thresholds are either every distinct score (exact, as the MVTec AD evaluation code does: bins
from ``torch.unique``, which sorts every pixel), or ``num_thresholds`` evenly spaced over
``[min, max]`` of the scores, as torchmetrics' and anomalib's binned curves space them (bins by
arithmetic: several times faster than a sort or a ``bucketize`` binary search). Binning only
ties scores that share a cell; :func:`binning_error_bound` bounds what that can change, and the
metrics fall back to the exact sweep when the bound exceeds :data:`BINNING_TOLERANCE` (it takes
extreme outliers that squeeze all other scores into a few cells, or heavily tied scores).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

#: Default number of thresholds of the binned sweeps (cells of the score histogram).
DEFAULT_NUM_THRESHOLDS = 1 << 20

#: Largest change of a metric that binning may cause before the exact sweep is used instead.
BINNING_TOLERANCE = 1e-4

#: Pixels processed per chunk: bounds the per-chunk temporaries to ~256 MiB.
_CHUNK = 1 << 23
#: 8-connectivity inside an image, none across images: the MVTec AD evaluation's 3x3 structure.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


def aupro(
    maps: Tensor,
    masks: Tensor,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = DEFAULT_NUM_THRESHOLDS,
) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to a false-positive rate.

    As the MVTec AD benchmark defines it (Bergmann et al., IJCV 2021, Sec. 4.2, and its
    ``compute_pro`` / ``trapezoid``): each 8-connected component of a ground-truth mask is a
    region. At a threshold ``t``, PRO is the mean over all regions of all images of the
    fraction of the region's pixels scoring ``≥ t``, and FPR is the fraction of all normal
    pixels (of all images) scoring ``≥ t``. PRO is integrated over FPR in ``[0, fpr_limit]``
    with the trapezoid rule, interpolating linearly at exactly ``fpr_limit``, and divided by
    ``fpr_limit`` so that a perfect detector scores 1. (anomalib instead cuts the curve at
    its last point below the limit and divides by that point's FPR.)

    Parameters
    ----------
    maps : Tensor of shape (M, H, W)
        Anomaly scores, higher = more anomalous. Any device.
    masks : Tensor of shape (M, H, W)
        Ground truth, non-zero = anomalous (bool, 0/1 or 0/255).
    fpr_limit : float
        Upper integration limit, in (0, 1].
    num_thresholds : int or None
        Number of evenly spaced thresholds of the binned sweep (see the module docstring);
        ``None`` for the exact curve over every distinct score (sorts every pixel), which is
        also used when binning might change the result by more than ``BINNING_TOLERANCE``.

    Returns
    -------
    float
        AUPRO in [0, 1]; NaN when there is no anomalous or no normal pixel.
    """
    maps, masks = check_pixel_inputs(maps, masks)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    regions, n_regions = label_regions(masks)
    region_sizes = torch.from_numpy(np.bincount(regions.numpy().ravel())).to(torch.float64)
    n_normal = int(region_sizes[0])
    if n_regions == 0 or n_normal == 0:
        return float("nan")
    # An anomalous pixel adds 1/|its region| to the sum of region overlaps.
    label_weights = 1.0 / region_sizes.clamp(min=1)
    scores, labels = maps.reshape(-1), regions.reshape(-1)
    tails = tail_sums(scores, labels, num_thresholds, label_weights)
    if num_thresholds is not None and binning_error_bound(tails, fpr_limit) > BINNING_TOLERANCE:
        tails = tail_sums(scores, labels, None, label_weights)
    fpr = rate_curve(tails[:, 0], n_normal)
    pro = rate_curve(tails[:, 1], n_regions)
    return area_up_to(fpr, pro, fpr_limit)


def label_regions(masks: Tensor) -> tuple[Tensor, int]:
    """Connected components of every mask, numbered across the whole stack.

    Parameters
    ----------
    masks : Tensor of shape (M, H, W), bool

    Returns
    -------
    regions : Tensor of shape (M, H, W), int32, on the CPU
        0 for normal pixels, ``1..n_regions`` for the 8-connected components of each image
        (components never span two images).
    n_regions : int
    """
    labelled, n_regions = ndimage.label(masks.cpu().numpy(), structure=_REGION_STRUCTURE)
    return torch.from_numpy(labelled.astype(np.int32, copy=False)), int(n_regions)


def tail_sums(
    scores: Tensor,
    labels: Tensor,
    num_thresholds: int | None,
    label_weights: Tensor | None = None,
) -> Tensor:
    """For every threshold, the number of negative and the weight of positive pixels scoring ≥ it.

    Parameters
    ----------
    scores : Tensor of shape (N,), floating
    labels : Tensor of shape (N,), bool or integer, any device
        0 / False for a negative pixel; non-zero for a positive one (True, or a region id).
    num_thresholds : int or None
        ``None``: every distinct score is a threshold (exact). Else that many thresholds evenly
        spaced from the lowest score up, splitting ``[min, max]`` into equal cells.
    label_weights : Tensor of shape (L,), optional
        Weight of a positive pixel by its label (e.g. 1/region size); ``None`` counts them.

    Returns
    -------
    tails : Tensor of shape (T, 2), float64, on the CPU
        ``tails[i]`` = (number of negative pixels, total weight of positive pixels) whose score
        is ``≥`` the i-th threshold, thresholds ascending (so ``tails[0]`` holds the totals).
        Only thresholds that open a non-empty cell are kept, so ``T ≤ min(N, num_thresholds)``.
    """
    device = scores.device
    if num_thresholds is None:
        distinct, inverse = torch.unique(scores, sorted=True, return_inverse=True)
        n_bins = distinct.numel()
    else:
        _check_num_thresholds(num_thresholds)
        n_bins = num_thresholds
        low, high = (float(v) for v in torch.aminmax(scores))
        # Bin i holds [low + i·width, low + (i+1)·width); the maximum goes into the last bin.
        scale = n_bins / (high - low) if high > low else 0.0
        # Float32 is enough to place a score among 2²⁰ cells, unless the range is subnormal.
        dtype = torch.float64 if scale > 1e30 or scores.dtype == torch.float64 else torch.float32
    if label_weights is not None:
        label_weights = label_weights.to(device=device, dtype=torch.float64)
    counts = torch.zeros(n_bins, dtype=torch.long, device=device)
    positive_counts = torch.zeros(n_bins, dtype=torch.long, device=device)
    positive_weights = torch.zeros(n_bins, dtype=torch.float64, device=device)
    for start in range(0, scores.numel(), _CHUNK):
        part = slice(start, start + _CHUNK)
        if num_thresholds is None:
            bins = inverse[part]
        else:
            bins = torch.sub(scores[part].to(dtype), low).mul_(scale).long().clamp_(0, n_bins - 1)
        label = labels[part].to(device)
        positive = label != 0
        positive_bins = bins[positive]
        counts += torch.bincount(bins, minlength=n_bins)
        positive_counts += torch.bincount(positive_bins, minlength=n_bins)
        if label_weights is not None:
            weights = label_weights[label[positive].long()]
            positive_weights += torch.bincount(positive_bins, weights=weights, minlength=n_bins)
    if label_weights is None:
        positive_weights = positive_counts.to(torch.float64)
    histogram = torch.stack([(counts - positive_counts).to(torch.float64), positive_weights], dim=1)
    # An empty cell would only repeat a point of the curve.
    histogram = histogram[counts > 0].cpu()
    return histogram.flip(0).cumsum(0).flip(0)


def binning_error_bound(tails: Tensor, x_max: float = 1.0) -> float:
    """Largest change that merging the scores of each cell can cause to ``area_up_to``.

    Inside one cell the exact curve is a staircase and the binned one its diagonal; they differ
    by at most half the product of the cell's extent along each axis. Summed over the cells
    that start below ``x_max`` and divided by ``x_max``, as the area is. For ROC (``x_max=1``)
    this is half the fraction of (positive, negative) pairs that share a cell.

    Parameters
    ----------
    tails : Tensor of shape (T, 2)
        As returned by :func:`tail_sums`; column 0 is the x axis (negatives).
    x_max : float
        Integration limit along x, in (0, 1].
    """
    rates = tails / tails[0]
    above = torch.cat([rates[1:], rates.new_zeros(1, 2)])
    cells = (rates - above)[above[:, 0] < x_max]
    return 0.5 * float(cells[:, 0] @ cells[:, 1]) / x_max


def area_up_to(x: Tensor, y: Tensor, x_max: float) -> float:
    """Trapezoid area under ``y(x)`` over ``[0, x_max]``, divided by ``x_max``.

    Parameters
    ----------
    x, y : Tensor of shape (L,), float64
        A curve from (0, ·) to (1, ·) with ``x`` non-decreasing. ``y`` is interpolated
        linearly at ``x_max`` when no point lies exactly there (MVTec AD's ``trapezoid``).
    """
    stop = int(torch.searchsorted(x, torch.tensor([x_max], dtype=x.dtype), right=True))
    xs, ys = x[:stop], y[:stop]
    area = float(torch.trapezoid(ys, xs)) if stop > 1 else 0.0
    if stop < x.numel() and float(xs[-1]) < x_max:
        x0, y0, x1, y1 = float(x[stop - 1]), float(y[stop - 1]), float(x[stop]), float(y[stop])
        y_at_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at_max) * (x_max - x0)
    return area / x_max


def check_pixel_inputs(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Validate anomaly maps against masks; return float maps and bool masks, same device."""
    if not isinstance(maps, Tensor) or not isinstance(masks, Tensor):
        raise TypeError(f"maps and masks must be torch Tensors, got {type(maps).__name__} and "
                        f"{type(masks).__name__}")
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(f"maps and masks must both have shape (M, H, W), got {tuple(maps.shape)} "
                         f"and {tuple(masks.shape)}: resize the masks to the maps (nearest-neighbour)")
    if not maps.is_floating_point():
        maps = maps.float()
    if maps.numel() and not all(map(math.isfinite, torch.aminmax(maps))):  # NaN propagates
        n_bad = int((~torch.isfinite(maps)).sum())
        raise ValueError(f"anomaly maps hold {n_bad} NaN or infinite values: check the scorer's input")
    masks = masks if masks.dtype == torch.bool else masks != 0
    return maps.contiguous(), masks.to(maps.device).contiguous()


def _check_num_thresholds(num_thresholds) -> None:
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 2:
        raise ValueError(
            f"num_thresholds must be an integer ≥ 2, or None for the exact curve, got {num_thresholds!r}"
        )


def rate_curve(tail: Tensor, total: float) -> Tensor:
    """Rates in order of decreasing threshold, from 0 (above every score) to exactly 1."""
    rate = tail.flip(0) / total
    zero, one = rate.new_zeros(1), rate.new_ones(1)
    return torch.cat([zero, rate.clamp(max=1.0), one])
