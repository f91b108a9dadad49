"""Per-category score normalisation: ``none``, ``minmax`` (the paper's) or ``train`` (leak-free).

One model covers every category of a dataset, but categories differ in how far their normal
images score from zero; a threshold or an image metric pooled over categories needs them on
one scale. The rule is chosen by name (:data:`NORMALIZATIONS`) and applied by
:func:`normalize_scores`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .metrics import category_index, check_scores

NORMALIZATIONS = ("none", "minmax", "train")


def check_normalization(method: str) -> None:
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {method!r}")


def normalize_scores(
    scores: Tensor,
    categories: Sequence[str],
    *,
    method: str,
    train_scores: Tensor | None = None,
    train_categories: Sequence[str] | None = None,
) -> Tensor:
    """Make image scores comparable across categories.

    Parameters
    ----------
    scores : Tensor of shape (M,)
        Test image scores.
    categories : sequence of M str
        Category of each test image.
    method : {"none", "minmax", "train"}
        ``"none"``: the scores as they are. ``"minmax"``: the paper's per-category min-max over
        the *test* scores of each category, mapping them to [0, 1] (a constant category maps to 0). It uses the test set's own
        extremes, so it leaks test information into the scores. ``"train"``: leak-free, each
        score standardised by the mean and standard deviation (n − 1) of its category's
        *training* scores, so that normal images land near 0 in units of the normal spread;
        mean/std rather than min/max so that one extreme training image does not set the scale.
        Training images are in-sample for the model, so their spread is slightly optimistic.
    train_scores : Tensor of shape (N,), optional
        Scores of the training images; required by ``"train"``.
    train_categories : sequence of N str, optional
        Category of each training image; required by ``"train"``.

    Returns
    -------
    Tensor of shape (M,)
        Normalised scores, in the dtype of ``scores`` (float32 for integer scores).
    """
    check_normalization(method)
    scores = check_scores(scores, "scores")
    if method == "none":
        return scores
    names, index = category_index(categories, len(scores), "categories")
    values = scores.detach().to(device="cpu", dtype=torch.float64)
    n_names = len(names)
    if method == "minmax":
        low = torch.full((n_names,), math.inf, dtype=torch.float64).scatter_reduce(
            0, index, values, "amin")
        high = torch.full((n_names,), -math.inf, dtype=torch.float64).scatter_reduce(
            0, index, values, "amax")
        span = high - low
        normalised = (values - low[index]) / torch.where(span > 0, span, 1.0)[index]
    elif method == "train":
        center, scale = _train_statistics(names, train_scores, train_categories)
        normalised = (values - center[index]) / scale[index]
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    return normalised.to(device=scores.device, dtype=dtype)


def _train_statistics(names: list[str], train_scores: Tensor | None,
                      train_categories: Sequence[str] | None) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (n − 1) of the training scores of each category in names."""
    if train_scores is None or train_categories is None:
        raise ValueError("method='train' needs train_scores and train_categories (the scores of "
                         "the training images and their categories); or use method='minmax'")
    train_scores = check_scores(train_scores, "train_scores")
    train_names, train_index = category_index(train_categories, len(train_scores), "train_categories")
    missing = [name for name in names if name not in train_names]
    if missing:
        raise ValueError(f"no training scores for categories {missing} (training scores cover "
                         f"{train_names}): pass the training scores of every test category")
    values = train_scores.detach().to(device="cpu", dtype=torch.float64)
    n_train = len(train_names)
    count = torch.bincount(train_index, minlength=n_train).to(torch.float64)
    mean = torch.zeros(n_train, dtype=torch.float64).index_add_(0, train_index, values) / count
    squares = (values - mean[train_index]) ** 2
    variance = torch.zeros(n_train, dtype=torch.float64).index_add_(0, train_index, squares) / (count - 1)
    order = torch.tensor([train_names.index(name) for name in names], dtype=torch.long)
    mean, std, count = mean[order], variance[order].sqrt(), count[order]
    degenerate = [name for name, n, s in zip(names, count.tolist(), std.tolist()) if n < 2 or not s > 0]
    if degenerate:
        raise ValueError(f"the training scores of categories {degenerate} have fewer than 2 values "
                         "or zero spread, so they cannot standardise: use method='minmax'")
    return mean, std
