"""Detection metrics per category and averaged, as the paper's tables report them.

Image level: AUROC and average precision of the image scores (torchmetrics). Pixel level: AUROC
of the anomaly maps and AUPRO up to FPR 0.3 (:mod:`~gpuksvd.evaluation.aupro`). :func:`evaluate` computes
all four per category, then averages them over named groups of categories (MVTec AD's textures
and objects) and over all categories (the paper's "total").

Two conventions hold everywhere:

* A metric that is undefined because only one class is present (a category without anomalous
  images, a set of maps without anomalous pixels) is NaN, never an exception; averages skip
  NaN values and are NaN only when every value is.
* torchmetrics treats scores outside [0, 1] as logits and passes them through a sigmoid, which
  in float32 saturates to 1.0 above ~17 and would tie every large Mahalanobis distance. Scores
  are therefore min-max scaled to [0, 1] in float64 first, which keeps their order and ties.

Pixel AUROC over a whole test set is large (MVTec AD: 1725 maps of 224x224 = 86 M pixels), and
the exact value sorts every pixel (torchmetrics: ~16 s and +2.1 GB for 86 M pixels on 2 busy CPU
cores). By default it is therefore computed from a histogram of the scores in 2²⁰ equal cells
between their minimum and maximum (~2 s there, memory bounded by chunks). Binning can
only tie scores that share a cell, which moves the AUROC by at most half the fraction of
(anomalous, normal) pixel pairs sharing a cell; that bound is computed on every call, and when
it exceeds :data:`~gpuksvd.evaluation.aupro.BINNING_TOLERANCE` (1e-4) the exact value is computed instead.
So the result is always within 1e-4 of the exact one, and exact whenever the maps have fewer
distinct values than cells (e.g. 8-bit maps). ``num_thresholds=None`` forces the exact
torchmetrics value. AUPRO follows the same rule.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from .aupro import (
    BINNING_TOLERANCE,
    DEFAULT_NUM_THRESHOLDS,
    aupro,
    binning_error_bound,
    check_pixel_inputs,
    rate_curve,
    tail_sums,
)

#: Metric names, in table order.
METRIC_NAMES = ("image_auroc", "image_ap", "image_f1", "pixel_auroc", "pixel_ap", "aupro")
METRIC_TITLES = {"image_auroc": "Image AUROC", "image_ap": "Image AP", "image_f1": "Image F1",
                 "pixel_auroc": "Pixel AUROC", "pixel_ap": "Pixel AP", "aupro": "AUPRO"}


class MissingMaskWarning(UserWarning):
    """Some test images have no ground-truth mask and were left out of the pixel metrics."""


def image_auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of image scores (torchmetrics ``binary_auroc``, exact).

    Parameters
    ----------
    scores : Tensor of shape (M,)
        Image anomaly scores, higher = more anomalous; any real range.
    labels : Tensor of shape (M,)
        1 for anomalous, 0 for normal.

    Returns
    -------
    float
        AUROC in [0, 1] (ties count one half); NaN when only one class is present.
    """
    scores, labels = _check_image_inputs(scores, labels)
    if _single_class(labels):
        return math.nan
    return float(binary_auroc(_unit_interval(scores), labels, validate_args=False))


def image_ap(scores: Tensor, labels: Tensor) -> float:
    """Average precision of image scores (torchmetrics ``binary_average_precision``).

    The step-wise sum ``Σ (Rₙ − Rₙ₋₁) Pₙ`` over distinct thresholds, as scikit-learn's
    ``average_precision_score``; the BTAD table of the paper reports it.

    Parameters
    ----------
    scores : Tensor of shape (M,)
    labels : Tensor of shape (M,)
        1 for anomalous, 0 for normal.

    Returns
    -------
    float
        AP in [0, 1]; NaN when only one class is present.
    """
    scores, labels = _check_image_inputs(scores, labels)
    if _single_class(labels):
        return math.nan
    return float(binary_average_precision(_unit_interval(scores), labels, validate_args=False))


