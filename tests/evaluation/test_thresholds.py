"""Decision thresholds: training quantiles, F1-optimal thresholds against a brute force, F1 and
the normalisation that puts the threshold at 0.5."""
import math

import pytest
import torch

from gpuksvd.evaluation import (
    crossfit_folds,
    decide,
    f1_optimal_threshold,
    fold_count,
    image_f1,
    normalize_to_threshold,
    per_image,
    quantile_thresholds,
    smallest_fold_complement,
)


def test_quantile_thresholds_per_category():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0])
    thresholds = quantile_thresholds(scores, ["a", "a", "a", "a", "b", "b"], 0.5)
    assert thresholds == {"a": 2.5, "b": 15.0}
    assert quantile_thresholds(scores, ["a"] * 6, 1.0) == {"a": 20.0}
    with pytest.raises(ValueError, match=r"threshold.quantile must be in \(0, 1\]"):
        quantile_thresholds(scores, ["a"] * 6, 0.0)


def brute_force_f1(scores, labels):
    best = (-1.0, None)
    for threshold in sorted(set(scores.tolist()), reverse=True):
        flagged = scores >= threshold
        tp = int((flagged & labels).sum())
        f1 = 2 * tp / (int(flagged.sum()) + int(labels.sum()))
        if f1 > best[0]:
            best = (f1, threshold)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_f1_optimal_threshold_matches_a_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.rand(40, generator=gen) < 0.4
    scores = torch.randn(40, generator=gen) + 1.5 * labels
    scores = torch.round(scores * 4) / 4  # ties
    threshold, f1 = f1_optimal_threshold(scores, labels)
    expected_f1, expected_threshold = brute_force_f1(scores, labels)
    assert f1 == pytest.approx(expected_f1) and threshold == pytest.approx(expected_threshold)
    assert image_f1(scores, labels.long(), torch.full((40,), threshold, dtype=torch.float64)) == pytest.approx(f1)
    with pytest.raises(ValueError, match="needs anomalous images"):
        f1_optimal_threshold(scores, torch.zeros(40, dtype=torch.bool))


def test_decisions_missing_thresholds_and_normalisation():
    thresholds = per_image(["a", "b", "c"], {"a": 2.0, "b": 10.0})
    assert math.isnan(float(thresholds[2]))
    scores = torch.tensor([2.0, 9.0, 5.0])
    assert decide(scores, thresholds).tolist() == [True, False, False]
    assert math.isnan(image_f1(scores, torch.tensor([1, 0, 1]), thresholds))
    # the lowest training score maps to 0, the threshold to 0.5, as far above it to 1 (and beyond: clipped)
    thresholds = per_image(["a", "b", "a", "a"], {"a": 2.0, "b": 10.0})
    lows = per_image(["a", "b", "a", "a"], {"a": 1.0, "b": 8.0})
    normalized = normalize_to_threshold(torch.tensor([1.0, 10.0, 3.0, 100.0]), thresholds, lows)
    assert normalized.tolist() == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_crossfit_folds_spread_every_category_over_balanced_folds(n_folds):
    categories = ["a"] * 17 + ["b"] * 4 + ["c"] * 9 + ["d"]
    folds = crossfit_folds(categories, n_folds, seed=3)
    assert folds.dtype == torch.int64 and set(folds.tolist()) == set(range(n_folds))
    sizes = torch.bincount(folds, minlength=n_folds)
    assert int(sizes.max() - sizes.min()) <= 1
    assert len(categories) - int(sizes.max()) == smallest_fold_complement(len(categories), n_folds)
    for name in "abc":
        counts = torch.bincount(folds[[c == name for c in categories]], minlength=n_folds)
        assert int(counts.max() - counts.min()) <= 1, (name, counts)
    assert torch.equal(folds, crossfit_folds(categories, n_folds, seed=3))
    assert not torch.equal(folds, crossfit_folds(categories, n_folds, seed=4))


def test_crossfit_folds_refuse_what_cannot_be_split():
    with pytest.raises(ValueError, match="threshold.folds must be an integer ≥ 2"):
        crossfit_folds(["a"] * 10, 1)
    with pytest.raises(ValueError, match="3 training images cannot be split into 4 folds"):
        crossfit_folds(["a"] * 3, 4)


def test_fold_count_is_the_fewest_folds_whose_fits_keep_the_atoms():
    assert fold_count(300, 112) == 2          # the default run: 150 images per fit
    assert fold_count(24, 16) == 3            # 16 of 24
    assert fold_count(60, 48) == 5            # a 60-image category with 48 atoms: 48 of 60
    assert fold_count(50, 48) == 11           # none of 2 … 10 keeps 48: refused by the size check
