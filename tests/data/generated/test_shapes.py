"""Signed distance fields of the generated defects: negative inside, positive outside, distances in
pixels; the coverage ramp and the smooth noise they are drawn with."""
from __future__ import annotations

import numpy as np
import pytest

from gpuksvd.data.generated.shapes import blob_sdf, curve_sdf, grid, smooth_noise, soft_coverage, square_window

SIZE = 64


def test_grid_gives_pixel_centre_rows_and_columns():
    y, x = grid(5)
    assert y.shape == x.shape == (5, 5) and y.dtype == x.dtype == np.float32
    assert np.array_equal(y[:, 0], np.arange(5)) and np.array_equal(x[0], np.arange(5))
    assert (y == y[:, :1]).all() and (x == x[:1]).all()  # y constant along a row, x along a column


def test_soft_coverage_ramps_from_one_inside_to_zero_outside():
    sdf = np.array([-10.0, -1.0, -0.5, 0.0, 0.5, 1.0, 10.0])
    coverage = soft_coverage(sdf, edge_width=2.0)
    assert np.allclose(coverage, [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    assert np.all(np.diff(coverage) <= 0)  # further out never covers more
    wide = soft_coverage(np.linspace(-20, 20, 401), edge_width=8.0)
    assert wide.min() == 0.0 and wide.max() == 1.0 and ((0 < wide) & (wide < 1)).sum() == 79  # 8 px at 0.1 px steps


def test_square_window_is_clipped_to_the_image():
    (rows, cols), y, x = square_window(SIZE, np.array([10.0, 20.0]), half=3)
    assert (rows, cols) == (slice(7, 14), slice(17, 24))
    assert y.shape == x.shape == (7, 7) and y.min() == 7 and x.max() == 23
    (rows, cols), y, _ = square_window(SIZE, np.array([1.0, SIZE - 2.0]), half=5)
    assert (rows, cols) == (slice(0, 7), slice(SIZE - 7, SIZE))
    assert y.shape == (7, 7)


def blob(seed=0, center=(32.0, 30.0), radius=8.0):
    return blob_sdf(SIZE, np.array(center), radius, np.random.default_rng(seed))


def test_blob_is_negative_inside_and_positive_outside():
    for seed in range(5):
        sdf = blob(seed)
        assert sdf.shape == (SIZE, SIZE) and sdf.dtype == np.float32
        assert sdf[32, 30] < 0, "the centre is inside"
        y, x = grid(SIZE)
        distance = np.hypot(y - 32, x - 30)
        # the wavy radius stays within radius * (1 ± 0.44 * (1/2 + 1/3 + 1/4 + 1/5)) / 1.22
        assert (sdf[distance < 8 * 0.43 / 1.22] < 0).all()
        assert (sdf[distance > 8 * 1.57 / 1.22] > 0).all()
        beyond = np.maximum(np.abs(y - 32), np.abs(x - 30)) > 1.35 * 8 + 5
        assert (sdf[beyond] == SIZE).all(), "outside its bounding square a blob is 'far'"
        inside = (sdf < 0).sum()
        assert 0.2 * np.pi * 8**2 < inside < 2.5 * np.pi * 8**2


def test_blob_outline_changes_with_the_generator():
    assert np.array_equal(blob(3), blob(3))
    assert not np.array_equal(blob(3) < 0, blob(4) < 0)


def curve(seed=0, center=(32.0, 32.0), length=30.0, width=3.0):
    return curve_sdf(SIZE, np.array(center), length, width, np.random.default_rng(seed))


def test_curve_is_a_band_of_the_requested_width():
    for seed in range(5):
        sdf = curve(seed)
        assert sdf.shape == (SIZE, SIZE) and sdf.dtype == np.float32
        # distance to the curve minus half the width: never below -width/2, and the curve passes
        # close to a pixel centre somewhere
        assert sdf.min() >= -1.5 - 1e-5 and sdf.min() < -1.0
        inside = (sdf < 0).sum()
        assert 30 * 3 * 0.6 < inside < 30 * 3 * 1.8, f"seed {seed}: {inside} px for a 30 x 3 px curve"
        # an exact distance field changes by at most one pixel between neighbours
        near = sdf < 10
        steps = np.abs(np.diff(sdf, axis=0))[near[1:] & near[:-1]]
        assert steps.max() <= 1 + 1e-4
        y, x = grid(SIZE)
        assert (sdf[np.hypot(y - 32, x - 32) > 30 / 2 + 3 + 3] > 0).all(), "nothing beyond the ends"


def test_curve_width_thickens_the_band():
    thin, thick = curve(1, width=2.0), curve(1, width=6.0)
    near = thin < 2  # inside both bounding squares: the same distance, less each half-width
    assert np.allclose((thin - thick)[near], 2.0, atol=1e-5)
    assert (thick < 0).sum() > 2 * (thin < 0).sum()


def test_smooth_noise_is_reproducible_and_scaled():
    noise = smooth_noise(SIZE, np.random.default_rng(7), scale=4.0)
    assert noise.shape == (SIZE, SIZE) and noise.dtype == np.float32
    assert np.array_equal(noise, smooth_noise(SIZE, np.random.default_rng(7), scale=4.0))
    assert not np.array_equal(noise, smooth_noise(SIZE, np.random.default_rng(8), scale=4.0))
    assert np.abs(noise).max() == pytest.approx(1.0, abs=1e-4) and noise.min() < 0 < noise.max()
    assert smooth_noise(16, np.random.default_rng(0), scale=2.0).shape == (16, 16)


def test_smooth_noise_is_smoother_at_a_larger_scale():
    def roughness(scale):
        noise = smooth_noise(SIZE, np.random.default_rng(0), scale)
        return np.abs(np.diff(noise, axis=1)).mean()

    assert roughness(8.0) < roughness(2.0) < roughness(0.5)