def image_f1(scores: Tensor, labels: Tensor, thresholds: Tensor) -> float:
    """F1 of the decisions ``score ≥ threshold`` (one threshold per image, its category's).

    Parameters
    ----------
    scores, labels : Tensor of shape (M,)
    thresholds : Tensor of shape (M,), float64
        NaN where an image's category has no threshold.

    Returns
    -------
    float
        ``2 TP / (2 TP + FP + FN)``; NaN when a threshold is missing or only one class is present.
    """
    scores, labels = _check_image_inputs(scores, labels)
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64).cpu()
    if thresholds.shape != scores.shape:
        raise ValueError(f"thresholds must hold one value per score ({len(scores)}), got {tuple(thresholds.shape)}")
    labels = labels.cpu().bool()
    if bool(torch.isnan(thresholds).any()) or _single_class(labels.long()):
        return math.nan
    flagged = scores.detach().double().cpu() >= thresholds
    true_positive = int((flagged & labels).sum())
    return 2 * true_positive / (int(flagged.sum()) + int(labels.sum()))


def pixel_auroc(maps: Tensor, masks: Tensor, *,
                num_thresholds: int | None = DEFAULT_NUM_THRESHOLDS) -> float:
    """Area under the ROC curve of all pixels of all maps pooled together.

    Parameters
    ----------
    maps : Tensor of shape (M, H, W)
        Anomaly maps, higher = more anomalous. Any device.
    masks : Tensor of shape (M, H, W)
        Ground truth, non-zero = anomalous.
    num_thresholds : int or None
        Number of evenly spaced thresholds (histogram cells) of the binned ROC curve, see the
        module docstring; ``None`` for the exact value from torchmetrics ``binary_auroc``
        (sorts every pixel), which is also used when binning might be off by more than the
        tolerance.

    Returns
    -------
    float
        AUROC in [0, 1] (ties count one half), within ``BINNING_TOLERANCE`` of the exact
        value; NaN when the masks hold only anomalous or only normal pixels.
    """
    maps, masks = check_pixel_inputs(maps, masks)
    if num_thresholds is not None:
        tails = tail_sums(maps.reshape(-1), masks.reshape(-1), num_thresholds)
        n_negative, n_positive = tails[0].tolist()
        if n_negative == 0 or n_positive == 0:
            return math.nan
        if binning_error_bound(tails) <= BINNING_TOLERANCE:
            fpr = rate_curve(tails[:, 0], n_negative)
            tpr = rate_curve(tails[:, 1], n_positive)
            return float(torch.trapezoid(tpr, fpr))
    elif _single_class(masks):
        return math.nan
    return float(binary_auroc(_unit_interval(maps.reshape(-1)), masks.reshape(-1),
                              validate_args=False))


def pixel_ap(maps: Tensor, masks: Tensor, *, num_thresholds: int | None = DEFAULT_NUM_THRESHOLDS) -> float:
    """Average precision of all pixels of all maps pooled together (the PSDL authors' "pixel
    PR-AUC", scikit-learn's ``average_precision_score``: ``Σ (Rₙ − Rₙ₋₁) Pₙ`` over thresholds).

    Binned like :func:`pixel_auroc`: binning only merges scores that share a cell into one
    threshold, which can move the precision inside a cell at most between the bounds
    :func:`ap_binning_error_bound` sums up; above ``BINNING_TOLERANCE`` the exact sweep over
    every distinct score is used instead.

    Returns
    -------
    float
        AP in [0, 1]; NaN when the masks hold only anomalous or only normal pixels.
    """
    maps, masks = check_pixel_inputs(maps, masks)
    scores, labels = maps.reshape(-1), masks.reshape(-1)
    tails = tail_sums(scores, labels, num_thresholds) if num_thresholds is not None else None
    if tails is not None and ap_binning_error_bound(tails) > BINNING_TOLERANCE:
        tails = None
    if tails is None:
        tails = tail_sums(scores, labels, None)
    n_negative, n_positive = tails[0].tolist()
    if n_negative == 0 or n_positive == 0:
        return math.nan
    return _average_precision(tails)


