"""The listings' shared helpers: which files are images, folder checks whose errors name the path
and show the layout, masks found by stem, reproducible test splits, category folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuksvd.data.layout import (
    IMAGE_SUFFIXES,
    as_path,
    category_folders,
    find_mask,
    is_image_file,
    list_images,
    require_dir,
    require_images,
    seeded_test_mask,
)
from tests.support.data_trees import write_junk

LAYOUT = "  <root>/\n    <category>/train/good/*.png"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_image_files_are_visible_files_with_an_image_suffix(tmp_path):
    assert is_image_file(touch(tmp_path / "a.png")) and is_image_file(touch(tmp_path / "b.JPEG"))
    assert not is_image_file(touch(tmp_path / "._a.png"))  # a macOS resource fork
    assert not is_image_file(touch(tmp_path / "notes.txt"))
    assert not is_image_file((tmp_path / "folder.png"))  # does not exist
    (tmp_path / "folder.png").mkdir()
    assert not is_image_file(tmp_path / "folder.png")
    assert {".png", ".jpg", ".bmp", ".tif"} <= set(IMAGE_SUFFIXES)
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in IMAGE_SUFFIXES)


def test_list_images_sorts_and_skips_what_is_not_an_image(tmp_path):
    write_junk(tmp_path)
    for name in ("10.png", "2.png", "1.BMP", "._1.png", "c.tiff"):
        touch(tmp_path / name)
    (tmp_path / "sub").mkdir()
    touch(tmp_path / "sub" / "0.png")  # not directly inside
    assert [p.name for p in list_images(tmp_path)] == ["1.BMP", "10.png", "2.png", "c.tiff"]
    assert all(p.parent == tmp_path for p in list_images(tmp_path))


def test_list_images_keeps_the_requested_suffixes(tmp_path):
    for name in ("a.png", "b.bmp", "c.BMP", "d.jpg"):
        touch(tmp_path / name)
    assert [p.name for p in list_images(tmp_path, (".bmp",))] == ["b.bmp", "c.BMP"]
    assert [p.name for p in list_images(tmp_path, (".png", ".jpg"))] == ["a.png", "d.jpg"]
    assert list_images(tmp_path, (".gif",)) == []


def test_list_images_of_a_missing_folder_is_empty(tmp_path):
    assert list_images(tmp_path / "missing") == []
    assert list_images(touch(tmp_path / "file.png")) == []


def test_as_path_expands_the_home_folder_and_refuses_an_unset_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert as_path("~/data", "the MVTec AD root", "pass dataset.root") == tmp_path / "data"
    assert as_path(tmp_path, "the MVTec AD root", "pass dataset.root") == tmp_path
    for unset in (None, "", "   "):
        with pytest.raises(ValueError, match=r"^the MVTec AD root is not set: pass dataset.root=/data \(or set X\)$"):
            as_path(unset, "the MVTec AD root", "pass dataset.root=/data (or set X)")


def test_require_dir_names_the_path_and_shows_the_layout(tmp_path):
    assert require_dir(tmp_path, "MVTec AD root", LAYOUT) is tmp_path
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as info:
        require_dir(missing, "MVTec AD root", LAYOUT)
    assert str(info.value) == f"MVTec AD root {missing} does not exist. Expected layout:\n{LAYOUT}"
    file = touch(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="is not a folder") as info:
        require_dir(file, "MVTec AD root", LAYOUT)
    assert str(file) in str(info.value) and str(info.value).endswith(LAYOUT)


def test_require_images_lists_them_or_says_what_was_looked_for(tmp_path):
    touch(tmp_path / "good" / "b.png")
    touch(tmp_path / "good" / "a.png")
    assert [p.name for p in require_images(tmp_path / "good", "train folder", LAYOUT)] == ["a.png", "b.png"]
    with pytest.raises(FileNotFoundError, match="does not exist. Expected layout") as info:
        require_images(tmp_path / "bad", "train folder", LAYOUT)
    assert str(tmp_path / "bad") in str(info.value)
    write_junk(tmp_path / "empty")
    with pytest.raises(ValueError) as info:
        require_images(tmp_path / "empty", "train folder", LAYOUT, suffixes=(".png", ".bmp"))
    assert str(info.value) == (f"train folder {tmp_path / 'empty'} holds no image files (looked for .png, .bmp)."
                               f" Expected layout:\n{LAYOUT}")
    with pytest.raises(ValueError, match=r"looked for \.bmp\)"):
        require_images(tmp_path / "good", "train folder", LAYOUT, suffixes=(".bmp",))


def test_find_mask_tries_the_suffixes_in_order(tmp_path):
    assert find_mask(tmp_path, "000_mask") is None
    bmp = touch(tmp_path / "000_mask.bmp")
    assert find_mask(tmp_path, "000_mask") == bmp
    png = touch(tmp_path / "000_mask.png")
    assert find_mask(tmp_path, "000_mask") == png  # .png comes first by default
    assert find_mask(tmp_path, "000_mask", (".bmp", ".png")) == bmp
    assert find_mask(tmp_path, "000", (".png", ".bmp")) is None  # the stem is matched whole
    assert find_mask(tmp_path / "missing", "000_mask") is None
    (tmp_path / "001.png").mkdir()
    assert find_mask(tmp_path, "001") is None  # a folder is not a mask


@pytest.mark.parametrize(("n_units", "fraction", "expected"), [(10, 0.3, 3), (7, 0.5, 4), (5, 0.0, 0), (5, 1.0, 5)])
def test_seeded_test_mask_takes_the_requested_fraction(n_units, fraction, expected):
    mask = seeded_test_mask(n_units, fraction, seed=0)
    assert mask.dtype == bool and mask.shape == (n_units,)
    assert mask.sum() == expected == round(fraction * n_units)


def test_seeded_test_mask_is_reproducible_per_seed():
    first = seeded_test_mask(40, 0.25, seed=3)
    assert np.array_equal(first, seeded_test_mask(40, 0.25, seed=3))
    others = [seeded_test_mask(40, 0.25, seed=seed) for seed in range(4, 8)]
    assert all(other.sum() == 10 for other in others)
    assert not all(np.array_equal(first, other) for other in others)
    # a larger fraction extends the same permutation: the test split grows, never reshuffles
    assert not (first & ~seeded_test_mask(40, 0.5, seed=3)).any()


def test_seeded_test_mask_keeps_groups_together():
    sizes = [1, 4, 2, 3, 1, 1, 5, 2, 1]  # 20 images in 9 groups of duplicates
    for seed in range(10):
        mask = seeded_test_mask(len(sizes), 0.3, seed=seed, sizes=sizes)
        taken = int(np.dot(mask, sizes))
        # units are taken until 6 images are in; the last one can overshoot by its size less one
        assert 6 <= taken <= 6 + max(sizes) - 1, f"seed {seed}: {taken} images"
        assert mask.any() and not mask.all()
    assert seeded_test_mask(3, 0.5, seed=0, sizes=[1, 1, 1]).tolist() == seeded_test_mask(3, 0.5, seed=0).tolist()


def test_seeded_test_mask_edge_cases():
    assert seeded_test_mask(0, 0.5, seed=0).shape == (0,)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=rf"test_fraction must be in \[0, 1\], got {bad}"):
            seeded_test_mask(10, bad, seed=0)


def category_tree(root: Path, names=("bottle", "grid", "03")) -> Path:
    for name in names:
        (root / name / "train").mkdir(parents=True)
    (root / "license_files").mkdir()  # no train/: not a category
    touch(root / "readme.txt")
    return root


def test_category_folders_default_to_every_folder_with_a_train_folder(tmp_path):
    root = category_tree(tmp_path)
    assert category_folders(root, None, "MVTec AD category", "Categories", LAYOUT) == [
        root / "03", root / "bottle", root / "grid"]


def test_category_folders_keep_the_requested_order(tmp_path):
    root = category_tree(tmp_path)
    assert category_folders(root, ["grid", "bottle"], "MVTec AD category", "Categories", LAYOUT) == [
        root / "grid", root / "bottle"]
    assert category_folders(root, "grid", "MVTec AD category", "Categories", LAYOUT) == [root / "grid"]


def test_category_folders_read_integers_as_two_digit_names(tmp_path):
    root = category_tree(tmp_path)
    assert category_folders(root, 3, "BTAD product", "Products", LAYOUT) == [root / "03"]
    assert category_folders(root, [3, "bottle"], "BTAD product", "Products", LAYOUT) == [root / "03", root / "bottle"]


def test_category_folders_name_a_missing_category_and_the_ones_there(tmp_path):
    root = category_tree(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        category_folders(root, ["bottle", "cable"], "MVTec AD category", "Categories", LAYOUT)
    assert str(info.value) == (f"MVTec AD category 'cable' not found: {root / 'cable'} does not exist. "
                               f"Categories under {root}: 03, bottle, grid. Expected layout:\n{LAYOUT}")
    with pytest.raises(FileNotFoundError, match=r"BTAD product '01' not found.*Products under .*: 03, bottle, grid"):
        category_folders(root, 1, "BTAD product", "Products", LAYOUT)


def test_category_folders_of_an_empty_root_say_what_a_category_is(tmp_path):
    touch(tmp_path / "readme.txt")
    with pytest.raises(FileNotFoundError) as info:
        category_folders(tmp_path, None, "MVTec AD category", "Categories", LAYOUT)
    assert str(info.value) == (f"no category folder (a folder with a train/ sub-folder) under the MVTec AD root "
                               f"{tmp_path}. Expected layout:\n{LAYOUT}")
    with pytest.raises(FileNotFoundError, match=r"'grid' not found.*Categories under .*: none\. Expected layout"):
        category_folders(tmp_path, ["grid"], "MVTec AD category", "Categories", LAYOUT)
