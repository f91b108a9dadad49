"""Clean renders of the generated dataset: offline sources, categories, object variation."""
from __future__ import annotations

import numpy as np
import pytest

from gpuksvd.data.generated import scenes
from gpuksvd.data.generated.scenes import GENERATED_CATEGORIES, GENERATED_OBJECTS, GENERATED_TEXTURES
from gpuksvd.data.generated.writer import sample_rngs


def test_categories_are_textures_then_objects():
    assert GENERATED_CATEGORIES == GENERATED_TEXTURES + GENERATED_OBJECTS
    assert len(GENERATED_TEXTURES) >= 3 and len(GENERATED_OBJECTS) >= 1
    assert not set(GENERATED_TEXTURES) & set(GENERATED_OBJECTS)


@pytest.mark.parametrize("category", GENERATED_TEXTURES)
def test_texture_photographs_load_offline(category):
    # This environment has no pooch and no network: a loader that needs a download raises.
    source = scenes.load_texture_source(category)
    assert source.dtype == np.float32 and source.ndim == 2
    assert min(source.shape) >= 512  # room for 256-px crops with rotation and scale
    assert 0.0 <= source.min() and source.max() <= 1.0
    assert source.std() > 0.05, "a texture photograph should not be flat"


def test_objects_move_and_turn_by_a_little():
    centers, angles = [], []
    for index in range(12):
        rngs = sample_rngs(0, "pill", "train", "good", index)
        outline = scenes.render_clean("pill", 256, rngs[0]).outline_sdf <= 0
        y, x = np.nonzero(outline)
        centers.append((y.mean(), x.mean()))
        # orientation of the capsule's long axis from the second moments of its silhouette
        cov = np.cov(np.stack([x, y]))
        angles.append(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])))
    offsets = np.asarray(centers) - 127.5
    assert np.abs(offsets).max() <= 6 and offsets.std(axis=0).min() > 0.5
    assert np.abs(angles).max() <= 6 and np.std(angles) > 0.5


@pytest.mark.parametrize("category", GENERATED_TEXTURES)
def test_a_magnified_texture_is_coarser(category):
    # The pattern defect draws the texture magnified: edges per pixel fall by about the factor.
    def busyness(magnification):
        grey = scenes.render_texture(category, 256, np.random.default_rng(3), magnification=magnification).mean(-1)
        return np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()

    ratio = busyness(2.0) / busyness(1.0)
    assert 0.35 <= ratio <= 0.65, f"{category}: magnified 2x, gradients scale by {ratio:.2f}"
    with pytest.raises(ValueError, match="magnification must be in"):
        scenes.render_texture(category, 256, np.random.default_rng(3), magnification=0.5)


def test_good_objects_vary_from_part_to_part():
    # Lighting, finish and grain differ between good nuts, as between real parts: the face's
    # mean grey level spreads by more than the sensor noise could explain.
    faces = []
    for index in range(8):
        render = scenes.render_clean("nut", 256, sample_rngs(0, "nut", "train", "good", index)[0])
        faces.append(render.image[render.object_sdf <= -5].mean() * 255)
    assert np.std(faces) >= 2.0, f"face means {np.round(faces, 1)}"