def _average_precision(tails: Tensor) -> float:
    """AP from ``tail_sums`` (ascending thresholds): precision at each threshold times the
    recall it adds, scanning from the highest threshold down."""
    false_positive, true_positive = tails.flip(0).unbind(1)  # descending thresholds
    recall = true_positive / true_positive[-1]
    precision = true_positive / (true_positive + false_positive)
    gained = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((gained * precision).sum())


def ap_binning_error_bound(tails: Tensor) -> float:
    """Largest change of the AP that merging the scores of each histogram cell can cause.

    Inside a cell, the recall it adds is the same merged or not, while the precision at which
    it is added can lie anywhere between the cell's extremes: all its negatives scored above all
    its positives, or the reverse. The bound sums, over cells, the recall added times that
    spread of precision.
    """
    false_positive, true_positive = tails.flip(0).unbind(1)
    before_fp = torch.cat([false_positive.new_zeros(1), false_positive[:-1]])
    before_tp = torch.cat([true_positive.new_zeros(1), true_positive[:-1]])
    added_tp, added_fp = true_positive - before_tp, false_positive - before_fp
    worst = before_tp / (before_tp + false_positive).clamp_min(1e-300)  # negatives of the cell first
    best = true_positive / (true_positive + before_fp).clamp_min(1e-300)  # positives first
    total = true_positive[-1].clamp_min(1e-300)
    return float(((added_tp / total) * (best - worst) * (added_tp > 0) * (added_fp > 0)).sum())


