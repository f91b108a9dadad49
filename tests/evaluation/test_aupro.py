"""AUPRO and the threshold sweeps it shares with pixel AUROC, against hand-computed values and a slow loop."""
from __future__ import annotations

import pytest
import torch

from gpuksvd.evaluation.aupro import aupro, binning_error_bound, label_regions, tail_sums
from tests.support.maps import random_maps, slow_aupro


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


@pytest.mark.parametrize("levels", [None, 5])
def test_aupro_matches_slow_reference(levels):
    maps, masks = random_maps(5, levels=levels)
    for fpr_limit in (0.3, 0.05):
        expected = slow_aupro(maps.numpy(), masks.numpy(), fpr_limit)
        assert aupro(maps, masks, fpr_limit, None) == pytest.approx(expected, abs=1e-9)
        assert aupro(maps, masks, fpr_limit, 2000) == pytest.approx(expected, abs=2e-3)


# ------------------------------------------------------------------ evaluate and the report
