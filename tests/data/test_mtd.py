"""Listing Magnetic Tile Defects: counts per split, labels, mask pairing, and actionable errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from gpuksvd.data import ANOMALOUS, NORMAL, list_mtd
from tests.support.data_trees import make_mtd_tree


def count(records, **fields):
    return sum(all(getattr(r, k) == v for k, v in fields.items()) for r in records)


def test_mtd_split_and_labels(tmp_path):
    root = make_mtd_tree(tmp_path, n_free=20, n_per_defect=2)
    records = list_mtd(root, seed=0, test_fraction=0.2)
    assert count(records, split="train", label=NORMAL) == 16
    assert count(records, split="test", label=NORMAL) == 4
    anomalous = [r for r in records if r.label == ANOMALOUS]
    assert len(anomalous) == 10 and all(r.split == "test" for r in anomalous)
    assert {r.defect_type for r in anomalous} == {"blowhole", "break", "crack", "fray", "uneven"}
    assert all(r.path.suffix == ".jpg" and r.mask_path == r.path.with_suffix(".png") for r in anomalous)
    # the defect image with an empty mask is still anomalous and keeps its mask
    empty = [r for r in anomalous if not np.asarray(Image.open(r.mask_path)).any()]
    assert len(empty) == 1 and empty[0].defect_type == "blowhole"
    assert all(r.category == "magnetic_tile" for r in records)


def test_mtd_split_is_seeded(tmp_path):
    root = make_mtd_tree(tmp_path, n_free=30, n_per_defect=1)

    def tested(seed):
        return {r.path.name for r in list_mtd(root, seed=seed) if r.split == "test" and r.label == NORMAL}

    assert tested(3) == tested(3)
    assert tested(3) != tested(4)
    assert len(tested(3)) == 6  # 20 % of 30
    assert len([r for r in list_mtd(root, test_fraction=0.5) if r.split == "test" and r.label == NORMAL]) == 15


def test_mtd_missing_free_folder(tmp_path):
    root = make_mtd_tree(tmp_path, n_free=4, n_per_defect=1)
    shutil.rmtree(root / "MT_Free")
    with pytest.raises(FileNotFoundError) as info:
        list_mtd(root)
    assert str(root / "MT_Free" / "Imgs") in str(info.value) and "MT_Blowhole/Imgs" in str(info.value)
