"""ImageDataset (decoding, masks, odd files, collate) and build_splits from conf/dataset/*.yaml."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from data_trees import (
    make_btad_tree, make_ksdd_tree, make_mtd_tree, make_mvtec_tree, planted, save, soften, write_corrupt,
    write_truncated,
)
from gpuksvd.data import (
    ANOMALOUS,
    NORMAL,
    DatasetWarning,
    ImageDataset,
    ImageRecord,
    Preprocess,
    UnreadableImageError,
    build_splits,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def dataset_of(records, size=16, **kwargs):
    return ImageDataset(records, Preprocess(resize=size, crop=None), **IDENTITY, **kwargs)


def save_palette(path, rgb):
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, *rgb] + [0] * 762)  # index 1 is the colour
    image.save(path)
    return path


def record(path, label=NORMAL, mask=None, split="test"):
    return ImageRecord(Path(path), "cat", split, label, "good" if label == NORMAL else "crack", mask)


# ------------------------------------------------------------------------------- decoding


def test_image_modes_become_rgb(tmp_path):
    gray = np.full((16, 16), 200, np.uint8)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 7  # alpha is dropped, not multiplied in
    paths = [
        save(tmp_path / "gray.png", gray),
        save(tmp_path / "rgba.png", rgba),
        save(tmp_path / "deep.png", np.full((16, 16), 257 * 100, np.uint16)),  # 16-bit, mode I;16
        save_palette(tmp_path / "palette.png", (40, 80, 120)),
        save(tmp_path / "bilevel.bmp", np.full((16, 16), 255, np.uint8), mode="1"),  # dither-free
    ]
    assert Image.open(paths[2]).mode.startswith("I") and Image.open(paths[3]).mode == "P"
    data = dataset_of([record(p) for p in paths])
    expected = [(200, 200, 200), (10, 20, 30), (100, 100, 100), (40, 80, 120), (255, 255, 255)]
    for item, rgb in zip(data, expected):
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        values = (item["image"] * 255).round().reshape(3, -1)
        assert torch.equal(values, torch.tensor(rgb, dtype=torch.float32)[:, None].expand(3, 256)), item["path"]


def test_normalisation(tmp_path):
    path = save(tmp_path / "a.png", np.full((8, 8, 3), (51, 102, 204), np.uint8))
    data = ImageDataset([record(path)], Preprocess(resize=8, crop=None), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    image = data[0]["image"]
    expected = (torch.tensor([0.2, 0.4, 0.8]) - torch.tensor([0.1, 0.2, 0.3])) / torch.tensor([0.5, 0.25, 2.0])
    torch.testing.assert_close(image[:, 3, 3], expected)


def test_mask_encodings_and_has_mask(tmp_path):
    rng = np.random.default_rng(0)
    image, mask = planted(rng, (16, 16))
    img = save(tmp_path / "img.png", image)
    masks = {
        "0_255": save(tmp_path / "m255.png", mask),
        "0_1": save(tmp_path / "m01.bmp", mask // 255),
        "soft": save(tmp_path / "msoft.png", soften(mask)),
        "16bit": save(tmp_path / "m16.png", (mask.astype(np.uint16) * 257)),
    }
    expected = torch.from_numpy(mask > 0).float()[None]
    for name, path in masks.items():
        item = dataset_of([record(img, ANOMALOUS, path)])[0]
        assert torch.equal(item["mask"], expected), name
        assert item["has_mask"] is True and item["label"] == 1
    no_mask = dataset_of([record(img, ANOMALOUS, None), record(img, NORMAL, None)])
    assert no_mask[0]["has_mask"] is False and no_mask[0]["mask"].sum() == 0
    assert no_mask[1]["has_mask"] is True and no_mask[1]["mask"].shape == (1, 16, 16)


def test_mask_of_wrong_size_is_resized_and_warned_once(tmp_path):
    records = []
    for i in range(3):
        mask = np.zeros((32, 32), np.uint8)
        mask[8 + 2 * i:16 + 2 * i, 12:20] = 255  # even corners: half size and back is exact
        image = np.where(mask[..., None] > 0, 255, 60).astype(np.uint8).repeat(3, axis=2)
        small = mask[::2, ::2] if i < 2 else mask  # two masks at half size
        records.append(record(save(tmp_path / f"i{i}.png", image), ANOMALOUS, save(tmp_path / f"m{i}.png", small)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = dataset_of(records, size=32)
        items = [data[i] for i in range(3)] + [data[0]]
    sizes = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(sizes) == 1 and str(sizes[0].message).startswith("2 mask(s) differ in size")
    for item in items:  # the resized mask still covers the bright square
        assert torch.equal(item["mask"][0] > 0, item["image"][0] > 0.9)


def test_unreadable_image_error_or_skip(tmp_path):
    good = save(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    corrupt = write_corrupt(tmp_path / "corrupt.png")
    truncated = write_truncated(tmp_path / "truncated.png")
    with pytest.raises(UnreadableImageError, match=r"corrupt\.png.*skip_unreadable=true"):
        dataset_of([record(good), record(corrupt)])
    # a truncated file has a valid header: found when its pixels are read, named in the error
    data = dataset_of([record(good), record(truncated)])
    with pytest.raises(UnreadableImageError, match=r"truncated\.png"):
        data[1]
    with pytest.warns(DatasetWarning, match=r"skipped 2 unreadable.*corrupt\.png.*truncated\.png"):
        data = dataset_of([record(corrupt), record(good), record(truncated)], skip_unreadable=True)
    assert len(data) == 1 and data[0]["path"] == str(good) and data[0]["index"] == 0


def test_default_collate(tmp_path):
    root = make_mvtec_tree(tmp_path, categories=("bottle", "grid"), missing_masks=1)
    from gpuksvd.data import list_mvtec

    records = [r for r in list_mvtec(root) if r.split == "test"]
    data = ImageDataset(records, Preprocess(resize=32, crop=24), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    batch = next(iter(DataLoader(data, batch_size=len(data))))
    n = len(data)
    assert batch["image"].shape == (n, 3, 24, 24) and batch["mask"].shape == (n, 1, 24, 24)
    assert batch["label"].dtype == torch.int64 and batch["has_mask"].dtype == torch.bool
    assert batch["has_mask"].sum() == n - 1 and batch["label"].sum() == 8
    assert batch["index"].tolist() == list(range(n)) and len(batch["path"]) == n
    assert set(batch["category"]) == {"bottle", "grid"} and set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    # grayscale category (grid): three equal channels once normalisation is undone
    grid = [i for i, c in enumerate(batch["category"]) if c == "grid"][0]
    raw = batch["image"][grid] * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor(
        [0.485, 0.456, 0.406])[:, None, None]
    torch.testing.assert_close(raw[0], raw[1])
    torch.testing.assert_close(raw[1], raw[2])


# ------------------------------------------------------------------------------- build_splits


def load_conf(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)
    cfg.update(overrides)
    return cfg


COMMON_KEYS = ["name", "root", "categories", "resize", "crop", "pre_crop", "random_rotation", "random_crop",
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
    from data_trees import make_folder_tree

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
