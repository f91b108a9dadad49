"""Writing the generated tree: layout, determinism, independence of images, bad arguments."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gpuksvd.data.generated import MARKER_NAME, defect_types, ensure_generated, generate_dataset, render_sample
from tests.support.generated import SMALL, pngs


def test_layout_counts_and_formats(tmp_path):
    root = generate_dataset(tmp_path / "gen", seed=0, **SMALL)
    assert json.loads((root / MARKER_NAME).read_text())["categories"] == ["gravel", "pill"]
    for category in ("gravel", "pill"):
        kinds = defect_types(category)
        assert len(list((root / category / "train" / "good").glob("*.png"))) == 3
        assert sorted(p.name for p in (root / category / "test" / "good").iterdir()) == ["000.png", "001.png"]
        assert sorted(p.name for p in (root / category / "test").iterdir()) == sorted(("good",) + kinds)
        n_defective = 0
        for kind in kinds:
            images = sorted((root / category / "test" / kind).glob("*.png"))
            n_defective += len(images)
            for image_path in images:
                mask_path = root / category / "ground_truth" / kind / f"{image_path.stem}_mask.png"
                image, mask = Image.open(image_path), Image.open(mask_path)
                assert image.mode == "RGB" and image.size == (128, 128)
                assert mask.mode == "L" and mask.size == image.size
                values = np.unique(np.asarray(mask))
                assert set(values.tolist()) == {0, 255}, f"{mask_path}: mask values {values}"
        assert n_defective == 5  # one of each kind
    assert {p.name for p in root.iterdir()} == {"gravel", "pill", MARKER_NAME}


def test_tree_is_read_by_list_mvtec(tmp_path):
    from gpuksvd.data import list_mvtec

    root = generate_dataset(tmp_path / "gen", **SMALL)
    records = list_mvtec(root)
    assert len(records) == 2 * (3 + 2 + 5)
    anomalous = [r for r in records if r.label == 1]
    assert len(anomalous) == 10 and all(r.mask_path is not None and r.mask_path.exists() for r in anomalous)
    assert {r.defect_type for r in anomalous if r.category == "pill"} == set(defect_types("pill"))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first = pngs(generate_dataset(tmp_path / "a", seed=5, **SMALL))
    again = pngs(generate_dataset(tmp_path / "b", seed=5, **SMALL))
    other = pngs(generate_dataset(tmp_path / "c", seed=6, **SMALL))
    assert first.keys() == again.keys() == other.keys() and len(first) == 2 * (3 + 2 + 5 + 5)
    assert first == again
    images = [name for name in first if "ground_truth" not in name]
    assert all(first[name] != other[name] for name in images)


def test_an_image_does_not_depend_on_how_many_are_generated(tmp_path):
    few = pngs(generate_dataset(tmp_path / "few", **SMALL))
    more = pngs(generate_dataset(tmp_path / "more", **{**SMALL, "n_train": 5, "n_test_defect": 10}))
    assert all(more[name] == data for name, data in few.items())


def test_good_images_have_no_mask_and_vary():
    images = []
    for index in range(4):
        image, clean, mask = render_sample("nut", "train", "good", index)
        assert np.array_equal(image, clean) and not mask.any()
        images.append(image.astype(int))
    assert all(np.abs(images[0] - other).mean() > 1 for other in images[1:])


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown generated categories \['carpet'\].*brick"):
        generate_dataset(tmp_path / "x", categories=["carpet"], progress=False)
    with pytest.raises(ValueError, match="n_train must be an integer >= 1, got 0"):
        generate_dataset(tmp_path / "x", n_train=0, progress=False)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        ensure_generated(tmp_path / "x", seed=-1, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty"):
        generate_dataset(tmp_path / "full", **SMALL)
