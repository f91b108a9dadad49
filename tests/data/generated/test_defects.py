"""Defects of the generated dataset: masks cover exactly what was drawn."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gpuksvd.data.generated import defects
from gpuksvd.data.generated.defects import defect_types
from gpuksvd.data.generated.scenes import GENERATED_CATEGORIES, Render
from gpuksvd.data.generated.writer import render_sample


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
    monkeypatch.setattr(defects, "draw_defect",
                        lambda *args: (sdf, 1.2, 1.0, np.zeros((size, size, 3), np.float32)))
    render = Render(np.full((size, size, 3), 0.5, np.float32))
    image, mask = defects.apply_defect("gravel", "scratch", render, size, np.random.default_rng(0))
    assert np.array_equal(mask, blob <= 0)
    changed = np.abs(image - render.image).max(axis=-1) > 0
    assert changed[mask].all()
    assert ndimage.distance_transform_edt(~mask)[changed].max() <= 2.0
