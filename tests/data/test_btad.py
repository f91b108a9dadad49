"""Listing BTAD: counts per split, labels, mask pairing, and actionable errors."""
from __future__ import annotations

from collections import Counter

import pytest

from gpuksvd.data import ANOMALOUS, NORMAL, list_btad
from tests.support.data_trees import make_btad_tree


def count(records, **fields):
    return sum(all(getattr(r, k) == v for k, v in fields.items()) for r in records)


def test_btad_both_suffix_pairings(tmp_path):
    root = make_btad_tree(tmp_path, n_train=3, n_test_ok=2, n_test_ko=2)
    records = list_btad(root)
    assert Counter(r.category for r in records) == {"01": 7, "02": 7, "03": 7}
    assert count(records, split="train", label=NORMAL) == 9
    assert count(records, split="test", label=NORMAL) == 6
    anomalous = [r for r in records if r.label == ANOMALOUS]
    assert len(anomalous) == 6 and all(r.defect_type == "ko" and r.split == "test" for r in anomalous)
    pairs = {r.category: (r.path.suffix, r.mask_path.suffix) for r in anomalous}
    assert pairs == {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".png", ".bmp")}
    assert all(r.mask_path.stem == r.path.stem for r in anomalous)


def test_btad_product_as_int_and_missing_product(tmp_path):
    root = make_btad_tree(tmp_path, products=("01", "02"))
    assert {r.category for r in list_btad(root, [1])} == {"01"}
    with pytest.raises(FileNotFoundError, match=r"product '03' not found.*Products under .*01, 02"):
        list_btad(root, ["03"])
