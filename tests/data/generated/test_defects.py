"""Defects of the generated dataset: masks cover exactly what was drawn, and what is drawn is
small, faint and of the kind its name says."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gpuksvd.data.generated import defects
from gpuksvd.data.generated.defects import defect_types
from gpuksvd.data.generated.scenes import (
    GENERATED_CATEGORIES,
    GENERATED_OBJECTS,
    GENERATED_TEXTURES,
    Render,
    render_clean,
)
from gpuksvd.data.generated.writer import render_sample, sample_rngs

SIZE, CROP = 256, 16  # the MVTec preprocessing keeps the central 224 pixels


def _sample(category, defect, index, seed=1):
    image, clean, mask = render_sample(category, "test", defect, index, seed=seed)
    change = np.abs(image.astype(int) - clean.astype(int)).max(axis=-1)  # (S, S) grey levels
    return image, clean, mask, change


@pytest.mark.parametrize("category", GENERATED_CATEGORIES)
def test_masks_cover_exactly_the_defect(category):
    for defect in defect_types(category):
        for index in range(4):
            image, clean, mask, change = _sample(category, defect, index)
            where = f"{category}/{defect}/{index}"
            assert image.shape == clean.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
            area = mask.mean()
            assert 0.0004 <= area <= 0.05, f"{where}: mask covers {area:.3%} of the image"
            inside = np.zeros_like(mask)
            inside[CROP:SIZE - CROP, CROP:SIZE - CROP] = True
            assert not (mask & ~inside).any(), f"{where}: defect outside the central crop"
            # Drawn where the mask says: faint defects move pixels by a few grey levels only, but
            # they move (almost) every masked pixel; the pattern defect can by chance redraw a
            # few pixels in nearly their own colour.
            visible = (change[mask] >= 3).mean()
            assert visible >= 0.9, f"{where}: only {visible:.1%} of the mask changed by 3 grey levels"
            # ... and nowhere else: nothing farther than the soft edge outside the mask.
            stray = ndimage.distance_transform_edt(~mask)[change > 0].max()
            assert stray <= 3.0, f"{where}: a pixel {stray:.1f} px away from the mask changed"


def test_a_changed_image_is_never_left_without_a_mask_pixel():
    # the other direction of "exact": every mask has a core of clearly changed pixels, so a
    # defect is never an invisible annotation
    for category in GENERATED_CATEGORIES:
        for defect in defect_types(category):
            _, _, mask, change = _sample(category, defect, 5, seed=2)
            assert (change[mask] >= 6).sum() >= 20, f"{category}/{defect}: fewer than 20 px changed by 6 levels"


@pytest.mark.parametrize("category", GENERATED_OBJECTS)
def test_object_defects_are_faint(category):
    # an object's surface is smooth and the same in every image: its scratches, dents, tints
    # and stains stay within a few dozen grey levels (the chip is a hole, not faint)
    for defect in ("scratch", "dent", "tint", "stain"):
        medians = []
        for index in range(4):
            _, _, mask, change = _sample(category, defect, index)
            medians.append(np.median(change[mask]))
        assert max(medians) <= 40, f"{category}/{defect}: median changes {medians}"
        assert min(medians) >= 3


def test_scratches_are_hairlines():
    for category in GENERATED_CATEGORIES:
        for index in range(4):
            _, _, mask, _ = _sample(category, "scratch", index)
            # mean width = area / length of the centre line (the skeleton, from thinning)
            length = _skeleton_length(mask)
            width = mask.sum() / max(length, 1)
            # (the skeleton stops short of the rounded ends, so this overestimates by up to 1 px)
            assert 1.0 <= width <= 4.0, f"{category}/scratch/{index}: {width:.2f} px wide"
            assert length >= 15, f"{category}/scratch/{index}: {length} px long"


def _skeleton_length(mask: np.ndarray) -> int:
    from skimage.morphology import skeletonize

    return int(skeletonize(mask).sum())


def test_tints_change_the_hue_not_the_brightness():
    for category in GENERATED_CATEGORIES:
        for index in range(4):
            image, clean, mask, _ = _sample(category, "tint", index)
            shift = (image.astype(float) - clean.astype(float))[mask]  # (M, 3)
            brightness = np.abs(shift.mean(axis=0).mean())
            hue = np.abs(shift.mean(axis=0)).max()
            assert brightness <= 0.35 * hue, f"{category}/tint/{index}: brightness {brightness:.1f}, hue {hue:.1f}"


@pytest.mark.parametrize("category", GENERATED_TEXTURES)
def test_a_pattern_is_the_same_material_redrawn(category):
    # (that it is turned and magnified is render_texture's test, in test_scenes.py)
    for index in range(4):
        image, clean, mask, change = _sample(category, "pattern", index)
        where = f"{category}/pattern/{index}"
        patch = image[mask].astype(float)
        # the same material, a shade lighter or darker: colours from the clean image's own range
        # (a foreign texture, grass on brick, would fall outside it) ...
        low, high = np.percentile(clean.reshape(-1, 3), [1, 99], axis=0)
        inside = ((patch >= low - 35) & (patch <= high + 35)).all(axis=-1).mean()
        assert inside >= 0.95, f"{where}: {inside:.1%} of the patch in the texture's colour range"
        # ... but not the same pixels: most of the region is redrawn
        assert np.median(change[mask]) >= 8, where


@pytest.mark.parametrize("category", GENERATED_OBJECTS)
def test_a_chip_shows_the_table(category):
    for index in range(4):
        image, clean, mask, _ = _sample(category, "chip", index)
        # the table as rendered for this very image (its first generator draws the scene)
        background = render_clean(category, SIZE, sample_rngs(1, category, "test", "chip", index)[0]).background
        core = ndimage.binary_erosion(mask)  # away from the soft edge
        assert core.any(), f"{category}/chip/{index}: no pixel fully inside the chip"
        table = np.round(background[core] * 255)
        # the sensor noise (std 3 levels) is on top of the table's colour
        assert np.abs(image[core].astype(float) - table).mean() <= 4, f"{category}/chip/{index}"
        assert np.abs(clean[core].astype(float) - table).mean() >= 20  # the object was there before


def test_defects_vary_in_size_and_strength():
    # faint-to-plain is the point: the same kind of defect comes small and large, weak and strong
    for category, defect in (("gravel", "dent"), ("brick", "stain"), ("nut", "scratch"), ("pill", "tint")):
        areas, strengths = [], []
        for index in range(8):
            _, _, mask, change = _sample(category, defect, index)
            areas.append(mask.sum())
            strengths.append(np.median(change[mask]))
        assert max(areas) >= 1.8 * min(areas), f"{category}/{defect}: areas {areas}"
        assert max(strengths) >= 1.5 * min(strengths), f"{category}/{defect}: strengths {strengths}"


def test_a_faint_sliver_outside_the_mask_is_not_drawn(monkeypatch):
    # A defect clipped by an object's edge can leave a long band where its coverage is below
    # one half: not in the mask, so it must not be drawn either.
    size = 128
    y, x = np.mgrid[:size, :size].astype(np.float32)
    blob = np.hypot(y - 64, x - 40) - 12  # the mask: a disc of radius 12
    sliver = np.where(np.abs(y - 64) < 2, 0.3, 50.0).astype(np.float32)  # coverage 0.25, no mask
    sdf = np.minimum(blob, sliver)
    monkeypatch.setattr(defects, "draw_defect",
                        lambda *args: (sdf, 1.2, 1.0, np.zeros((size, size, 3), np.float32)))
    render = Render(np.full((size, size, 3), 0.5, np.float32))
    image, mask = defects.apply_defect("gravel", "scratch", render, size, np.random.default_rng(0))
    assert np.array_equal(mask, blob <= 0)
    changed = np.abs(image - render.image).max(axis=-1) > 0
    assert changed[mask].all()
    assert ndimage.distance_transform_edt(~mask)[changed].max() <= 2.0
