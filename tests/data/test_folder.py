"""Listing the folder dataset: counts per split, labels, mask pairing, and actionable errors."""
from __future__ import annotations

import pytest

from gpuksvd.data import ANOMALOUS, NORMAL, list_folder
from tests.support.data_trees import make_folder_tree


def count(records, **fields):
    return sum(all(getattr(r, k) == v for k, v in fields.items()) for r in records)


def test_folder_listing(tmp_path):
    root = make_folder_tree(tmp_path, n_train=6, n_test_normal=2, n_test_anomalous=3, missing_masks=1)
    records = list_folder(root / "train", test_normal_dir=root / "test_normal",
                          test_anomalous_dir=root / "test_anomalous", mask_dir=root / "masks", category="parts")
    assert count(records, split="train") == 6 and count(records, split="test", label=NORMAL) == 2
    anomalous = [r for r in records if r.label == ANOMALOUS]
    assert [r.mask_path.name if r.mask_path else None for r in anomalous] == [None, "bad1_mask.png", "bad2_mask.png"]
    assert {r.category for r in records} == {"parts"}


def test_folder_mask_by_plain_stem_and_split_ratio(tmp_path):
    root = make_folder_tree(tmp_path, n_train=10, mask_suffix="", missing_masks=0)
    records = list_folder(root / "train", test_anomalous_dir=root / "test_anomalous", mask_dir=root / "masks",
                          split_ratio=0.3, seed=1)
    assert count(records, split="train") == 7 and count(records, split="test", label=NORMAL) == 3
    assert all(r.mask_path.name == r.path.name for r in records if r.label == ANOMALOUS)
    with pytest.raises(ValueError, match="either test_normal_dir"):
        list_folder(root / "train", test_normal_dir=root / "test_normal", split_ratio=0.2)


def test_folder_empty_train_dir(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "notes.txt").write_text("x")
    with pytest.raises(ValueError) as info:
        list_folder(tmp_path / "train")
    assert str(tmp_path / "train") in str(info.value) and "holds no image files" in str(info.value)