@dataclass
class MetricsReport:
    """Metrics per category, per group of categories and over all categories.

    Every inner dict maps the names of :data:`METRIC_NAMES` to a value in [0, 1] or NaN.

    Attributes
    ----------
    per_category : dict[str, dict[str, float]]
        In order of first appearance in the test set.
    groups : dict[str, dict[str, float]]
        Mean over the categories of each group present in the test set (e.g. "textures").
    mean : dict[str, float]
        Mean over all categories.

    The paper's "Total" (MVTec AD) is the mean of the group means — textures and objects count
    equally, not the 15 categories — :attr:`total`; without groups it is :attr:`mean`.
    """

    per_category: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> dict[str, float]:
        """The paper's Total: the mean of the group means (the mean over categories without groups)."""
        return _mean_tables(list(self.groups.values())) if self.groups else dict(self.mean)

    @property
    def main_metric(self) -> float:
        """Mean image AUROC over categories: what a sweep optimises."""
        return self.mean["image_auroc"]

    def to_dict(self) -> dict:
        """A JSON-able dict (NaN → None), with ``main_metric`` alongside the three tables."""
        def clean(table: Mapping[str, float]) -> dict[str, float | None]:
            return {name: None if math.isnan(value) else float(value) for name, value in table.items()}

        return {
            "per_category": {name: clean(table) for name, table in self.per_category.items()},
            "groups": {name: clean(table) for name, table in self.groups.items()},
            "mean": clean(self.mean),
            "total": clean(self.total),
            "main_metric": clean({"main": self.main_metric})["main"],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> MetricsReport:
        """Inverse of :meth:`to_dict` (None → NaN), e.g. to read a run's ``metrics.json``."""
        def restore(table: Mapping[str, float | None]) -> dict[str, float]:
            return {name: math.nan if value is None else float(value) for name, value in table.items()}

        return cls(
            per_category={name: restore(table) for name, table in data["per_category"].items()},
            groups={name: restore(table) for name, table in data.get("groups", {}).items()},
            mean=restore(data["mean"]),
        )

    def to_markdown(self, metrics: Sequence[str] | None = None) -> str:
        """Markdown table: rows categories, then groups, the paper's total (with groups) and the
        mean over categories; values in percent.

        Values are printed with one decimal, as the paper's tables (0.9871 → "98.7"); NaN as
        "n/a". ``metrics`` defaults to every metric of :data:`METRIC_NAMES` the report holds.
        """
        if metrics is None:
            held = {name for table in (*self.per_category.values(), self.mean) for name in table}
            metrics = [name for name in METRIC_NAMES if name in held]
        unknown = [name for name in metrics if name not in METRIC_TITLES]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}: choose from {list(METRIC_NAMES)}")
        rows = [*self.per_category.items(), *self.groups.items(),
                *([("total (paper: mean of groups)", self.total)] if self.groups else []),
                ("mean over categories", self.mean)]
        lines = ["| category | " + " | ".join(METRIC_TITLES[name] for name in metrics) + " |",
                 "|---|" + "---:|" * len(metrics)]
        for name, table in rows:
            cells = [percent(table.get(metric, math.nan)) for metric in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def evaluate(
    image_scores: Tensor,
    maps: Tensor | None,
    labels: Tensor,
    masks: Tensor | None,
    has_mask: Tensor | Sequence[bool] | None,
    categories: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    num_thresholds: int | None = DEFAULT_NUM_THRESHOLDS,
    fpr_limit: float = 0.3,
    thresholds: Tensor | None = None,
) -> MetricsReport:
    """All metrics per category, per group of categories and averaged over categories.

    Parameters
    ----------
    image_scores : Tensor of shape (M,)
    maps : Tensor of shape (M, H, W) or None
        Anomaly maps; ``None`` skips the pixel metrics (NaN) silently.
    labels : Tensor of shape (M,)
        1 for anomalous images, 0 for normal ones.
    masks : Tensor of shape (M, H, W) or None
        Ground truth (non-zero = anomalous); rows of images without a mask are ignored.
        ``None`` when no image has one.
    has_mask : Tensor or sequence of M bool, or None
        Whether each image has a ground-truth mask (normal images do: all zeros). Images
        without one are left out of the pixel metrics, with one :class:`MissingMaskWarning`
        that counts them; their image metrics are still computed. ``None``: all have one.
    categories : sequence of M str
        Category of each image.
    groups : mapping of group name to category names, optional
        E.g. ``{"textures": MVTEC_TEXTURES, "objects": MVTEC_OBJECTS}``. A group's value is the
        mean over its categories present in the test set; groups with none present are left
        out.
    num_thresholds : int or None
        Thresholds of the pixel metrics' sweeps (``None`` = exact); see :func:`pixel_auroc`.
    fpr_limit : float
        Integration limit of AUPRO.
    thresholds : Tensor of shape (M,), optional
        Each image's decision threshold (its category's; NaN where there is none), for the
        image F1 (NaN without).

    Returns
    -------
    MetricsReport
    """
    image_scores, labels = _check_image_inputs(image_scores, labels)
    image_scores, labels = image_scores.detach().cpu(), labels.cpu()
    n_images = len(image_scores)
    if thresholds is not None:
        thresholds = torch.as_tensor(thresholds, dtype=torch.float64).cpu()
        if thresholds.shape != (n_images,):
            raise ValueError(f"thresholds must hold one value per image ({n_images}), got {tuple(thresholds.shape)}")
    names, index = category_index(categories, n_images, "categories")
    has_mask = _check_has_mask(has_mask, masks, n_images)
    if maps is not None:
        if masks is not None:
            maps, masks = check_pixel_inputs(maps, masks)
        if len(maps) != n_images:
            raise ValueError(f"maps must hold one map per image score ({n_images}), got {len(maps)}")
        _warn_missing_masks(has_mask, names, index)

    per_category: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        rows = index == k
        table = {"image_auroc": image_auroc(image_scores[rows], labels[rows]),
                 "image_ap": image_ap(image_scores[rows], labels[rows]),
                 "image_f1": math.nan if thresholds is None else image_f1(image_scores[rows], labels[rows],
                                                                          thresholds[rows]),
                 "pixel_auroc": math.nan, "pixel_ap": math.nan, "aupro": math.nan}
        pixel_rows = rows & has_mask
        if maps is not None and bool(pixel_rows.any()):
            pixel_rows = pixel_rows.to(maps.device)
            category_maps, category_masks = maps[pixel_rows], masks[pixel_rows]
            table["pixel_auroc"] = pixel_auroc(category_maps, category_masks,
                                               num_thresholds=num_thresholds)
            table["pixel_ap"] = pixel_ap(category_maps, category_masks, num_thresholds=num_thresholds)
            table["aupro"] = aupro(category_maps, category_masks, fpr_limit, num_thresholds)
        per_category[name] = table

    group_means = {}
    for group, members in (groups or {}).items():
        present = [per_category[name] for name in members if name in per_category]
        if present:
            group_means[group] = _mean_tables(present)
    return MetricsReport(per_category, group_means, _mean_tables(list(per_category.values())))


def check_scores(scores: Tensor, name: str) -> Tensor:
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        raise ValueError(f"{name} must be a 1-D Tensor of shape (M,), got "
                         f"{tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}")
    n_bad = int((~torch.isfinite(scores.double())).sum())
    if n_bad:
        raise ValueError(f"{name} hold {n_bad} NaN or infinite values: check the scorer's input")
    return scores


def _check_image_inputs(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    scores = check_scores(scores, "scores")
    labels = torch.as_tensor(labels, device=scores.device)
    if labels.shape != scores.shape:
        raise ValueError(f"labels must have the shape of scores {tuple(scores.shape)}, "
                         f"got {tuple(labels.shape)}")
    if bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values "
                         f"{sorted(set(labels.unique().tolist()) - {0, 1})}")
    return scores, labels.long()


def _check_has_mask(has_mask, masks: Tensor | None, n_images: int) -> Tensor:
    if masks is None:
        return torch.zeros(n_images, dtype=torch.bool)
    if has_mask is None:
        return torch.ones(n_images, dtype=torch.bool)
    has_mask = torch.as_tensor(has_mask, dtype=torch.bool).cpu().reshape(-1)
    if len(has_mask) != n_images:
        raise ValueError(f"has_mask must hold one flag per image ({n_images}), got {len(has_mask)}")
    return has_mask


def _warn_missing_masks(has_mask: Tensor, names: list[str], index: Tensor) -> None:
    missing = ~has_mask
    n_missing = int(missing.sum())
    if n_missing == 0:
        return
    counts = torch.bincount(index[missing], minlength=len(names)).tolist()
    detail = ", ".join(f"{name}: {count}" for name, count in zip(names, counts) if count)
    warnings.warn(
        f"{n_missing} of {len(has_mask)} test images have no ground-truth mask ({detail}); they "
        "are left out of the pixel metrics (their image metrics are still computed)",
        MissingMaskWarning, stacklevel=3)


def category_index(categories: Sequence[str], n_items: int, name: str) -> tuple[list[str], Tensor]:
    """Distinct categories in order of first appearance, and each item's position among them."""
    categories = list(categories)
    if len(categories) != n_items:
        raise ValueError(f"{name} must name the category of each of the {n_items} scores, "
                         f"got {len(categories)} names")
    position = {category: k for k, category in enumerate(dict.fromkeys(categories))}
    return list(position), torch.tensor([position[c] for c in categories], dtype=torch.long)


def _single_class(labels: Tensor) -> bool:
    n_positive = int(labels.sum())
    return n_positive == 0 or n_positive == labels.numel()


def _unit_interval(scores: Tensor) -> Tensor:
    """Scores min-max scaled to [0, 1] in float64: same order and ties, never a sigmoid."""
    scores = scores.to(torch.float64)
    low, high = torch.aminmax(scores)
    if high > low:
        return (scores - low) / (high - low)
    return torch.zeros_like(scores)


def _mean_tables(tables: list[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric the tables hold, skipping NaN (NaN only when all are)."""
    held = [name for name in METRIC_NAMES if any(name in table for table in tables)]
    return {metric: nanmean([table.get(metric, math.nan) for table in tables]) for metric in held}


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN when all are (or there are none)."""
    kept = [value for value in values if not math.isnan(value)]
    return sum(kept) / len(kept) if kept else math.nan


def percent(value: float) -> str:
    """0.9871 → ``"98.7"`` (the paper's one decimal); NaN → ``"n/a"``."""
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"
