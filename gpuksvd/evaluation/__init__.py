"""Evaluation: image and pixel metrics per category and averaged, and score normalisation.

:mod:`.metrics` computes image AUROC / AP and pixel AUROC per category and over groups of
categories (:class:`MetricsReport`), :mod:`.aupro` the per-region overlap and the score
histograms both pixel metrics share, :mod:`.normalization` the per-category score
normalisation (``none`` | ``minmax`` | ``train``).
"""
from .aupro import aupro
from .metrics import (
    METRIC_NAMES,
    METRIC_TITLES,
    MetricsReport,
    MissingMaskWarning,
    evaluate,
    image_ap,
    image_auroc,
    nanmean,
    percent,
    pixel_auroc,
)
from .normalization import NORMALIZATIONS, check_normalization, normalize_scores

__all__ = [
    "METRIC_NAMES", "METRIC_TITLES", "MetricsReport", "MissingMaskWarning", "NORMALIZATIONS", "aupro",
    "check_normalization", "evaluate", "image_ap", "image_auroc", "nanmean", "normalize_scores", "percent",
    "pixel_auroc",
]
