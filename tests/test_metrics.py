"""Metrics against independent references: scikit-learn, a hand-computed AUPRO, a slow loop."""
from __future__ import annotations

import json
import math
import warnings
from bisect import bisect_right

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from gpuksvd.aupro import (
    BINNING_TOLERANCE,
    DEFAULT_NUM_THRESHOLDS,
    aupro,
    binning_error_bound,
    label_regions,
    tail_sums,
)
from gpuksvd.metrics import (
    MetricsReport,
    MissingMaskWarning,
    evaluate,
    image_ap,
    image_auroc,
    normalize_per_category,
    pixel_auroc,
)


def _random_maps(seed: int, n_images: int = 6, size: int = 16, levels: int | None = None):
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
    maps, masks = _random_maps(3)
    expected = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    assert pixel_auroc(maps, masks, num_thresholds=None) == pytest.approx(expected, abs=1e-6)
    # Continuous scores, each in a cell of its own: the binned curve (float64) is exact.
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    # Tied scores across the classes: the bound exceeds the tolerance, the exact value is used.
    maps, masks = _random_maps(3, levels=6)
    expected = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("outlier", [False, True])
def test_binned_pixel_metrics_stay_within_tolerance(outlier):
    # An extreme outlier squeezes every other score into a few cells: the fallback must catch it.
    maps, masks = _random_maps(4, n_images=8, size=24)
    if outlier:
        maps[7, 0, 0] = 1e7
    expected_auroc = roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel())
    expected_aupro = _slow_aupro(maps.numpy(), masks.numpy(), 0.3)
    for num_thresholds in (30, 1000, DEFAULT_NUM_THRESHOLDS):
        auroc_error = abs(pixel_auroc(maps, masks, num_thresholds=num_thresholds) - expected_auroc)
        aupro_error = abs(aupro(maps, masks, 0.3, num_thresholds) - expected_aupro)
        assert auroc_error <= BINNING_TOLERANCE and aupro_error <= BINNING_TOLERANCE, (
            f"{num_thresholds} thresholds: errors {auroc_error:.1e}, {aupro_error:.1e}")


def test_tail_sums_bins_by_evenly_spaced_thresholds():
    scores = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 0.26])
    labels = torch.tensor([0, 1, 0, 1, 2, 0])
    weights = torch.tensor([-1.0, 10.0, 100.0], dtype=torch.float64)  # [0] unused: negatives count 1
    # Four cells of width 0.25: [0, .25) holds 0.0 and 0.1, [.25, .5) 0.26, [.5, .75) 0.5, and
    # [.75, 1] 0.9 and the maximum.
    tails = tail_sums(scores, labels, 4, weights)
    assert tails.tolist() == [[3.0, 120.0], [2.0, 110.0], [1.0, 110.0], [0.0, 110.0]]
    # Eight cells: 0.26, 0.5 and 0.9 land in cells 2, 4 and 7; the empty cells are dropped.
    assert torch.equal(tail_sums(scores, labels, 8, weights), tails)
    exact = tail_sums(scores, labels, None, weights)
    assert exact.tolist() == [[3, 120], [2, 120], [2, 110], [1, 110], [0, 110], [0, 100]]
    # Cells mix classes twice: [0, .25) (1/3 of negatives, 1/12 of positive weight) and the top.
    assert binning_error_bound(tails) == pytest.approx(0.5 * (1 / 3) * (10 / 120))
    assert binning_error_bound(tails, x_max=0.5) == 0.0  # that cell starts at FPR 2/3 > 0.5
    assert binning_error_bound(exact) == 0.0


# ------------------------------------------------------------------ AUPRO

def _hand_case():
    """Two 2x4 images, four regions (one diagonal), ten normal pixels scoring 0.0 … 0.9."""
    masks = torch.tensor([[[1, 1, 0, 0],
                           [0, 0, 0, 1]],
                          [[1, 0, 0, 1],
                           [0, 1, 0, 0]]], dtype=torch.bool)
    maps = torch.tensor([[[0.95, 0.70, 0.90, 0.70],     # region A = (0.95, 0.70), B = (0.85)
                          [0.50, 0.30, 0.10, 0.85]],
                         [[0.75, 0.80, 0.60, 0.05],     # region C = (0.75, 0.15) diagonal, D = (0.05)
                          [0.40, 0.15, 0.20, 0.00]]])
    return maps, masks


