"""Decision thresholds: training quantiles, F1-optimal thresholds against a brute force, F1 and
the normalisation that puts the threshold at 0.5."""
import math

import pytest
import torch

from gpuksvd.evaluation import (
    decide,
    f1_optimal_threshold,
    image_f1,
    normalize_to_threshold,
    per_image,
    quantile_thresholds,
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
