"""Deciding, not only scoring: a per-category threshold on the image score.

A threshold is fixed without test labels when the model is trained — a high quantile of each
category's training scores (:func:`quantile_thresholds`; the training images are normal, so
the quantile is the share of normal images flagged that one accepts on them) — and can be
re-fitted on a labelled validation set as the F1-optimal threshold (:func:`f1_optimal_threshold`,
anomalib's adaptive threshold). :func:`normalize_to_threshold` maps scores so that each
category's threshold lands on 0.5, the convention anomalib users expect.

Which training scores (``threshold.method`` of train.py):

* ``crossfit`` (default): out-of-fold scores. The training images are dealt into folds
  (:func:`crossfit_folds`, every category spread over all folds); each fold is scored by
  dictionaries and Gaussians fitted on the other folds only, so every score is that of an image
  the scoring model never saw, as a new normal part will be. It costs about one more fit.
* ``quantile``: the in-sample scores of the final model. They come from fresh OMP codes of
  images the dictionaries were fitted on and run lower than those of unseen normal images —
  on the generated data low enough that every test image, normal or not, lands above the 0.99
  quantile — so a training quantile flags far more than ``1 − quantile`` of new normal images.

A validation set of the line's own normal and defective parts is better still
(``evaluate.py threshold.validation_root=...``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .metrics import category_index, check_scores

THRESHOLD_METHODS = ("quantile", "f1")

#: How train.py fixes the thresholds: a quantile of out-of-fold (crossfit) or in-sample (quantile)
#: training scores.
TRAINING_THRESHOLDS = ("crossfit", "quantile")


def crossfit_folds(categories: Sequence[str], n_folds: int, seed: int = 0) -> Tensor:
    """The fold (0 … n_folds − 1) of each training image, int64 (N,).

    Each category's images are shuffled (seeded) and the categories, one after another, are dealt
    round robin over the folds: every category is spread over all folds (its images differ in
    number by at most one between folds) and the folds' sizes differ by at most one, so each
    fold's complement holds ``N − ceil(N / n_folds)`` images.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"threshold.folds must be an integer ≥ 2, got {n_folds!r}")
    if len(categories) < n_folds:
        raise ValueError(f"{len(categories)} training images cannot be split into {n_folds} folds")
    names, index = category_index(categories, len(categories), "categories")
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.nonzero(index == k).flatten()[torch.randperm(int((index == k).sum()), generator=generator)]
                       for k in range(len(names))])
    folds = torch.empty(len(categories), dtype=torch.int64)
    folds[order] = torch.arange(len(categories)) % n_folds
    return folds


def smallest_fold_complement(n_train: int, n_folds: int) -> int:
    """Training images of the smallest fit of a crossfit (``N − ceil(N / n_folds)``)."""
    return n_train - math.ceil(n_train / n_folds)


#: The most folds :func:`fold_count` chooses (each fold adds a fit on (k−1)/k of the images).
MAX_AUTO_FOLDS = 10


def fold_count(n_train: int, n_atoms: int) -> int:
    """The fewest folds (2 … :data:`MAX_AUTO_FOLDS`) whose every fit keeps at least ``n_atoms``
    training images (K-SVD's minimum); :data:`MAX_AUTO_FOLDS` + 1 when none does (the caller's
    size check then refuses it with a message)."""
    for n_folds in range(2, MAX_AUTO_FOLDS + 1):
        if n_train >= n_folds and smallest_fold_complement(n_train, n_folds) >= n_atoms:
            return n_folds
    return MAX_AUTO_FOLDS + 1


def quantile_thresholds(scores: Tensor, categories: Sequence[str], quantile: float) -> dict[str, float]:
    """The ``quantile`` of each category's (training) scores.

    Parameters
    ----------
    scores : Tensor of shape (N,)
    categories : sequence of N str
    quantile : float in (0, 1]

    Returns
    -------
    dict
        Category → threshold, in order of first appearance.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"threshold.quantile must be in (0, 1], got {quantile}: e.g. 0.99")
    scores = check_scores(scores, "scores").detach().double().cpu()
    names, index = category_index(categories, len(scores), "categories")
    return {name: float(torch.quantile(scores[index == k], quantile)) for k, name in enumerate(names)}


def f1_optimal_threshold(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """The threshold that maximises F1 on labelled scores (anomalous: ``score ≥ threshold``).

    Every distinct score is a candidate; on ties of F1 the highest threshold wins (fewer alarms).

    Returns
    -------
    threshold : float
    f1 : float
        F1 at that threshold.

    Raises
    ------
    ValueError
        When the labels hold no anomalous image (F1 is undefined then).
    """
    scores = check_scores(scores, "scores").detach().double().cpu()
    labels = torch.as_tensor(labels).cpu().bool()
    n_positive = int(labels.sum())
    if n_positive == 0:
        raise ValueError("an F1-optimal threshold needs anomalous images among the validation images")
    order = scores.argsort(descending=True)
    ordered, hits = scores[order], labels[order].double()
    true_positive = hits.cumsum(0)
    flagged = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # Only the last position of a run of equal scores is a threshold ("≥ score" flags them all).
    last = torch.ones(len(scores), dtype=torch.bool)
    last[:-1] = ordered[:-1] != ordered[1:]
    f1 = 2 * true_positive / (flagged + n_positive)
    f1 = torch.where(last, f1, -1.0)
    best = int(f1.argmax())  # first maximum: the highest threshold among equal F1
    return float(ordered[best]), float(f1[best])


def per_image(categories: Sequence[str], values: Mapping[str, float]) -> Tensor:
    """Each image's category value (e.g. its threshold), NaN for categories without one."""
    return torch.tensor([values.get(category, math.nan) for category in categories], dtype=torch.float64)


def decide(scores: Tensor, thresholds: Tensor) -> Tensor:
    """``True`` (anomalous) where ``score ≥ threshold``; ``False`` where the threshold is NaN."""
    return scores.double().cpu() >= thresholds


def normalize_to_threshold(scores: Tensor, thresholds: Tensor, lows: Tensor) -> Tensor:
    """Scores mapped per image to [0, 1] so that the threshold lands on 0.5.

    ``0.5 + (score − threshold) / (2 (threshold − low))``, clipped to [0, 1]: the category's
    ``low`` (its lowest training score) maps to 0, its threshold to 0.5, scores as far above
    the threshold as ``low`` is below it to 1. NaN where the threshold is unknown.
    """
    span = (thresholds - lows).clamp_min(1e-12)
    return (0.5 + (scores.double().cpu() - thresholds) / (2 * span)).clamp(0, 1)
