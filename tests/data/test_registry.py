"""Listing the registry of datasets by name: counts per split, labels, mask pairing, and actionable errors."""
from __future__ import annotations

import pytest

from gpuksvd.data import ANOMALOUS, list_dataset, list_mtd, list_mvtec
from tests.support.data_trees import make_folder_tree, make_mtd_tree, make_mvtec_tree


def count(records, **fields):
    return sum(all(getattr(r, k) == v for k, v in fields.items()) for r in records)


def test_registry_dispatch_and_errors(tmp_path):
    mvtec = make_mvtec_tree(tmp_path / "mvtec", categories=("bottle", "grid"))
    assert list_dataset("rd_mvtec", mvtec, ["grid"]) == list_mvtec(mvtec, ["grid"])
    mtd = make_mtd_tree(tmp_path / "mtd", n_free=10, n_per_defect=1)
    assert list_dataset("mtd", mtd, seed=2, test_fraction=0.3) == list_mtd(mtd, seed=2, test_fraction=0.3)
    assert list_dataset("mtd", mtd, ["magnetic_tile"]) == list_mtd(mtd)
    with pytest.raises(ValueError, match=r"no category 'tile'.*magnetic_tile"):
        list_dataset("mtd", mtd, ["tile"])
    valid = "generated, mvtec, rd_mvtec, btad, mtd, ksdd, folder"
    with pytest.raises(ValueError, match=rf"unknown dataset 'mvtek'.*{valid}"):
        list_dataset("mvtek", mvtec)
    with pytest.raises(ValueError, match=r"no option test_fraction.*none"):
        list_dataset("mvtec", mvtec, test_fraction=0.2)


def test_registry_folder_relative_to_root(tmp_path):
    root = make_folder_tree(tmp_path)
    records = list_dataset("folder", root, train_dir="train", test_anomalous_dir="test_anomalous", mask_dir="masks")
    assert count(records, split="train") == 6 and count(records, label=ANOMALOUS) == 3
    with pytest.raises(ValueError, match="dataset.train_dir="):
        list_dataset("folder", root)


def test_a_wrong_generated_category_is_called_a_generated_category():
    with pytest.raises(ValueError, match=r"the generated dataset has no category 'bottle'; it has: brick, grass"):
        list_dataset("generated", None, ["bottle"])
