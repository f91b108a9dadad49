"""Listing functions: counts per split, labels, mask pairing, splits, and actionable errors."""
from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from data_trees import make_btad_tree, make_folder_tree, make_ksdd_tree, make_mtd_tree, make_mvtec_tree
from gpuksvd.data import (
    ANOMALOUS,
    NORMAL,
    category_groups,
    list_btad,
    list_dataset,
    list_folder,
    list_ksdd,
    list_mtd,
    list_mvtec,
)


def count(records, **fields):
    return sum(all(getattr(r, k) == v for k, v in fields.items()) for r in records)


# ------------------------------------------------------------------------------------ MVTec AD


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


# ------------------------------------------------------------------------------------ BTAD


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


# ------------------------------------------------------------------------------------ MTD


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


# ------------------------------------------------------------------------------------ KSDD


def test_ksdd_labels_from_masks(tmp_path):
    root = make_ksdd_tree(tmp_path)  # 6 folders x 4 parts, kos05 copies kos01
    records = list_ksdd(root, seed=0)
    assert len(records) == 24
    defective = sorted(f"{r.path.parent.name}/{r.path.name}" for r in records if r.label == ANOMALOUS)
    # 0/1 masks and a 0/255 mask are all read as defective; the copy of kos01 too
    assert defective == ["kos01/Part2.jpg", "kos03/Part0.jpg", "kos04/Part1.jpg", "kos05/Part2.jpg"]
    assert all(r.split == "test" and r.mask_path.name == r.path.stem + "_label.bmp"
               for r in records if r.label == ANOMALOUS)
    assert all(r.mask_path is None for r in records if r.label == NORMAL)


def test_ksdd_split_proportion_and_duplicates(tmp_path):
    root = make_ksdd_tree(tmp_path, n_folders=10, n_parts=8, duplicates=((1, 9), (2, 10)))
    for seed in range(8):
        records = list_ksdd(root, seed=seed, test_fraction=0.25)
        normal = [r for r in records if r.label == NORMAL]
        n_test = sum(r.split == "test" for r in normal)
        assert abs(n_test - 0.25 * len(normal)) <= 1  # duplicate pairs make it approximate
        side = {f"{r.path.parent.name}/{r.path.name}": r.split for r in normal}
        for source, copy in (("kos01", "kos09"), ("kos02", "kos10")):
            for part in range(8):
                if f"{source}/Part{part}.jpg" in side:
                    assert side[f"{source}/Part{part}.jpg"] == side[f"{copy}/Part{part}.jpg"]
    # without the option, some seed separates a duplicate pair
    separated = False
    for seed in range(8):
        side = {f"{r.path.parent.name}/{r.path.name}": r.split
                for r in list_ksdd(root, seed=seed, keep_duplicates_together=False) if r.label == NORMAL}
        separated |= any(side[f"kos01/Part{p}.jpg"] != side[f"kos09/Part{p}.jpg"] for p in (0, 1, 3, 4, 5, 6, 7))
        n_test = sum(s == "test" for s in side.values())
        assert n_test == round(0.25 * len(side))
    assert separated


def test_ksdd_missing_label(tmp_path):
    root = make_ksdd_tree(tmp_path, n_folders=2, duplicates=())
    (root / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(ValueError, match=r"kos02.Part1\.jpg has no mask .*Part1_label\.bmp"):
        list_ksdd(root)


# ------------------------------------------------------------------------------------ folder


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


# ------------------------------------------------------------------------------------ registry


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
