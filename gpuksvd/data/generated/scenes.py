"""Clean, defect-free renders of the generated categories.

Texture categories are cut from the real photographs that scikit-image ships inside its wheel
(``skimage.data.brick``, ``grass`` and ``gravel``: no download), tinted, with random crops,
flips, small rotations and scales and a mild brightness jitter. Object categories (a hex
nut, a two-colour capsule) are rendered from signed distance functions with a few pixels of
position and a few degrees of rotation variation, and part-to-part variation of lighting,
finish and colour (a few percent): without it every good part would score alike and the
faint defects of :mod:`.defects` would all rank above them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .shapes import grid, smooth_noise, soft_coverage, square_window

GENERATED_TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
GENERATED_OBJECTS: tuple[str, ...] = ("nut", "pill")
GENERATED_CATEGORIES: tuple[str, ...] = GENERATED_TEXTURES + GENERATED_OBJECTS

# The grey skimage.data photograph of each texture, and the (dark, bright) RGB its grey ramp
# is mapped to. (hubble_deep_field, the other stationary bundled photo, was tried as a fourth
# texture: its rare bright galaxies score like defects.)
TEXTURE_SOURCES: dict[str, tuple[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "brick": ("brick", ((0.20, 0.08, 0.06), (0.95, 0.68, 0.55))),
    "grass": ("grass", ((0.05, 0.12, 0.03), (0.72, 0.90, 0.45))),
    "gravel": ("gravel", ((0.13, 0.12, 0.11), (0.93, 0.89, 0.80))),
}


def check_categories(categories) -> tuple[str, ...]:
    unknown = [c for c in categories if c not in GENERATED_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown generated categories {unknown}; valid ones are "
                         f"{list(GENERATED_CATEGORIES)}")
    return tuple(categories)


@functools.lru_cache(maxsize=None)
def load_texture_source(category: str) -> np.ndarray:
    """The grey photograph, bundled with scikit-image, that a texture category is cut from.

    Returns
    -------
    numpy.ndarray of shape (H, W), float32 in [0, 1]
        Tinted after cropping (the tints are in ``TEXTURE_SOURCES``).
    """
    import skimage.data  # the three photographs ship inside the wheel: no pooch, no network

    loader, _ = TEXTURE_SOURCES[category]
    return np.asarray(getattr(skimage.data, loader)(), dtype=np.float32) / 255.0


@dataclass
class Render:
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


def render_texture(category: str, size: int, rng: np.random.Generator, *, turn: float = 0.0,
                   magnification: float = 1.0) -> np.ndarray:
    """A random crop of a texture photograph: flip, rotation of a few degrees, scale ±10 %.

    ``turn`` (degrees) and ``magnification`` (>= 1 makes the texture coarser) are added on top:
    the ``pattern`` defect fills a region with the same texture turned and magnified.
    Returns an array of shape (size, size, 3), float32 in [0, 1].
    """
    if not 1.0 <= magnification <= 2.0:  # a finer texture would need more than the 512-px photograph
        raise ValueError(f"magnification must be in [1, 2], got {magnification}")
    source = load_texture_source(category)
    height, width = source.shape[:2]
    angle = np.deg2rad(rng.uniform(-6.0, 6.0) + turn)
    # scale is source pixels per output pixel; the photographs are 512 px, the crops 256 at 1:1.
    scale = rng.uniform(0.9, 1.1) * 256 / size / magnification
    flip = np.where(rng.random(2) < 0.5, -1.0, 1.0).astype(np.float32)
    half = (size - 1) / 2
    extent = half * scale * (abs(np.cos(angle)) + abs(np.sin(angle))) + 1
    cy = rng.uniform(extent, height - 1 - extent)
    cx = rng.uniform(extent, width - 1 - extent)
    y, x = grid(size)
    v, u = (y - half) * flip[0] * scale, (x - half) * flip[1] * scale
    cos, sin = float(np.cos(angle)), float(np.sin(angle))  # python floats keep float32
    coords = [cy + cos * v + sin * u, cx - sin * v + cos * u]
    grey = ndimage.map_coordinates(source, coords, order=1, mode="nearest")[..., None]
    dark, bright = (np.asarray(t, np.float32) for t in TEXTURE_SOURCES[category][1])
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
    y, x = grid(size)
    dy, dx = y - center[0], x - center[1]
    cos, sin = float(np.cos(angle)), float(np.sin(angle))  # python floats keep float32

    def to_image(u, v):
        return np.stack([center[0] + sin * u + cos * v, center[1] + cos * u - sin * v], axis=-1)

    return cos * dx + sin * dy, -sin * dx + cos * dy, s, to_image


def _with_shadow(background: np.ndarray, coverage: np.ndarray, s: float) -> np.ndarray:
    """Darken ``background`` (S, S, 3) under a soft shadow cast down-right by ``coverage``."""
    shadow = ndimage.gaussian_filter(ndimage.shift(coverage, 4 * s, order=1), 4 * s)
    return background * (1 - 0.35 * shadow)[..., None]


def _render_nut(size: int, rng: np.random.Generator) -> Render:
    """A hex nut seen from above on a light grey table."""
    u, v, s, _ = _object_frame(size, rng)
    apothem, hole_radius = 74 * s, 30 * s
    radius = np.hypot(u, v)
    hexagon = np.max([np.abs(u * np.cos(a) + v * np.sin(a)) for a in np.deg2rad([0, 60, 120])],
                     axis=0) - apothem
    sdf = np.maximum(hexagon, hole_radius - radius)
    coverage = soft_coverage(sdf, 1.2)

    y, _ = grid(size)
    table = np.array([0.70, 0.71, 0.69], np.float32) * (0.92 + 0.08 * y / size)[..., None]
    table = np.broadcast_to(table * rng.uniform(0.95, 1.05), (size, size, 3))
    # Part-to-part variation (lighting, finish, lathe marks, grain): without it every good nut
    # scores the same and any change at all, however faint, ranks above all of them.
    light_angle = np.deg2rad(225 + rng.uniform(-25, 25))  # lit from about the top left
    light = 0.90 + 0.14 * (u * np.cos(light_angle) + v * np.sin(light_angle)) / (np.sqrt(2) * apothem)
    chamfer = 1 - 0.30 * np.clip((radius - 1.02 * apothem) / (3 * s), 0, 1)
    thread = 1 - 0.35 * np.clip((hole_radius + 8 * s - radius) / (2 * s), 0, 1)
    turned = 1 + rng.uniform(0.015, 0.04) * np.sin(radius * rng.uniform(1.5, 1.9) / s + rng.uniform(0, 2 * np.pi))
    grain = 1 + rng.uniform(0.01, 0.04) * smooth_noise(size, rng, rng.uniform(3, 8) * s)
    finish = np.array([0.50, 0.51, 0.55], np.float32) * rng.uniform(0.92, 1.08) + rng.uniform(-0.015, 0.015, 3)
    metal = finish.astype(np.float32) * (light * chamfer * thread * turned * grain)[..., None]
    image = _with_shadow(table, coverage, s) * (1 - coverage[..., None]) + metal * coverage[..., None]
    return Render(image.astype(np.float32), table, sdf, hexagon)


def _render_pill(size: int, rng: np.random.Generator) -> Render:
    """A red and white capsule with a few red speckles on a dark tray."""
    u, v, s, to_image = _object_frame(size, rng)
    half_length, radius = 60 * s, 36 * s
    sdf = np.hypot(np.maximum(np.abs(u) - half_length, 0), v) - radius
    coverage = soft_coverage(sdf, 1.2)

    y, x = grid(size)
    table = np.array([0.14, 0.15, 0.18], np.float32) * (1.05 - 0.1 * x / size)[..., None]
    table = np.broadcast_to(table * rng.uniform(0.9, 1.1), (size, size, 3))
    # batch-to-batch variation of the gelatine's colours (see _render_nut for why)
    red = np.array([0.78, 0.24, 0.18], np.float32) * rng.uniform(0.94, 1.04) + rng.uniform(-0.02, 0.02, 3)
    white = np.array([0.93, 0.91, 0.86], np.float32) * rng.uniform(0.96, 1.02)
    red, white = red.astype(np.float32), white.astype(np.float32)
    side = np.clip(0.5 + u / (1.5 * s), 0, 1)[..., None]  # 0 on the red half, 1 on the white
    body = red * (1 - side) + white * side
    # speckles of the white half: normal variation, far smaller than any defect
    n_speckles = rng.integers(12, 24)
    spots = to_image(rng.uniform(4 * s, half_length + 0.6 * radius, n_speckles),
                     rng.uniform(-0.7, 0.7, n_speckles) * radius)
    speckle = np.zeros_like(u)
    for spot in spots:  # a couple of dozen dots, each drawn in its own few-pixel window
        window, wy, wx = square_window(size, spot, 1.3 * s + 2)
        dot = soft_coverage(np.hypot(wy - spot[0], wx - spot[1]) - 1.3 * s, 1.0)
        speckle[window] = np.maximum(speckle[window], dot)
    body = body * (1 - 0.45 * speckle[..., None]) + np.array([0.55, 0.2, 0.15]) * 0.45 * speckle[..., None]
    across = np.clip(np.abs(v) / radius, 0, 1)
    cylinder = 0.72 + 0.28 * np.sqrt(1 - across**2)
    seam = 1 - 0.25 * np.exp(-(u / (1.2 * s)) ** 2)
    highlight = rng.uniform(0.15, 0.26) * np.exp(-(((v + 0.45 * radius) / (0.12 * radius)) ** 2))
    highlight = highlight * (np.abs(u) < half_length + 0.5 * radius)
    pill = body * (cylinder * seam)[..., None] + highlight[..., None]
    pill = np.clip(pill, 0, 1)
    image = _with_shadow(table, coverage, s) * (1 - coverage[..., None]) + pill * coverage[..., None]
    return Render(image.astype(np.float32), table, sdf, sdf)


def render_clean(category: str, size: int, rng: np.random.Generator) -> Render:
    """A defect-free, noise-free render of one image of ``category``."""
    if category == "nut":
        return _render_nut(size, rng)
    if category == "pill":
        return _render_pill(size, rng)
    return Render(render_texture(category, size, rng))
