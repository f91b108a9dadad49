"""ImageDataset: decoding, masks, odd files, collate."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.support.data_trees import (
    make_mvtec_tree, planted, save, soften, write_corrupt,
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
)

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
    # a truncated file has a valid header: every file is decoded at construction, so it is found
    # there, before any feature is extracted, named, with the hint
    with pytest.raises(UnreadableImageError, match=r"truncated\.png.*skip_unreadable=true"):
        dataset_of([record(good), record(truncated)])
    data = dataset_of([record(good), record(truncated)], verify=False)  # headers only: found when read
    with pytest.raises(UnreadableImageError, match=r"truncated\.png"):
        data[1]
    with pytest.warns(DatasetWarning, match=r"skipped 2 unreadable.*corrupt\.png.*truncated\.png"):
        data = dataset_of([record(corrupt), record(good), record(truncated)], skip_unreadable=True)
    assert len(data) == 1 and data[0]["path"] == str(good) and data[0]["index"] == 0


def test_a_verified_listing_is_not_decoded_again(tmp_path, monkeypatch):
    import gpuksvd.data.dataset as dataset_module

    monkeypatch.setenv("GPUKSVD_CACHE", str(tmp_path / "cache"))
    images = [save(tmp_path / f"{i}.png", np.full((8, 8, 3), i, np.uint8)) for i in range(3)]
    decoded = []
    original = dataset_module._image_size
    monkeypatch.setattr(dataset_module, "_image_size",
                        lambda path, decode: decoded.append(decode) or original(path, decode))
    dataset_of([record(p) for p in images])
    assert decoded == [True] * 3
    decoded.clear()
    dataset_of([record(p) for p in images])
    assert decoded == [False] * 3  # headers only: the same files in the same state decoded before
    save(images[1], np.full((8, 8, 3), 9, np.uint8))  # a file rewritten: decoded again
    os.utime(images[1], ns=(1, 1))
    decoded.clear()
    dataset_of([record(p) for p in images])
    assert decoded == [True] * 3


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
