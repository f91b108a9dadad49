"""The generated default dataset: offline sources, layout, determinism, masks, caching."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from gpuksvd.data import generated
from gpuksvd.data.generated import (
    GENERATED_CATEGORIES,
    GENERATED_OBJECTS,
    GENERATED_TEXTURES,
    MARKER_NAME,
    defect_types,
    ensure_generated,
    generate_dataset,
    render_sample,
)

SMALL = dict(n_train=3, n_test_good=2, n_test_defect=4, image_size=128, categories=("gravel", "pill"),
             progress=False)


def _pngs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_categories_are_textures_then_objects():
    assert GENERATED_CATEGORIES == GENERATED_TEXTURES + GENERATED_OBJECTS
    assert len(GENERATED_TEXTURES) >= 3 and len(GENERATED_OBJECTS) >= 1
    assert not set(GENERATED_TEXTURES) & set(GENERATED_OBJECTS)


@pytest.mark.parametrize("category", GENERATED_TEXTURES)
def test_texture_photographs_load_offline(category):
    # This environment has no pooch and no network: a loader that needs a download raises.
    source = generated.load_texture_source(category)
    assert source.dtype == np.float32 and source.ndim == 2
    assert min(source.shape) >= 512  # room for 256-px crops with rotation and scale
    assert 0.0 <= source.min() and source.max() <= 1.0
    assert source.std() > 0.05, "a texture photograph should not be flat"


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
        assert n_defective == 4
    assert {p.name for p in root.iterdir()} == {"gravel", "pill", MARKER_NAME}


def test_tree_is_read_by_list_mvtec(tmp_path):
    from gpuksvd.data import list_mvtec

    root = generate_dataset(tmp_path / "gen", **SMALL)
    records = list_mvtec(root)
    assert len(records) == 2 * (3 + 2 + 4)
    anomalous = [r for r in records if r.label == 1]
    assert len(anomalous) == 8 and all(r.mask_path is not None and r.mask_path.exists() for r in anomalous)
    assert {r.defect_type for r in anomalous if r.category == "pill"} == set(defect_types("pill"))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first = _pngs(generate_dataset(tmp_path / "a", seed=5, **SMALL))
    again = _pngs(generate_dataset(tmp_path / "b", seed=5, **SMALL))
    other = _pngs(generate_dataset(tmp_path / "c", seed=6, **SMALL))
    assert first.keys() == again.keys() == other.keys() and len(first) == 2 * (3 + 2 + 4 + 4)
    assert first == again
    images = [name for name in first if "ground_truth" not in name]
    assert all(first[name] != other[name] for name in images)


def test_an_image_does_not_depend_on_how_many_are_generated(tmp_path):
    few = _pngs(generate_dataset(tmp_path / "few", **SMALL))
    more = _pngs(generate_dataset(tmp_path / "more", **{**SMALL, "n_train": 5, "n_test_defect": 8}))
    assert all(more[name] == data for name, data in few.items())


@pytest.mark.parametrize("category", GENERATED_CATEGORIES)
def test_masks_cover_exactly_the_defect(category):
    size, crop = 256, 16  # the MVTec preprocessing keeps the central 224 pixels
    for defect in defect_types(category):
        for index in range(3):
            image, clean, mask = render_sample(category, "test", defect, index, seed=1)
            where = f"{category}/{defect}/{index}"
            assert image.shape == clean.shape == (size, size, 3) and mask.shape == (size, size)
            area = mask.mean()
            assert 0.005 <= area <= 0.08, f"{where}: mask covers {area:.2%} of the image"
            inside = np.zeros_like(mask)
            inside[crop:size - crop, crop:size - crop] = True
            assert not (mask & ~inside).any(), f"{where}: defect outside the central crop"
            change = np.abs(image.astype(int) - clean.astype(int)).max(axis=-1)
            visible = (change[mask] >= 10).mean()
            assert visible >= 0.95, f"{where}: only {visible:.1%} of the mask visibly changed"
            distance_to_mask = ndimage.distance_transform_edt(~mask)
            stray = distance_to_mask[change > 0].max()
            assert stray <= 3.0, f"{where}: a pixel {stray:.1f} px away from the mask changed"


def test_a_faint_sliver_outside_the_mask_is_not_drawn(monkeypatch):
    # A defect clipped by an object's edge can leave a long band where its coverage is below
    # one half: not in the mask, so it must not be drawn either.
    size = 128
    y, x = np.mgrid[:size, :size].astype(np.float32)
    blob = np.hypot(y - 64, x - 40) - 12  # the mask: a disc of radius 12
    sliver = np.where(np.abs(y - 64) < 2, 0.3, 50.0).astype(np.float32)  # coverage 0.25, no mask
    sdf = np.minimum(blob, sliver)
    monkeypatch.setattr(generated, "_draw_defect",
                        lambda *args: (sdf, 1.2, 1.0, np.zeros((size, size, 3), np.float32)))
    render = generated._Render(np.full((size, size, 3), 0.5, np.float32))
    image, mask = generated._apply_defect("gravel", "scratch", render, size, np.random.default_rng(0))
    assert np.array_equal(mask, blob <= 0)
    changed = np.abs(image - render.image).max(axis=-1) > 0
    assert changed[mask].all()
    assert ndimage.distance_transform_edt(~mask)[changed].max() <= 2.0


def test_good_images_have_no_mask_and_vary():
    images = []
    for index in range(4):
        image, clean, mask = render_sample("nut", "train", "good", index)
        assert np.array_equal(image, clean) and not mask.any()
        images.append(image.astype(int))
    assert all(np.abs(images[0] - other).mean() > 1 for other in images[1:])


def test_objects_move_and_turn_by_a_little():
    centers, angles = [], []
    for index in range(12):
        rngs = generated._sample_rngs(0, "pill", "train", "good", index)
        outline = generated._render_clean("pill", 256, rngs[0]).outline_sdf <= 0
        y, x = np.nonzero(outline)
        centers.append((y.mean(), x.mean()))
        # orientation of the capsule's long axis from the second moments of its silhouette
        cov = np.cov(np.stack([x, y]))
        angles.append(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])))
    offsets = np.asarray(centers) - 127.5
    assert np.abs(offsets).max() <= 6 and offsets.std(axis=0).min() > 0.5
    assert np.abs(angles).max() <= 6 and np.std(angles) > 0.5


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


# -------------------------------------------------------------------------------------------
# the cache
# -------------------------------------------------------------------------------------------


@pytest.fixture
def count_generations(monkeypatch):
    calls = []
    original = generated.generate_dataset

    def counting(root, *args, **kwargs):
        calls.append(Path(root))
        return original(root, *args, **kwargs)

    monkeypatch.setattr(generated, "generate_dataset", counting)
    return calls


def _small(**overrides):
    return {**SMALL, **overrides}


def test_default_folder_follows_the_environment(tmp_path, monkeypatch, count_generations):
    monkeypatch.setenv("GPUKSVD_CACHE", str(tmp_path / "cache"))
    root = ensure_generated(seed=3, **SMALL)
    assert root == tmp_path / "cache" / "generated" / "v1-seed3"
    assert (root / MARKER_NAME).exists() and len(count_generations) == 1
    assert count_generations[0].parent == root.parent and count_generations[0] != root  # a temp sibling
    assert [p.name for p in root.parent.iterdir()] == ["v1-seed3"]  # the temp folder is gone
    monkeypatch.delenv("GPUKSVD_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert generated.default_cache_dir(0) == tmp_path / "home" / ".cache" / "gpuksvd" / "generated" / "v1-seed0"


def test_second_call_reuses_the_tree(tmp_path, count_generations):
    root = ensure_generated(tmp_path / "gen", seed=0, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert ensure_generated(tmp_path / "gen", seed=0, **SMALL) == root
    assert len(count_generations) == 1
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_missing_marker_or_other_parameters_regenerate(tmp_path, count_generations):
    root = ensure_generated(tmp_path / "gen", **SMALL)
    expected = _pngs(root)
    (root / MARKER_NAME).unlink()
    (root / "pill" / "train" / "good" / "001.png").unlink()  # what a crash could have left
    assert ensure_generated(tmp_path / "gen", **SMALL) == root
    assert len(count_generations) == 2 and _pngs(root) == expected
    ensure_generated(tmp_path / "gen", **_small(n_train=4))
    assert len(count_generations) == 3
    assert len(list((root / "pill" / "train" / "good").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]  # no temp or old copy left


def test_half_written_temp_folder_is_ignored_and_old_ones_removed(tmp_path, count_generations):
    stale = tmp_path / ".gen.tmp-crashed"
    (stale / "pill" / "train" / "good").mkdir(parents=True)
    (stale / "pill" / "train" / "good" / "000.png").write_bytes(b"half")
    fresh = tmp_path / ".gen.tmp-running"  # maybe another process, still working: keep it
    fresh.mkdir()
    two_hours_ago = os.stat(stale).st_mtime - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    root = ensure_generated(tmp_path / "gen", **SMALL)
    assert (root / MARKER_NAME).exists() and len(count_generations) == 1
    assert not stale.exists() and fresh.exists()


def test_interrupted_generation_leaves_no_tree(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = generated.render_sample
    monkeypatch.setattr(generated, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(tmp_path / "gen", **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(generated, "render_sample", original)
    root = ensure_generated(tmp_path / "gen", **SMALL)
    assert len(_pngs(root)) == 2 * (3 + 2 + 4 + 4)


def test_concurrent_callers_get_one_complete_tree(tmp_path):
    results, errors = [], []

    def call():
        try:
            results.append(ensure_generated(tmp_path / "gen", **SMALL))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [tmp_path / "gen"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
    assert _pngs(tmp_path / "gen") == _pngs(generate_dataset(tmp_path / "reference", **SMALL))


def test_a_foreign_folder_is_refused_not_deleted(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.png").write_bytes(b"precious")
    with pytest.raises(ValueError, match="exists and is not a generated dataset"):
        ensure_generated(tmp_path / "data", **SMALL)
    assert (tmp_path / "data" / "photo.png").read_bytes() == b"precious"


def test_command_line_prints_the_root(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(generated, "ensure_generated", lambda root, seed: seen.append((root, seed)) or Path(root))
    generated.main(["--root", str(tmp_path / "r"), "--seed", "7"])
    assert seen == [(str(tmp_path / "r"), 7)]
    assert capsys.readouterr().out.strip() == str(tmp_path / "r")
