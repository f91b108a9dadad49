"""Evaluation: image and pixel metrics per category and averaged, and score normalisation.

:mod:`.metrics` computes image AUROC / AP and pixel AUROC per category and over groups of
categories (:class:`MetricsReport`), :mod:`.aupro` the per-region overlap and the score
histograms both pixel metrics share, :mod:`.normalization` the per-category score
normalisation (``none`` | ``minmax`` | ``train``), :mod:`.thresholds` the per-category decision
thresholds (a training-score quantile, or F1-optimal on labelled validation images).
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
    image_f1,
    nanmean,
    percent,
    pixel_auroc,
)
from .normalization import NORMALIZATIONS, check_normalization, normalize_scores
from .thresholds import (
    MAX_AUTO_FOLDS,
    THRESHOLD_METHODS,
    TRAINING_THRESHOLDS,
    crossfit_folds,
    decide,
    f1_optimal_threshold,
    fold_count,
    normalize_to_threshold,
    per_image,
    quantile_thresholds,
    smallest_fold_complement,
)

__all__ = [
    "MAX_AUTO_FOLDS", "METRIC_NAMES", "METRIC_TITLES", "MetricsReport", "MissingMaskWarning", "NORMALIZATIONS", "THRESHOLD_METHODS",
    "TRAINING_THRESHOLDS", "aupro", "check_normalization", "crossfit_folds", "decide", "fold_count", "evaluate", "f1_optimal_threshold", "image_ap", "image_auroc",
    "image_f1", "nanmean", "normalize_scores", "normalize_to_threshold", "per_image", "percent", "pixel_auroc",
    "quantile_thresholds", "smallest_fold_complement",
]
