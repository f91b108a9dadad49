"""A small MVTec-AD-like dataset generated on first use, so the default run needs no download.

The tree is written in the MVTec AD layout, which :func:`gpuksvd.data.list_mvtec` reads::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png      (mode "L", 0 or 255)

Texture categories are cut from the real photographs that scikit-image ships inside its wheel
(``skimage.data.brick``, ``grass`` and ``gravel``: no download), tinted, with random crops,
flips, small rotations and scales and a mild brightness jitter. Object categories (a hex
nut, a two-colour capsule) are rendered from signed distance functions with a few pixels of
position and a few degrees of rotation variation. Defects are drawn as signed distance fields
too: the mask is the region inside the defect's contour (its half-coverage line), so it covers
exactly what was drawn. Every defect lies inside the central 224/256 crop that the MVTec
preprocessing keeps, and covers roughly 0.6–5 % of the image.

Each image draws its randomness from its own generator, seeded by (seed, category, split,
defect type, index): an image does not depend on how many others are generated, and the same
seed gives identical pixels, hence byte-identical PNG files with the same Pillow and zlib.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import tempfile
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

FORMAT_VERSION = 1
"""Bump when the rendering changes, so that cached trees of the old version are not reused."""

GENERATED_TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
GENERATED_OBJECTS: tuple[str, ...] = ("nut", "pill")
GENERATED_CATEGORIES: tuple[str, ...] = GENERATED_TEXTURES + GENERATED_OBJECTS

TEXTURE_DEFECTS: tuple[str, ...] = ("scratch", "hole", "stain", "foreign_patch")
OBJECT_DEFECTS: tuple[str, ...] = ("scratch", "missing", "color", "contamination")

DEFAULT_N_TRAIN = 60  # 5 x 60 = 300 >= the 112 atoms of Lite0's default layer
DEFAULT_N_TEST_GOOD = 15
DEFAULT_N_TEST_DEFECT = 20
DEFAULT_IMAGE_SIZE = 256
MARKER_NAME = ".complete"

# The grey skimage.data photograph of each texture, and the (dark, bright) RGB its grey ramp
# is mapped to. (hubble_deep_field, the other stationary bundled photo, was tried as a fourth
# texture: its rare bright galaxies score like defects, image AUROC 0.75 against 1.0 here.)
_TEXTURE_SOURCES: dict[str, tuple[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "brick": ("brick", ((0.20, 0.08, 0.06), (0.95, 0.68, 0.55))),
    "grass": ("grass", ((0.05, 0.12, 0.03), (0.72, 0.90, 0.45))),
    "gravel": ("gravel", ((0.13, 0.12, 0.11), (0.93, 0.89, 0.80))),
}
_SENSOR_NOISE = 0.012  # std of the additive pixel noise, on the [0, 1] scale
_CROP_MARGIN = 16 / 256  # MVTec preprocessing keeps the central 224 of 256 pixels
_MIN_DEFECT_AREA, _MAX_DEFECT_AREA = 0.006, 0.07  # fractions of the image area


def defect_types(category: str) -> tuple[str, ...]:
    """Defect folders written for ``category`` (one of :data:`GENERATED_CATEGORIES`)."""
    _check_categories([category])
    return TEXTURE_DEFECTS if category in GENERATED_TEXTURES else OBJECT_DEFECTS


# --------------------------------------------------------------------------------------------
# sources and small geometry helpers
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def load_texture_source(category: str) -> np.ndarray:
    """The grey photograph, bundled with scikit-image, that a texture category is cut from.

    Returns
    -------
    numpy.ndarray of shape (H, W), float32 in [0, 1]
        Tinted after cropping (the tints are in ``_TEXTURE_SOURCES``).
    """
    import skimage.data  # the three photographs ship inside the wheel: no pooch, no network

    loader, _ = _TEXTURE_SOURCES[category]
    return np.asarray(getattr(skimage.data, loader)(), dtype=np.float32) / 255.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each of shape (size, size), float32."""
    axis = np.arange(size, dtype=np.float32)
    return axis[:, None] + np.zeros((1, size), np.float32), axis[None, :] + np.zeros((size, 1), np.float32)


