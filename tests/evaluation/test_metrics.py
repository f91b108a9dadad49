"""Metrics against independent references: scikit-learn, a hand-computed AUPRO, a slow loop."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from gpuksvd.evaluation.aupro import BINNING_TOLERANCE, DEFAULT_NUM_THRESHOLDS, aupro
from gpuksvd.evaluation.metrics import (
    MetricsReport,
    MissingMaskWarning,
    evaluate,
    image_ap,
    image_auroc,
    nanmean,
    percent,
    pixel_ap,
    pixel_auroc,
)
from tests.support.maps import random_maps, slow_aupro


# ------------------------------------------------------------------ image metrics vs sklearn

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ties", [False, True])
def test_image_metrics_match_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    labels = (rng.random(300) < 0.3).astype(np.int64)
    scores = rng.normal(size=300) + labels * 0.8
    if ties:
        scores = np.round(scores * 2)  # ~10 distinct values: heavy ties across the classes
    # Mahalanobis-sized scores: torchmetrics would sigmoid (and saturate) them unscaled.
    scores = 40.0 + 5.0 * scores
    s, y = torch.from_numpy(scores.astype(np.float32)), torch.from_numpy(labels)
    assert image_auroc(s, y) == pytest.approx(roc_auc_score(labels, s.numpy()), abs=1e-6)
    assert image_ap(s, y) == pytest.approx(average_precision_score(labels, s.numpy()), abs=1e-6)


def test_large_scores_are_not_squashed_by_a_sigmoid():
    scores = torch.tensor([20.0, 30.0, 40.0, 50.0])  # sigmoid in float32 ties all of them at 1.0
    labels = torch.tensor([0, 1, 0, 1])
    assert image_auroc(scores, labels) == pytest.approx(0.75)
    as_map = pixel_auroc(scores.reshape(1, 2, 2), labels.reshape(1, 2, 2), num_thresholds=None)
    assert as_map == pytest.approx(0.75)


def test_single_class_gives_nan_without_warnings():
    scores = torch.rand(10)
    maps, masks = torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(image_auroc(scores, torch.zeros(10, dtype=torch.long)))
        assert math.isnan(image_ap(scores, torch.ones(10, dtype=torch.long)))
        assert math.isnan(pixel_auroc(maps, masks))
        assert math.isnan(aupro(maps, masks))
        assert math.isnan(aupro(maps, ~masks))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="0 .normal. or 1"):
        image_auroc(torch.rand(4), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_auroc(torch.tensor([0.0, math.nan]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(torch.rand(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="num_thresholds"):
        pixel_auroc(torch.rand(2, 4, 4), torch.rand(2, 4, 4) > 0.5, num_thresholds=1)


# ------------------------------------------------------------------ pixel AUROC

def test_pixel_auroc_matches_sklearn():
    maps, masks = random_maps(3)
    expected = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    assert pixel_auroc(maps, masks, num_thresholds=None) == pytest.approx(expected, abs=1e-6)
    # Continuous scores, each in a cell of its own: the binned curve (float64) is exact.
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    # Tied scores across the classes: the bound exceeds the tolerance, the exact value is used.
    maps, masks = random_maps(3, levels=6)
    expected = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("outlier", [False, True])
def test_binned_pixel_metrics_stay_within_tolerance(outlier):
    # An extreme outlier squeezes every other score into a few cells: the fallback must catch it.
    maps, masks = random_maps(4, n_images=8, size=24)
    if outlier:
        maps[7, 0, 0] = 1e7
    expected_auroc = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    expected_aupro = slow_aupro(maps.numpy(), masks.numpy(), 0.3)
    for num_thresholds in (30, 1000, DEFAULT_NUM_THRESHOLDS):
        auroc_error = abs(pixel_auroc(maps, masks, num_thresholds=num_thresholds) - expected_auroc)
        aupro_error = abs(aupro(maps, masks, 0.3, num_thresholds) - expected_aupro)
        assert auroc_error <= BINNING_TOLERANCE and aupro_error <= BINNING_TOLERANCE, (
            f"{num_thresholds} thresholds: errors {auroc_error:.1e}, {aupro_error:.1e}")


def _toy_test_set():
    """Three categories; 'c' has no anomalies; two anomalous images of 'a' lack masks."""
    rng = np.random.default_rng(7)
    categories = ["a"] * 8 + ["b"] * 6 + ["c"] * 4
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1] + [0, 0, 0, 1, 1, 1] + [0] * 4)
    scores = torch.from_numpy(rng.normal(size=18).astype(np.float32)) + labels
    masks = torch.zeros(18, 8, 8, dtype=torch.bool)
    masks[labels.bool(), 2:5, 3:6] = True
    maps = torch.from_numpy(rng.normal(size=(18, 8, 8)).astype(np.float32)) + 2 * masks
    has_mask = torch.ones(18, dtype=torch.bool)
    has_mask[[6, 7]] = False
    return scores, maps, labels, masks, has_mask, categories


def test_evaluate_per_category_groups_and_mean():
    scores, maps, labels, masks, has_mask, categories = _toy_test_set()
    groups = {"ab": ["a", "b"], "bc": ["b", "c", "absent"], "nothing": ["absent"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate(scores, maps, labels, masks, has_mask, categories, groups, num_thresholds=None)
    missing = [w for w in caught if issubclass(w.category, MissingMaskWarning)]
    assert len(missing) == 1
    assert "2 of 18" in str(missing[0].message) and "a: 2" in str(missing[0].message)

    assert list(report.per_category) == ["a", "b", "c"]
    a = report.per_category["a"]
    assert a["image_auroc"] == pytest.approx(roc_auc_score(labels[:8], scores[:8]), abs=1e-6)
    pixel_a = slice(0, 6)  # images 6 and 7 have no mask
    assert a["pixel_auroc"] == pytest.approx(
        roc_auc_score(masks[pixel_a].ravel(), maps[pixel_a].ravel()), abs=1e-6)
    assert a["aupro"] == pytest.approx(
        slow_aupro(maps[pixel_a].numpy(), masks[pixel_a].numpy(), 0.3), abs=1e-9)
    c = report.per_category["c"]
    assert all(math.isnan(c[m]) for m in ("image_auroc", "image_ap", "pixel_auroc", "aupro"))

    b = report.per_category["b"]
    assert report.groups["ab"]["image_ap"] == pytest.approx((a["image_ap"] + b["image_ap"]) / 2)
    assert report.groups["bc"]["pixel_auroc"] == pytest.approx(b["pixel_auroc"])  # NaN of c skipped
    assert "nothing" not in report.groups
    assert report.mean["image_auroc"] == pytest.approx((a["image_auroc"] + b["image_auroc"]) / 2)
    assert report.main_metric == report.mean["image_auroc"]


def test_evaluate_without_maps_or_masks():
    scores, maps, labels, _, _, categories = _toy_test_set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate(scores, None, labels, None, None, categories)
    assert math.isnan(report.mean["aupro"]) and not math.isnan(report.mean["image_auroc"])
    with pytest.warns(MissingMaskWarning, match="18 of 18"):
        evaluate(scores, maps, labels, None, None, categories)


def test_report_dict_and_markdown():
    table = {"image_auroc": 0.98712, "image_ap": 0.5, "pixel_auroc": math.nan, "aupro": 0.9}
    report = MetricsReport(per_category={"carpet": table}, groups={"textures": dict(table)}, mean=dict(table))
    as_dict = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert as_dict["mean"]["pixel_auroc"] is None and as_dict["main_metric"] == pytest.approx(0.98712)
    restored = MetricsReport.from_dict(as_dict)
    assert math.isnan(restored.groups["textures"].pop("pixel_auroc"))
    assert restored.groups["textures"] == {"image_auroc": 0.98712, "image_ap": 0.5, "aupro": 0.9}
    lines = report.to_markdown().splitlines()
    assert lines[0] == "| category | Image AUROC | Image AP | Pixel AUROC | AUPRO |"
    assert lines[2] == "| carpet | 98.7 | 50.0 | n/a | 90.0 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| carpet", "| textures", "| total (paper: mean of groups)", "| mean over categories"]


def test_nan_aware_helpers():
    assert nanmean([0.5, math.nan, 1.0]) == 0.75 and math.isnan(nanmean([math.nan])) and math.isnan(nanmean([]))
    assert percent(0.98712) == "98.7" and percent(math.nan) == "n/a"


def test_the_papers_total_is_the_mean_of_the_group_means():
    # Table 1, layer 3: textures 0.9486 and objects 0.9134 give the paper's Total 0.931, while the
    # mean over the 15 categories (5 textures, 10 objects) is 0.925.
    textures = {f"t{i}": {"image_auroc": 0.9486} for i in range(5)}
    objects = {f"o{i}": {"image_auroc": 0.9134} for i in range(10)}
    report = MetricsReport({**textures, **objects}, groups={"textures": {"image_auroc": 0.9486},
                                                            "objects": {"image_auroc": 0.9134}},
                           mean={"image_auroc": (5 * 0.9486 + 10 * 0.9134) / 15})
    assert round(report.total["image_auroc"], 3) == 0.931 and round(report.mean["image_auroc"], 3) == 0.925
    assert report.to_dict()["total"]["image_auroc"] == pytest.approx(0.931)
    without_groups = MetricsReport({"01": {"image_auroc": 0.8}}, mean={"image_auroc": 0.8})
    assert without_groups.total == without_groups.mean


@pytest.mark.parametrize("levels", [None, 5])
def test_pixel_ap_matches_sklearn(levels):
    maps, masks = random_maps(6, n_images=8, size=24, levels=levels)  # levels: heavy ties
    expected = average_precision_score(masks.numpy().ravel(), maps.numpy().ravel())
    for num_thresholds in (None, 1000, DEFAULT_NUM_THRESHOLDS):
        assert pixel_ap(maps, masks, num_thresholds=num_thresholds) == pytest.approx(expected, abs=BINNING_TOLERANCE)
    maps[0, 0, 0] = 1e7  # an outlier squeezes every other score into one cell: the exact sweep takes over
    expected = average_precision_score(masks.numpy().ravel(), maps.numpy().ravel())
    assert pixel_ap(maps, masks, num_thresholds=30) == pytest.approx(expected, abs=1e-9)
    assert math.isnan(pixel_ap(maps, torch.zeros_like(masks)))