def test_aupro_hand_computed():
    # Descending thresholds give (FPR, PRO): 0.95 → (0, 1/8); 0.9 → (0.1, 1/8); 0.85 → (0.1, 3/8);
    # 0.8 → (0.2, 3/8); 0.75 → (0.2, 1/2); 0.7 → (0.3, 5/8) (a normal pixel and A's second pixel
    # tie); 0.6 … 0.2 → FPR 0.4 … 0.8; 0.15 → (0.8, 3/4); 0.1 → (0.9, 3/4); 0.05 → (0.9, 1);
    # 0.0 → (1, 1).
    maps, masks = _hand_case()
    up_to_03 = 0.1 * 1 / 8 + 0.1 * 3 / 8 + 0.1 * (1 / 2 + 5 / 8) / 2            # 0.10625
    up_to_025 = 0.1 * 1 / 8 + 0.1 * 3 / 8 + 0.05 * (1 / 2 + 9 / 16) / 2         # PRO(0.25) = 9/16
    full = up_to_03 + 0.5 * 5 / 8 + 0.1 * 3 / 4 + 0.1 * 1                       # 0.59375
    for num_thresholds in (None, 1000):  # 15 distinct scores, 1/1000 apart or more: exact
        assert aupro(maps, masks, 0.3, num_thresholds) == pytest.approx(up_to_03 / 0.3, abs=1e-12)
        assert aupro(maps, masks, 0.25, num_thresholds) == pytest.approx(up_to_025 / 0.25, abs=1e-12)
        assert aupro(maps, masks, 1.0, num_thresholds) == pytest.approx(full, abs=1e-12)


def test_regions_are_8_connected_and_never_span_images():
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[0, 2, :] = True                  # bottom row of image 0 …
    masks[1, 0, :] = True                  # … above the top row of image 1: two regions
    masks[1, 2, 0] = masks[0, 0, 2] = True  # isolated pixels: two more
    masks[1, 1, 1] = True                  # joins (1, 0, ·) and (1, 2, 0) diagonally into one
    regions, n_regions = label_regions(masks)
    assert n_regions == 3
    assert len(regions[0][masks[0]].unique()) == 2 and len(regions[1][masks[1]].unique()) == 1
    assert not set(regions[0].unique().tolist()) & set(regions[1].unique().tolist()) - {0}


def _slow_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
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


@pytest.mark.parametrize("levels", [None, 5])
def test_aupro_matches_slow_reference(levels):
    maps, masks = _random_maps(5, levels=levels)
    for fpr_limit in (0.3, 0.05):
        expected = _slow_aupro(maps.numpy(), masks.numpy(), fpr_limit)
        assert aupro(maps, masks, fpr_limit, None) == pytest.approx(expected, abs=1e-9)
        assert aupro(maps, masks, fpr_limit, 2000) == pytest.approx(expected, abs=2e-3)


# ------------------------------------------------------------------ evaluate and the report

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
        _slow_aupro(maps[pixel_a].numpy(), masks[pixel_a].numpy(), 0.3), abs=1e-9)
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
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| carpet", "| textures", "| mean"]


# ------------------------------------------------------------------ normalisation

def test_minmax_normalisation_per_category():
    scores = torch.tensor([1.0, 3.0, 10.0, 20.0, 2.0, 5.0, 5.0])
    categories = ["a", "a", "b", "b", "a", "c", "c"]
    out = normalize_per_category(scores, categories)
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 0.0, 0.0]))


def test_train_normalisation_uses_training_statistics_only():
    scores = torch.tensor([4.0, 100.0, 0.0])
    categories = ["a", "b", "a"]
    train = torch.tensor([1.0, 3.0, 10.0, 30.0, 20.0, 999.0])
    train_categories = ["a", "a", "b", "b", "b", "unused"]
    out = normalize_per_category(scores, categories, method="train",
                                 train_scores=train, train_categories=train_categories)
    std_a, std_b = math.sqrt(2.0), 10.0  # n − 1 standard deviations of (1, 3) and (10, 30, 20)
    assert torch.allclose(out, torch.tensor([(4 - 2) / std_a, (100 - 20) / std_b, (0 - 2) / std_a]))
    with pytest.raises(ValueError, match=r"no training scores for categories \['c'\]"):
        normalize_per_category(torch.rand(2), ["a", "c"], method="train",
                               train_scores=train, train_categories=train_categories)
    with pytest.raises(ValueError, match="needs train_scores"):
        normalize_per_category(scores, categories, method="train")
    with pytest.raises(ValueError, match="fewer than 2 values or zero spread"):
        normalize_per_category(scores, categories, method="train",
                               train_scores=torch.tensor([1.0, 1.0, 2.0]),
                               train_categories=["a", "a", "b"])