def _coverage(sdf: np.ndarray, edge_width: float) -> np.ndarray:
    """Coverage in [0, 1] of a shape given its signed distance (negative inside), in pixels.

    The ramp is centred on the contour (0.5 at ``sdf == 0``) and ``edge_width`` pixels wide.
    """
    return np.clip(0.5 - sdf / edge_width, 0.0, 1.0)


def _window(size: int, center: np.ndarray, half: float):
    """Slices of the square of half-side ``half`` px around ``center`` (clipped to the image),
    and the pixel-centre coordinates ``(y, x)`` inside it."""
    low = np.clip(np.floor(np.asarray(center) - half).astype(int), 0, size)
    high = np.clip(np.ceil(np.asarray(center) + half).astype(int) + 1, 0, size)
    rows, cols = slice(low[0], high[0]), slice(low[1], high[1])
    y, x = _grid(size)
    return (rows, cols), y[rows, cols], x[rows, cols]


def _blob_sdf(size: int, center: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Approximate signed distance (px) to an irregular blob: a circle with a wavy radius.

    Computed only in the blob's bounding square; elsewhere it is ``size`` (far outside).
    """
    amplitudes = rng.uniform(0.0, 0.44 / np.arange(2, 6))
    phases = rng.uniform(0, 2 * np.pi, 4)
    sdf = np.full((size, size), float(size), np.float32)
    window, y, x = _window(size, center, 1.35 * radius + 4)
    dy, dx = y - center[0], x - center[1]
    angle = np.arctan2(dy, dx)[..., None]
    wave = 1 + np.sum(amplitudes * np.cos(np.arange(2, 6) * angle + phases), axis=-1)
    sdf[window] = np.hypot(dy, dx) - radius * wave / 1.22
    return sdf


def _curve_sdf(size: int, center: np.ndarray, length: float, width: float,
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
    window, y, x = _window(size, box_center, half)
    # distance from every window pixel to each of the 16 segments, shape (h, w, 16)
    ry, rx = y[..., None] - start[:, 0], x[..., None] - start[:, 1]
    along = np.clip((ry * step[:, 0] + rx * step[:, 1]) / np.sum(step**2, axis=-1), 0, 1)
    distance = np.hypot(ry - along * step[:, 0], rx - along * step[:, 1]).min(axis=-1)
    sdf[window] = distance - width / 2
    return sdf


def _smooth_noise(size: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Low-frequency noise of shape (size, size) in about [-1, 1], features ``scale`` px wide."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), scale)
    return noise / (np.abs(noise).max() + 1e-6)


# --------------------------------------------------------------------------------------------
# clean renders
# --------------------------------------------------------------------------------------------


@dataclass
class _Render:
    """A clean render and what defects need to know about it.

    ``image`` (S, S, 3) float32 in [0, 1] is noise-free; ``background`` (S, S, 3) is the table
    without the object and its shadow (what a missing piece reveals); ``object_sdf`` is
    the (S, S) signed distance to the object and ``outline_sdf`` the same without inner holes
    (both None for textures).
    """

    image: np.ndarray
    background: np.ndarray | None = None
    object_sdf: np.ndarray | None = None
    outline_sdf: np.ndarray | None = None


def _render_texture(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a texture photograph: flip, rotation of a few degrees, scale ±10 %."""
    source = load_texture_source(category)
    height, width = source.shape[:2]
    angle = np.deg2rad(rng.uniform(-6.0, 6.0))
    # scale is source pixels per output pixel; the photographs are 512 px, the crops 256 at 1:1.
    scale = rng.uniform(0.9, 1.1) * 256 / size
    flip = np.where(rng.random(2) < 0.5, -1.0, 1.0).astype(np.float32)
    half = (size - 1) / 2
    extent = half * scale * (abs(np.cos(angle)) + abs(np.sin(angle))) + 1
    cy = rng.uniform(extent, height - 1 - extent)
    cx = rng.uniform(extent, width - 1 - extent)
    y, x = _grid(size)
    v, u = (y - half) * flip[0] * scale, (x - half) * flip[1] * scale
    cos, sin = float(np.cos(angle)), float(np.sin(angle))  # python floats keep float32
    coords = [cy + cos * v + sin * u, cx - sin * v + cos * u]
    grey = ndimage.map_coordinates(source, coords, order=1, mode="nearest")[..., None]
    dark, bright = (np.asarray(t, np.float32) for t in _TEXTURE_SOURCES[category][1])
    image = dark + grey * (bright - dark)
    return np.clip(image * rng.uniform(0.93, 1.07), 0, 1).astype(np.float32)


def _object_frame(size: int, rng: np.random.Generator):
    """Object coordinates of every pixel, for an object shifted and turned by a little.

    Returns ``u, v`` (S, S) in pixels along the object's axes, the scale ``size / 256``, and
    ``to_image``, which maps object coordinates ``(u, v)`` back to image ``(y, x)``.
    """
    s = size / 256
    center = (size - 1) / 2 + rng.uniform(-4.0, 4.0, 2) * s
    angle = np.deg2rad(rng.uniform(-4.0, 4.0))
    y, x = _grid(size)
    dy, dx = y - center[0], x - center[1]
    cos, sin = float(np.cos(angle)), float(np.sin(angle))  # python floats keep float32

    def to_image(u, v):
        return np.stack([center[0] + sin * u + cos * v, center[1] + cos * u - sin * v], axis=-1)

    return cos * dx + sin * dy, -sin * dx + cos * dy, s, to_image


def _with_shadow(background: np.ndarray, coverage: np.ndarray, s: float) -> np.ndarray:
    """Darken ``background`` (S, S, 3) under a soft shadow cast down-right by ``coverage``."""
    shadow = ndimage.gaussian_filter(ndimage.shift(coverage, 4 * s, order=1), 4 * s)
    return background * (1 - 0.35 * shadow)[..., None]


def _render_nut(size: int, rng: np.random.Generator) -> _Render:
    """A hex nut seen from above on a light grey table."""
    u, v, s, _ = _object_frame(size, rng)
    apothem, hole_radius = 74 * s, 30 * s
    radius = np.hypot(u, v)
    hexagon = np.max([np.abs(u * np.cos(a) + v * np.sin(a)) for a in np.deg2rad([0, 60, 120])],
                     axis=0) - apothem
    sdf = np.maximum(hexagon, hole_radius - radius)
    coverage = _coverage(sdf, 1.2)

    y, _ = _grid(size)
    table = np.array([0.70, 0.71, 0.69], np.float32) * (0.92 + 0.08 * y / size)[..., None]
    table = np.broadcast_to(table, (size, size, 3))
    light = 0.90 + 0.14 * (-u - v) / (2 * apothem)  # lit from the top left
    chamfer = 1 - 0.30 * np.clip((radius - 1.02 * apothem) / (3 * s), 0, 1)
    thread = 1 - 0.35 * np.clip((hole_radius + 8 * s - radius) / (2 * s), 0, 1)
    turned = 1 + 0.025 * np.sin(radius * 1.7 / s)  # lathe rings on the face
    metal = np.array([0.50, 0.51, 0.55], np.float32) * (light * chamfer * thread * turned)[..., None]
    image = _with_shadow(table, coverage, s) * (1 - coverage[..., None]) + metal * coverage[..., None]
    return _Render(image.astype(np.float32), table, sdf, hexagon)


def _render_pill(size: int, rng: np.random.Generator) -> _Render:
    """A red and white capsule with a few red speckles on a dark tray."""
    u, v, s, to_image = _object_frame(size, rng)
    half_length, radius = 60 * s, 36 * s
    sdf = np.hypot(np.maximum(np.abs(u) - half_length, 0), v) - radius
    coverage = _coverage(sdf, 1.2)

    y, x = _grid(size)
    table = np.array([0.14, 0.15, 0.18], np.float32) * (1.05 - 0.1 * x / size)[..., None]
    table = np.broadcast_to(table, (size, size, 3))
    red, white = np.array([0.78, 0.24, 0.18], np.float32), np.array([0.93, 0.91, 0.86], np.float32)
    side = np.clip(0.5 + u / (1.5 * s), 0, 1)[..., None]  # 0 on the red half, 1 on the white
    body = red * (1 - side) + white * side
    # speckles of the white half: normal variation, far smaller than any defect
    n_speckles = rng.integers(12, 24)
    spots = to_image(rng.uniform(4 * s, half_length + 0.6 * radius, n_speckles),
                     rng.uniform(-0.7, 0.7, n_speckles) * radius)
    speckle = np.zeros_like(u)
    for spot in spots:  # a couple of dozen dots, each drawn in its own few-pixel window
        window, wy, wx = _window(size, spot, 1.3 * s + 2)
        dot = _coverage(np.hypot(wy - spot[0], wx - spot[1]) - 1.3 * s, 1.0)
        speckle[window] = np.maximum(speckle[window], dot)
    body = body * (1 - 0.45 * speckle[..., None]) + np.array([0.55, 0.2, 0.15]) * 0.45 * speckle[..., None]
    across = np.clip(np.abs(v) / radius, 0, 1)
    cylinder = 0.72 + 0.28 * np.sqrt(1 - across**2)
    seam = 1 - 0.25 * np.exp(-(u / (1.2 * s)) ** 2)
    highlight = 0.22 * np.exp(-(((v + 0.45 * radius) / (0.12 * radius)) ** 2))
    highlight = highlight * (np.abs(u) < half_length + 0.5 * radius)
    pill = body * (cylinder * seam)[..., None] + highlight[..., None]
    pill = np.clip(pill, 0, 1)
    image = _with_shadow(table, coverage, s) * (1 - coverage[..., None]) + pill * coverage[..., None]
    return _Render(image.astype(np.float32), table, sdf, sdf)


def _render_clean(category: str, size: int, rng: np.random.Generator) -> _Render:
    """A defect-free, noise-free render of one image of ``category``."""
    if category == "nut":
        return _render_nut(size, rng)
    if category == "pill":
        return _render_pill(size, rng)
    return _Render(_render_texture(category, size, rng))


# --------------------------------------------------------------------------------------------
# defects
# --------------------------------------------------------------------------------------------


def _pick_center(render: _Render, size: int, radius: float, rng: np.random.Generator,
                 inside: float | None = None) -> np.ndarray:
    """A defect centre inside the central crop.

    For objects, ``inside > 0`` puts it at least that many px inside the object, ``inside == 0``
    on the object's outline; ``None`` anywhere in the crop.
    """
    low = _CROP_MARGIN * size + radius + 2
    if render.object_sdf is None or inside is None:
        return rng.uniform(low, size - 1 - low, 2)
    band = render.object_sdf <= -inside if inside > 0 else np.abs(render.outline_sdf) <= 1.5
    y, x = _grid(size)
    band &= (np.minimum(y, x) >= low) & (np.maximum(y, x) <= size - 1 - low)
    candidates = np.flatnonzero(band)
    if candidates.size == 0:  # the object is too small for this radius: stay in the crop
        return rng.uniform(low, size - 1 - low, 2)
    flat = candidates[rng.integers(candidates.size)]
    return np.array(divmod(flat, size), dtype=np.float64)


def _contrasting(mean_colour: np.ndarray) -> np.ndarray:
    """Near-black on bright content, near-white on dark content."""
    return (np.full(3, 0.06, np.float32) if mean_colour.mean() > 0.42
            else np.array([0.95, 0.94, 0.90], np.float32))


def _draw_defect(category: str, defect: str, render: _Render, size: int,
                 rng: np.random.Generator):
    """One attempt at drawing ``defect``: (signed distance, edge width, opacity, colour layer).

    The signed distance (S, S) in pixels defines the mask (``sdf <= 0``); the edge width (px,
    how soft the contour is), the opacity (scalar or (S, S)) and the colour layer (S, S, 3)
    define how it is composited over the clean image.
    """
    s = size / 256
    clean = render.image
    is_object = render.object_sdf is not None
    edge, opacity = 1.2, 1.0
    if defect == "scratch":
        width, length = rng.uniform(4.0, 7.0) * s, rng.uniform(90, 150) * s
        center = _pick_center(render, size, length / 2 if not is_object else 8 * s, rng,
                              inside=12 * s if is_object else None)
        sdf = _curve_sdf(size, center, length, width, rng)
        if is_object:
            sdf = np.maximum(sdf, render.object_sdf)
        near = sdf <= 0
        colour = _contrasting(clean[near].mean(axis=0) if near.any() else clean.mean(axis=(0, 1)))
        layer = np.broadcast_to(colour, clean.shape)
    elif defect == "hole":
        radius = rng.uniform(14, 24) * s
        sdf = _blob_sdf(size, _pick_center(render, size, radius, rng), radius, rng)
        depth = np.clip(-sdf / radius, 0, 1)[..., None]  # 0 on the rim, 1 in the middle
        layer = np.array([0.16, 0.14, 0.13], np.float32) * (1 - depth) + 0.03 * depth
    elif defect == "stain":
        radius = rng.uniform(18, 32) * s
        sdf = _blob_sdf(size, _pick_center(render, size, radius, rng), radius, rng)
        hue = _STAIN_COLOURS[category][rng.integers(len(_STAIN_COLOURS[category]))]
        layer = np.broadcast_to(np.asarray(hue, np.float32), clean.shape)
        edge, opacity = 4.0 * s, 0.8 + 0.15 * _smooth_noise(size, rng, 6 * s)
    elif defect == "foreign_patch":
        radius = rng.uniform(18, 30) * s
        sdf = _blob_sdf(size, _pick_center(render, size, radius, rng), radius, rng)
        others = [t for t in GENERATED_TEXTURES if t != category]
        layer = _render_texture(others[rng.integers(len(others))], size, rng)
    elif defect == "missing":
        radius = rng.uniform(20, 30) * s
        center = _pick_center(render, size, radius, rng, inside=0.0)
        y, x = _grid(size)
        disc = np.hypot(y - center[0], x - center[1]) - radius
        sdf = np.maximum(disc, render.object_sdf)
        opacity = _coverage(render.object_sdf, 1.2)  # only the object's own pixels vanish
        layer = render.background
    elif defect in ("color", "contamination"):
        radius = rng.uniform(14, 24) * s
        center = _pick_center(render, size, radius, rng, inside=0.5 * radius)
        sdf = np.maximum(_blob_sdf(size, center, radius, rng), render.object_sdf)
        palette = _OBJECT_COLOURS if defect == "color" else _DIRT_COLOURS
        hue = np.asarray(palette[rng.integers(len(palette))], np.float32)
        if defect == "color":  # paint follows the object's shading
            shading = clean.mean(axis=-1, keepdims=True)
            layer = np.clip(hue * shading / max(float(shading[sdf <= 0].mean()), 1e-3), 0, 1)
        else:
            layer = np.broadcast_to(hue, clean.shape)
            edge, opacity = 4.0 * s, 0.85
    else:  # pragma: no cover - defect names come from defect_types()
        raise ValueError(f"unknown defect {defect!r}")
    return sdf, edge, opacity, np.asarray(layer, np.float32)


# Stain hues chosen far from each texture's own colours, so the stain reads as foreign.
_STAIN_COLOURS = {
    "brick": ((0.10, 0.25, 0.75), (0.15, 0.55, 0.25), (0.05, 0.05, 0.08)),
    "grass": ((0.75, 0.10, 0.55), (0.85, 0.35, 0.05), (0.15, 0.15, 0.70)),
    "gravel": ((0.80, 0.10, 0.10), (0.10, 0.30, 0.80), (0.10, 0.55, 0.15)),
}
_OBJECT_COLOURS = ((0.15, 0.30, 0.85), (0.85, 0.55, 0.05), (0.10, 0.60, 0.20))
_DIRT_COLOURS = ((0.22, 0.15, 0.08), (0.05, 0.05, 0.05), (0.45, 0.30, 0.10))


def _apply_defect(category: str, defect: str, render: _Render, size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Composite a defect over the clean render; returns (image (S, S, 3), mask (S, S) bool)."""
    area = size * size
    for _ in range(50):  # redraw the rare defect that falls mostly off an object
        sdf, edge, opacity, layer = _draw_defect(category, defect, render, size, rng)
        mask = sdf <= 0
        if _MIN_DEFECT_AREA * area <= mask.sum() <= _MAX_DEFECT_AREA * area:
            # Nothing is drawn farther than the soft edge from the mask: where a defect only
            # grazes an object the overlap is a faint sliver that the mask would not cover.
            distance = ndimage.distance_transform_edt(~mask)
            alpha = _coverage(sdf, edge) * opacity * np.clip(edge / 2 + 1 - distance, 0, 1)
            image = render.image * (1 - alpha[..., None]) + layer * alpha[..., None]
            return image.astype(np.float32), mask
    raise RuntimeError(f"could not place a {defect!r} defect on {category!r} at size {size}")


# --------------------------------------------------------------------------------------------
# one sample, the whole tree
# --------------------------------------------------------------------------------------------


def _sample_rngs(seed: int, category: str, split: str, defect: str, index: int):
    """Independent generators for the clean render, the defect and the pixel noise."""
    key = [zlib.crc32(name.encode()) for name in (category, split, defect)] + [index]
    return [np.random.default_rng(child)
            for child in np.random.SeedSequence(seed, spawn_key=key).spawn(3)]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def render_sample(category: str, split: str, defect: str, index: int, *, seed: int = 0,
                  image_size: int = DEFAULT_IMAGE_SIZE):
    """Render one image exactly as :func:`generate_dataset` writes it, plus its clean twin.

    Parameters
    ----------
    category : str
        One of :data:`GENERATED_CATEGORIES`.
    split : str
        ``"train"`` or ``"test"``.
    defect : str
        ``"good"`` or one of :func:`defect_types`.
    index : int
        Index of the image inside its folder.

    Returns
    -------
    image : numpy.ndarray of shape (S, S, 3), uint8
    clean : numpy.ndarray of shape (S, S, 3), uint8
        The same image without the defect (equal to ``image`` for ``"good"``).
    mask : numpy.ndarray of shape (S, S), bool
        Where the defect is (all False for ``"good"``).
    """
    render_rng, defect_rng, noise_rng = _sample_rngs(seed, category, split, defect, index)
    render = _render_clean(category, image_size, render_rng)
    noise = _SENSOR_NOISE * noise_rng.standard_normal(render.image.shape, dtype=np.float32)
    clean = _to_uint8(render.image + noise)
    if defect == "good":
        return clean, clean, np.zeros((image_size, image_size), bool)
    image, mask = _apply_defect(category, defect, render, image_size, defect_rng)
    return _to_uint8(image + noise), clean, mask


def _check_categories(categories) -> tuple[str, ...]:
    unknown = [c for c in categories if c not in GENERATED_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown generated categories {unknown}; valid ones are "
                         f"{list(GENERATED_CATEGORIES)}")
    return tuple(categories)


def _parameters(seed, n_train, n_test_good, n_test_defect, image_size, categories) -> dict:
    """Validated generation parameters, as stored in the completion marker."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value, low in (("n_train", n_train, 1), ("n_test_good", n_test_good, 0),
                             ("n_test_defect", n_test_defect, 0), ("image_size", image_size, 64)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    cats = GENERATED_CATEGORIES if categories is None else _check_categories(list(categories))
    if not cats:
        raise ValueError("categories is empty: pass None for all of "
                         f"{list(GENERATED_CATEGORIES)} or a non-empty subset")
    return {"format_version": FORMAT_VERSION, "seed": int(seed), "n_train": int(n_train),
            "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
            "image_size": int(image_size), "categories": list(cats)}


def _jobs(params: dict) -> list[tuple[str, str, str, int]]:
    """(category, split, defect, index) of every image; defects take turns per category."""
    jobs = []
    for category in params["categories"]:
        jobs += [(category, "train", "good", i) for i in range(params["n_train"])]
        jobs += [(category, "test", "good", i) for i in range(params["n_test_good"])]
        kinds = defect_types(category)
        jobs += [(category, "test", kinds[i % len(kinds)], i // len(kinds))
                 for i in range(params["n_test_defect"])]
    return jobs


def _save_png(array: np.ndarray, path: Path) -> None:
    # No metadata and a fixed compression level: same pixels give the same bytes.
    Image.fromarray(array).save(path, format="PNG", compress_level=3)


def generate_dataset(root, seed: int = 0, *, n_train: int = DEFAULT_N_TRAIN,
                     n_test_good: int = DEFAULT_N_TEST_GOOD,
                     n_test_defect: int = DEFAULT_N_TEST_DEFECT,
                     image_size: int = DEFAULT_IMAGE_SIZE, categories=None,
                     progress: bool = True) -> Path:
    """Write the generated dataset into ``root`` in the MVTec AD layout.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to write; it must not exist or be empty. Use :func:`ensure_generated` for a
        cached, crash-safe copy.
    seed : int
        Same seed, same parameters: byte-identical PNG files.
    n_train, n_test_good : int
        Defect-free images per category in ``train/good`` and ``test/good``.
    n_test_defect : int
        Defective images per category, spread round-robin over :func:`defect_types`.
    image_size : int
        Side of the square RGB images, in pixels (at least 64).
    categories : sequence of str, optional
        Subset of :data:`GENERATED_CATEGORIES`; all of them by default.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pathlib.Path
        ``root``. Its marker file (``.complete``, the parameters as JSON) is written last.
    """
    params = _parameters(seed, n_train, n_test_good, n_test_defect, image_size, categories)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty: pass a new or empty folder, or use "
                         "ensure_generated() to reuse or replace a cached copy")
    jobs = _jobs(params)
    for category, split, defect, _ in jobs:  # a few dozen folders at most
        (root / category / split / defect).mkdir(parents=True, exist_ok=True)
        if defect != "good":
            (root / category / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)

    def write(job: tuple[str, str, str, int]) -> None:
        category, split, defect, index = job
        image, _, mask = render_sample(category, split, defect, index, seed=params["seed"],
                                       image_size=params["image_size"])
        _save_png(image, root / category / split / defect / f"{index:03d}.png")
        if defect != "good":
            _save_png(mask.astype(np.uint8) * 255,
                      root / category / "ground_truth" / defect / f"{index:03d}_mask.png")

    # Threads: numpy, scipy and PNG encoding release the GIL for most of each image, and every
    # image has its own generator, so the files do not depend on the scheduling.
    with ThreadPoolExecutor(max_workers=_n_workers()) as pool:
        for _ in tqdm(pool.map(write, jobs), total=len(jobs), desc="generating dataset",
                      unit="img", disable=not progress):
            pass
    (root / MARKER_NAME).write_text(json.dumps(params, sort_keys=True))
    return root


def _n_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------


def default_cache_dir(seed: int = 0) -> Path:
    """``$GPUKSVD_CACHE/generated/v<version>-seed<seed>``, else under ``~/.cache/gpuksvd``."""
    base = os.environ.get("GPUKSVD_CACHE") or Path.home() / ".cache" / "gpuksvd"
    return Path(base) / "generated" / f"v{FORMAT_VERSION}-seed{seed}"


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _looks_generated(root: Path) -> bool:
    """True when every entry of ``root`` is something :func:`generate_dataset` writes."""
    return all(p.name in GENERATED_CATEGORIES or p.name == MARKER_NAME for p in root.iterdir())


def _remove_stale_temporaries(root: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary siblings left by interrupted runs (generation takes seconds)."""
    for stale in root.parent.glob(f".{root.name}.*"):
        try:
            if time.time() - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:  # a concurrent caller removed it first
            pass


def ensure_generated(root=None, seed: int = 0, *, n_train: int = DEFAULT_N_TRAIN,
                     n_test_good: int = DEFAULT_N_TEST_GOOD,
                     n_test_defect: int = DEFAULT_N_TEST_DEFECT,
                     image_size: int = DEFAULT_IMAGE_SIZE, categories=None,
                     progress: bool = True) -> Path:
    """Return a complete generated tree, generating it once into a cache folder.

    A tree is complete when its marker file holds exactly the requested parameters. Otherwise
    the tree is generated into a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half tree that looks complete, and concurrent callers do not
    write into each other's files (the first rename wins; the others reuse its tree).

    Parameters
    ----------
    root : str or os.PathLike, optional
        The tree's folder; :func:`default_cache_dir` of ``seed`` by default. An existing folder
        without a matching marker is replaced only if it holds nothing but generated
        categories; anything else is refused, never deleted.
    seed, n_train, n_test_good, n_test_defect, image_size, categories, progress
        As in :func:`generate_dataset`.

    Returns
    -------
    pathlib.Path
        The folder holding the complete tree.
    """
    params = _parameters(seed, n_train, n_test_good, n_test_defect, image_size, categories)
    root = Path(root) if root is not None else default_cache_dir(params["seed"])
    if _read_marker(root) == params:
        return root
    if root.exists() and not (root.is_dir() and _looks_generated(root)):
        raise ValueError(f"{root} exists and is not a generated dataset: pass another root "
                         "or remove it")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        generate_dataset(work, params["seed"], n_train=n_train, n_test_good=n_test_good,
                         n_test_defect=n_test_defect, image_size=image_size,
                         categories=params["categories"], progress=progress)
        _move_into_place(work, root, params)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # already renamed away unless we lost a race
    return root


def _move_into_place(work: Path, root: Path, params: dict) -> None:
    """Atomically rename ``work`` to ``root``, replacing an outdated or incomplete tree."""
    try:
        os.rename(work, root)  # POSIX also replaces an empty folder
        return
    except OSError:
        if _read_marker(root) == params:  # a concurrent caller finished first
            return
    # An outdated tree (other parameters or format version): move it aside, then swap in ours.
    aside = root.with_name(f".{root.name}.old-{uuid.uuid4().hex}")
    try:
        os.rename(root, aside)
    except OSError:
        if _read_marker(root) == params:
            return
        raise
    try:
        os.rename(work, root)
    except OSError:
        if _read_marker(root) != params:
            raise
    shutil.rmtree(aside, ignore_errors=True)


def main(argv=None) -> Path:
    """``python -m gpuksvd.data.generated [--root R] [--seed S]``: generate and print the root."""
    parser = argparse.ArgumentParser(prog="python -m gpuksvd.data.generated",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None,
                        help=f"output folder (default: $GPUKSVD_CACHE/generated/"
                             f"v{FORMAT_VERSION}-seed<S>, else under ~/.cache/gpuksvd)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = ensure_generated(args.root, args.seed)
    print(root)
    return root


if __name__ == "__main__":
    main()
