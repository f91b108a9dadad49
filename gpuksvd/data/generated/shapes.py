"""Signed distance fields and small geometry helpers shared by the scenes and the defects."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each of shape (size, size), float32."""
    axis = np.arange(size, dtype=np.float32)
    return axis[:, None] + np.zeros((1, size), np.float32), axis[None, :] + np.zeros((size, 1), np.float32)


def soft_coverage(sdf: np.ndarray, edge_width: float) -> np.ndarray:
    """Coverage in [0, 1] of a shape given its signed distance (negative inside), in pixels.

    The ramp is centred on the contour (0.5 at ``sdf == 0``) and ``edge_width`` pixels wide.
    """
    return np.clip(0.5 - sdf / edge_width, 0.0, 1.0)


def square_window(size: int, center: np.ndarray, half: float):
    """Slices of the square of half-side ``half`` px around ``center`` (clipped to the image),
    and the pixel-centre coordinates ``(y, x)`` inside it."""
    low = np.clip(np.floor(np.asarray(center) - half).astype(int), 0, size)
    high = np.clip(np.ceil(np.asarray(center) + half).astype(int) + 1, 0, size)
    rows, cols = slice(low[0], high[0]), slice(low[1], high[1])
    y, x = grid(size)
    return (rows, cols), y[rows, cols], x[rows, cols]


def blob_sdf(size: int, center: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Approximate signed distance (px) to an irregular blob: a circle with a wavy radius.

    Computed only in the blob's bounding square; elsewhere it is ``size`` (far outside).
    """
    amplitudes = rng.uniform(0.0, 0.44 / np.arange(2, 6))
    phases = rng.uniform(0, 2 * np.pi, 4)
    sdf = np.full((size, size), float(size), np.float32)
    window, y, x = square_window(size, center, 1.35 * radius + 4)
    dy, dx = y - center[0], x - center[1]
    angle = np.arctan2(dy, dx)[..., None]
    wave = 1 + np.sum(amplitudes * np.cos(np.arange(2, 6) * angle + phases), axis=-1)
    sdf[window] = np.hypot(dy, dx) - radius * wave / 1.22
    return sdf


def curve_sdf(size: int, center: np.ndarray, length: float, width: float,
               rng: np.random.Generator) -> np.ndarray:
    """Signed distance (px) to a thick quadratic Bezier curve through ``center``."""
    direction = rng.uniform(0, np.pi)
    along = np.array([np.sin(direction), np.cos(direction)])  # (dy, dx)
    across = np.array([along[1], -along[0]])
    p0, p2 = center - along * length / 2, center + along * length / 2
    p1 = center + across * rng.uniform(-0.35, 0.35) * length
    t = np.linspace(0, 1, 17)[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (17, 2) as (y, x)
    start, step = points[:-1].astype(np.float32), np.diff(points, axis=0).astype(np.float32)
    box_center = (points.min(axis=0) + points.max(axis=0)) / 2
    half = (points.max(axis=0) - points.min(axis=0)).max() / 2 + width + 2
    sdf = np.full((size, size), float(size), np.float32)
    window, y, x = square_window(size, box_center, half)
    # distance from every window pixel to each of the 16 segments, shape (h, w, 16)
    ry, rx = y[..., None] - start[:, 0], x[..., None] - start[:, 1]
    along = np.clip((ry * step[:, 0] + rx * step[:, 1]) / np.sum(step**2, axis=-1), 0, 1)
    distance = np.hypot(ry - along * step[:, 0], rx - along * step[:, 1]).min(axis=-1)
    sdf[window] = distance - width / 2
    return sdf


def smooth_noise(size: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Low-frequency noise of shape (size, size) in about [-1, 1], features ``scale`` px wide."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), scale)
    return noise / (np.abs(noise).max() + 1e-6)
