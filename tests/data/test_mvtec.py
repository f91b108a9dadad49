"""Listing MVTec AD (and Rd-MVTec): counts per split, labels, mask pairing, and actionable errors."""
from __future__ import annotations

import pytest

from gpuksvd.data import ANOMALOUS, NORMAL, category_groups, list_mvtec
from tests.support.data_trees import make_mvtec_tree


def count(records, **fields):
    return sum(all(getattr(r, k) == v for k, v in fields.items()) for r in records)


def test_mvtec_counts_labels_and_mask_pairing(tmp_path):
    root = make_mvtec_tree(tmp_path, categories=("bottle", "grid"), n_train=4, n_test_good=2,
                           defects=("crack", "scratch"), n_per_defect=2)
    records = list_mvtec(root)
    assert [c for c in dict.fromkeys(r.category for r in records)] == ["bottle", "grid"]
    for category in ("bottle", "grid"):
        assert count(records, category=category, split="train", label=NORMAL) == 4
        assert count(records, category=category, split="test", label=NORMAL) == 2
        assert count(records, category=category, split="test", label=ANOMALOUS) == 4
        assert count(records, category=category, split="train", label=ANOMALOUS) == 0
    for r in records:
        assert r.path.suffix == ".png"  # readme.txt, Thumbs.db, .DS_Store ignored
        if r.label == ANOMALOUS:
            assert r.mask_path == root / r.category / "ground_truth" / r.defect_type / f"{r.path.stem}_mask.png"
            assert r.path.parent.name == r.defect_type
        else:
            assert r.mask_path is None and r.defect_type == "good"
    assert len(records) == 20


def test_mvtec_categories_subset_order_and_missing_mask(tmp_path):
    root = make_mvtec_tree(tmp_path, categories=("bottle", "grid", "screw"), missing_masks=1)
    records = list_mvtec(root, ["screw", "bottle"])
    assert list(dict.fromkeys(r.category for r in records)) == ["screw", "bottle"]
    assert sum(r.mask_path is None and r.label == ANOMALOUS for r in records) == 1
    assert [r for r in list_mvtec(root, "grid")][0].category == "grid"  # a single name is fine


def test_mvtec_missing_root_and_category_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        list_mvtec(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and "ground_truth/<defect>" in str(info.value)
    with pytest.raises(ValueError, match=r"dataset.root=/path/to/mvtec_anomaly_detection"):
        list_mvtec(None)
    root = make_mvtec_tree(tmp_path / "mvtec", categories=("bottle",))
    with pytest.raises(FileNotFoundError) as info:
        list_mvtec(root, ["bottle", "carpet"])
    message = str(info.value)
    assert str(root / "carpet") in message and "Categories under" in message and "bottle" in message
    with pytest.raises(FileNotFoundError, match="no category folder"):
        list_mvtec(tmp_path / "mvtec" / "bottle" / "test")  # a folder without category folders


def test_mvtec_empty_train_folder(tmp_path):
    root = make_mvtec_tree(tmp_path, categories=("bottle",))
    for path in (root / "bottle" / "train" / "good").glob("*.png"):
        path.unlink()
    with pytest.raises(ValueError) as info:
        list_mvtec(root)
    assert str(root / "bottle" / "train" / "good") in str(info.value) and "holds no image files" in str(info.value)


def test_mvtec_groups():
    assert category_groups("mvtec", ["bottle", "grid", "carpet", "zipper"]) == {
        "textures": ["grid", "carpet"], "objects": ["bottle", "zipper"]}
    assert category_groups("rd_mvtec", ["bottle"]) == {"objects": ["bottle"]}
    assert category_groups("btad", ["01", "02"]) == {}
