"""build_splits from conf/dataset/*.yaml: every dataset's config, seeds, refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gpuksvd.data import DatasetWarning, build_splits
from tests.support.data_trees import make_btad_tree, make_ksdd_tree, make_mtd_tree, make_mvtec_tree

CONF = Path(__file__).resolve().parents[2] / "conf" / "dataset"
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def load_conf(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)
    cfg.update(overrides)
    return cfg


COMMON_KEYS = ["name", "root", "categories", "resize", "crop", "pre_crop", "random_rotation", "random_crop", "interpolation",
               "train_seed", "test_seed", "split_seed", "test_fraction", "skip_unreadable"]


def test_every_dataset_config_has_the_common_schema():
    names = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert names == ["btad", "folder", "generated", "ksdd", "mtd", "mvtec", "rd_mvtec"]
    for name in names:
        cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
        assert list(cfg)[: len(COMMON_KEYS)] == COMMON_KEYS, name
        assert cfg["name"] == name


def test_build_splits_mvtec_from_env_root(tmp_path, monkeypatch):
    root = make_mvtec_tree(tmp_path, categories=("bottle", "grid", "screw"), missing_masks=2)
    monkeypatch.setenv("MVTEC_ROOT", str(root))
    cfg = load_conf("mvtec", resize=32, crop=24, categories=["grid", "bottle"])
    with pytest.warns(DatasetWarning, match=r"^2 of 8 anomalous test images have no mask"):
        splits = build_splits(cfg, **IDENTITY)
    assert splits.name == "mvtec" and splits.categories == ["grid", "bottle"]
    assert splits.groups == {"textures": ["grid"], "objects": ["bottle"]}
    assert len(splits.train) == 8 and len(splits.test) == 12
    assert splits.train[0]["image"].shape == (3, 24, 24)
    assert all(r.split == "train" for r in splits.train.records)


def test_build_splits_missing_root_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("MVTEC_ROOT", raising=False)
    cfg = load_conf("mvtec")
    assert cfg["root"] is None
    with pytest.raises(ValueError, match=r"dataset.root=/path/to/mvtec_anomaly_detection"):
        build_splits(cfg, **IDENTITY)


def test_rd_mvtec_train_and_test_seeds(tmp_path):
    root = make_mvtec_tree(tmp_path, categories=("bottle",), n_train=3, n_test_good=3, size=40)

    def test_masks(train_seed, test_seed):
        cfg = load_conf("rd_mvtec", root=str(root), resize=40, crop=32, train_seed=train_seed, test_seed=test_seed)
        splits = build_splits(cfg, **IDENTITY)
        assert splits.train.preprocess.seed == train_seed and splits.test.preprocess.seed == test_seed
        return torch.stack([item["mask"] for item in splits.test]), splits.train[0]["image"]

    masks_a, train_a = test_masks(0, 1)
    masks_b, train_b = test_masks(0, 1)
    masks_c, train_c = test_masks(2, 1)
    masks_d, _ = test_masks(0, 3)
    assert torch.equal(masks_a, masks_b) and torch.equal(train_a, train_b)  # reproducible
    assert torch.equal(masks_a, masks_c) and not torch.equal(train_a, train_c)  # train seed: train only
    assert not torch.equal(masks_a, masks_d)  # test seed moves the test images


def test_build_splits_btad_mtd_ksdd_configs(tmp_path):
    btad = build_splits(load_conf("btad", root=str(make_btad_tree(tmp_path / "btad")), resize=24), **IDENTITY)
    assert btad.categories == ["01", "02", "03"] and btad.groups == {}
    assert btad.test[len(btad.test) - 1]["image"].shape == (3, 24, 24)

    mtd = build_splits(load_conf("mtd", root=str(make_mtd_tree(tmp_path / "mtd", n_free=10)), resize=20,
                                 split_seed=4), **IDENTITY)
    assert len(mtd.train) == 8 and len(mtd.test) == 2 + 10
    shapes = {tuple(item["image"].shape) for item in mtd.test}  # images of varying size
    assert shapes == {(3, 20, 20)}

    ksdd_root = make_ksdd_tree(tmp_path / "ksdd", shape=(48, 20))
    cfg = load_conf("ksdd", root=str(ksdd_root), pre_crop=[40, 20], resize=[20, 10])
    assert cfg["keep_duplicates_together"] is True
    ksdd = build_splits(cfg, **IDENTITY)
    assert ksdd.categories == ["ksdd"] and len(ksdd.train) + len(ksdd.test) == 24
    item = next(item for item in ksdd.test if item["label"] == 1)
    assert item["image"].shape == (3, 20, 10) and item["mask"].sum() > 0


def test_build_splits_folder_config(tmp_path):
    from tests.support.data_trees import make_folder_tree

    root = make_folder_tree(tmp_path, n_train=10, missing_masks=0)
    cfg = load_conf("folder", root=str(root), train_dir="train", test_anomalous_dir="test_anomalous",
                    mask_dir="masks", split_ratio=0.2, resize=24, crop=None)
    splits = build_splits(cfg, **IDENTITY)
    assert len(splits.train) == 8 and len(splits.test) == 2 + 3 and splits.categories == ["folder"]
    with pytest.raises(ValueError, match=r"split_ratio=1.0 leaves no training image out of the 10 in .*train"):
        build_splits({**cfg, "split_ratio": 1.0}, **IDENTITY)


def test_build_splits_refuses_an_empty_training_set(tmp_path):
    cfg = load_conf("mtd", root=str(make_mtd_tree(tmp_path, n_free=4, n_per_defect=1)), test_fraction=1.0)
    with pytest.raises(ValueError, match="'mtd' has no training image after splitting: lower test_fraction"):
        build_splits(cfg, **IDENTITY)
