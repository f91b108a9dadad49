"""Defects drawn over a clean render, with the mask of exactly what was drawn.

The defects are small, faint and varied on purpose: the detector should find most of them, not
all, so that the default run does not saturate at 100 % and the settings that the PSDL paper
compares (layer, fusion, K-SVD iterations, sparsity) show in its scores. Each defect draws its
size and strength uniformly from :data:`_RANGES`, from barely visible to plain. Strengths are
grey levels of 255; on a texture, lighter-or-darker marks are scaled by how much the texture's
own pattern hides them (:data:`_CAMOUFLAGE`: brick 1.25, grass 2.4, gravel 1.9), and on an
object (smooth, the same in every image) everything is fainter and smaller.

* ``scratch`` — a hairline 1.2–2.8 px wide, 40–110 px long on textures (20–60 levels lighter or
  darker, times the camouflage), 25–70 px on objects (7–20 levels).
* ``dent`` — a shallow dent or bump, radius 7–16 px on textures (20–60 levels, times the
  camouflage), 4–9 px on objects (10–25 levels); shaded 0.3–1.3 times that, deepest in the
  middle and on the wall away from the light.
* ``tint`` — a region, radius 14–30 px on textures and 10–20 px on objects, whose colour
  shifts by 20–50 (textures) or 8–16 (objects) levels in its most-changed channel, at about the
  same brightness (the channels move in opposite directions); soft-edged.
* ``stain`` — a faint stain, radius 7–16 px (textures) or 5–12 px (objects), 10–30 % or 6–20 %
  opaque, with a darker rim.
* ``pattern`` (textures) — a region, radius 16–30 px, of the same texture turned by 30–90° and
  magnified 1.6–2 times, a shade (7–12 levels, times the camouflage) lighter or darker.
* ``chip`` (objects) — a piece, radius 2.5–5.5 px, broken off the outline: the table shows.

Every defect is one alpha blend ``image = clean·(1 − α) + layer·α`` with
``α = coverage(sdf, edge)·opacity``; the signed distance field ``sdf`` (px, negative inside)
defines the mask (``sdf <= 0``, the half-coverage line), and α is cut to zero beyond the soft
edge, so the mask covers exactly what was drawn. Scratches, dents and tints use
``layer = clean + shift``, which moves every masked pixel even where the texture is dark: at
least 3 grey levels on at least 90 % of the mask, for every defect. Every defect lies inside
the central 224/256 crop that the MVTec preprocessing keeps and covers 0.04–5 % of the image.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from .scenes import GENERATED_TEXTURES, Render, check_categories, render_texture
from .shapes import blob_sdf, curve_sdf, grid, smooth_noise, soft_coverage

TEXTURE_DEFECTS: tuple[str, ...] = ("scratch", "dent", "tint", "stain", "pattern")
OBJECT_DEFECTS: tuple[str, ...] = ("scratch", "dent", "chip", "tint", "stain")

# (low, high) of each defect's size and strength, drawn uniformly, on textures and on objects.
# Sizes are in px at 256 px, strengths in grey levels of 255 unless noted. An object's surface
# is smooth and the same in every image, so a change stands out more there: its defects are
# fainter and smaller.
_RANGES: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    "scratch": {"texture": ((40, 110), (20, 60)), "object": ((25, 70), (7, 20))},  # length
    "dent": {"texture": ((7, 16), (20, 60)), "object": ((4, 9), (10, 25))},  # radius
    "tint": {"texture": ((14, 30), (20, 50)), "object": ((10, 20), (8, 16))},  # radius, largest channel shift
    "stain": {"texture": ((7, 16), (0.1, 0.3)), "object": ((5, 12), (0.06, 0.2))},  # radius, opacity
    "pattern": {"texture": ((16, 30), (1.6, 2.0))},  # radius, magnification
    "chip": {"object": ((2.5, 5.5), (1.0, 1.0))},  # radius, opacity
}
# How much a texture's own light-and-dark pattern hides a lighter or darker mark, as the detector
# sees it: the strengths of scratches and dents and the shade of a pattern are multiplied by it
# (grass hides the most).
# Tints and stains change the colour, which the pattern does not hide: they are not scaled.
_CAMOUFLAGE = {"brick": 1.25, "grass": 2.4, "gravel": 1.9, "nut": 1.0, "pill": 1.0}
_CAMOUFLAGED = ("scratch", "dent")

_CROP_MARGIN = 16 / 256  # MVTec preprocessing keeps the central 224 of 256 pixels
_MIN_DEFECT_AREA, _MAX_DEFECT_AREA = 0.0004, 0.05  # fractions of the image area


class Stroke(NamedTuple):
    """How one defect is drawn (see the module docstring).

    ``sdf`` (S, S) px, negative inside: the mask is ``sdf <= 0``; ``edge``: width of the soft
    contour in px; ``opacity``: scalar or (S, S); ``layer``: (S, S, 3), what is blended in.
    """

    sdf: np.ndarray
    edge: float
    opacity: float | np.ndarray
    layer: np.ndarray


def defect_types(category: str) -> tuple[str, ...]:
    """Defect folders written for ``category`` (one of the generated categories)."""
    check_categories([category])
    return TEXTURE_DEFECTS if category in GENERATED_TEXTURES else OBJECT_DEFECTS


def _pick_center(render: Render, size: int, radius: float, rng: np.random.Generator,
                 inside: float | None = None) -> np.ndarray:
    """A defect centre inside the central crop.

    For objects, ``inside > 0`` puts it at least that many px inside the object, ``inside == 0``
    on the object's outline; ``None`` anywhere in the crop.
    """
    low = _CROP_MARGIN * size + radius + 2
    if render.object_sdf is None or inside is None:
        return rng.uniform(low, size - 1 - low, 2)
    band = render.object_sdf <= -inside if inside > 0 else np.abs(render.outline_sdf) <= 1.5
    y, x = grid(size)
    band &= (np.minimum(y, x) >= low) & (np.maximum(y, x) <= size - 1 - low)
    candidates = np.flatnonzero(band)
    if candidates.size == 0:  # the object is too small for this radius: stay in the crop
        return rng.uniform(low, size - 1 - low, 2)
    flat = candidates[rng.integers(candidates.size)]
    return np.array(divmod(flat, size), dtype=np.float64)


def _on_object(sdf: np.ndarray, render: Render) -> np.ndarray:
    """Clip a defect to the object (objects only): paint and scratches stay on the part."""
    return sdf if render.object_sdf is None else np.maximum(sdf, render.object_sdf)


def _blob(render: Render, size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """The signed distance of an irregular blob anywhere in the crop (textures) or well inside
    the object (objects)."""
    inside = None if render.object_sdf is None else 0.6 * radius
    return _on_object(blob_sdf(size, _pick_center(render, size, radius, rng, inside), radius, rng), render)


def _size_and_strength(category: str, defect: str, render: Render, size: int,
                        rng: np.random.Generator) -> tuple[float, float]:
    """A defect's size (px at this image size) and strength, from :data:`_RANGES`."""
    surface = "texture" if render.object_sdf is None else "object"
    (size_low, size_high), (low, high) = _RANGES[defect][surface]
    scale = _CAMOUFLAGE[category] if defect in _CAMOUFLAGED else 1.0
    return rng.uniform(size_low, size_high) * size / 256, rng.uniform(low, high) * scale


def _local_mean(clean: np.ndarray, sdf: np.ndarray) -> float:
    inside = sdf <= 0
    return float(clean[inside].mean()) if inside.any() else float(clean.mean())


def _scratch(category: str, render: Render, size: int, rng: np.random.Generator) -> Stroke:
    s = size / 256
    # at least 1.2 px wide at any image size, so the mask stays a connected line
    length, levels = _size_and_strength(category, "scratch", render, size, rng)
    width = max(rng.uniform(1.2, 2.8) * s, 1.2)
    is_object = render.object_sdf is not None
    center = _pick_center(render, size, 6 * s if is_object else length / 2, rng,
                          inside=10 * s if is_object else None)
    sdf = _on_object(curve_sdf(size, center, length, width, rng), render)
    amount = levels / 255
    # lighter on dark surfaces, darker on bright ones: a shift towards white would clip on the
    # pill's white half and draw nothing there
    sign = -1.0 if _local_mean(render.image, sdf) > 0.5 else 1.0
    return Stroke(sdf, 1.0, 1.0, render.image + sign * amount)


def _dent(category: str, render: Render, size: int, rng: np.random.Generator) -> Stroke:
    radius, levels = _size_and_strength(category, "dent", render, size, rng)
    radius = max(radius, 3.0)
    sdf = _blob(render, size, radius, rng)
    amount = levels / 255
    depth = np.sin(np.pi / 2 * np.clip(-sdf / radius, 0, 1))  # 0 on the rim, 1 in the middle
    gy, gx = np.gradient(depth)
    # slope towards the top left, about [-1, 1]: one wall catches the light, the other does not
    facing = np.clip(-(gy + gx) / np.sqrt(2) * radius / (np.pi / 2), -1, 1)
    # magnitude in [0.3, 1.3] x amount: never zero inside, so every masked pixel moves
    shading = 0.6 + 0.4 * depth + 0.3 * facing
    bump = rng.random() < 0.5
    # a bump lightens, a dent darkens; on a bright surface (the pill's white half) only a dent
    # shows: lightening would clip
    sign = 1.0 if bump and _local_mean(render.image, sdf) <= 0.7 else -1.0
    return Stroke(sdf, 1.2, 1.0, render.image + (sign * amount * shading)[..., None])


def _tint(category: str, render: Render, size: int, rng: np.random.Generator) -> Stroke:
    s = size / 256
    radius, levels = _size_and_strength(category, "tint", render, size, rng)
    sdf = _blob(render, size, radius, rng)
    direction = rng.standard_normal(3).astype(np.float32)
    direction -= direction.mean()  # channels move in opposite directions: hue, not brightness
    direction /= np.abs(direction).max()
    return Stroke(sdf, 3.0 * s, 1.0, render.image + levels / 255 * direction)


def _stain(category: str, render: Render, size: int, rng: np.random.Generator) -> Stroke:
    s = size / 256
    radius, strength = _size_and_strength(category, "stain", render, size, rng)
    radius = max(radius, 3.5)
    sdf = _blob(render, size, radius, rng)
    hue = _STAIN_COLOURS[category][rng.integers(len(_STAIN_COLOURS[category]))]
    rim = np.exp(-(((sdf + 1.5 * s) / (1.5 * s)) ** 2))  # dried edge of a drop: more pigment
    opacity = strength * (0.8 + 0.2 * smooth_noise(size, rng, 3 * s)) * (1 + 0.8 * rim)
    layer = np.broadcast_to(np.asarray(hue, np.float32), render.image.shape)
    return Stroke(sdf, 2.0 * s, np.clip(opacity, 0, 1), layer)


def _pattern(category: str, render: Render, size: int, rng: np.random.Generator) -> Stroke:
    s = size / 256
    radius, magnification = _size_and_strength(category, "pattern", render, size, rng)
    sdf = _blob(render, size, radius, rng)
    # grass and gravel look alike at every angle, so the scale always changes too
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(30, 90)
    layer = render_texture(category, size, rng, turn=turn, magnification=magnification)
    # Another batch of the material, a shade lighter or darker: without it, where both textures
    # are flat (inside a brick) the region is replaced by nearly the same colour, drawn but unseen.
    shade = rng.choice([-1.0, 1.0]) * rng.uniform(7, 12) * _CAMOUFLAGE[category] / 255
    return Stroke(sdf, 1.5 * s, 1.0, layer + shade)


def _chip(category: str, render: Render, size: int, rng: np.random.Generator) -> Stroke:
    radius, _ = _size_and_strength(category, "chip", render, size, rng)
    radius = max(radius, 2.0)
    center = _pick_center(render, size, radius, rng, inside=0.0)
    y, x = grid(size)
    disc = np.hypot(y - center[0], x - center[1]) - radius
    opacity = soft_coverage(render.object_sdf, 1.2)  # only the object's own pixels vanish
    return Stroke(np.maximum(disc, render.object_sdf), 1.2, opacity, render.background)


_DRAW = {"scratch": _scratch, "dent": _dent, "tint": _tint, "stain": _stain, "pattern": _pattern,
         "chip": _chip}

# Stain hues chosen far from each surface's own colours, so the stain reads as foreign.
_STAIN_COLOURS = {
    "brick": ((0.10, 0.25, 0.75), (0.15, 0.55, 0.25), (0.05, 0.05, 0.08)),
    "grass": ((0.75, 0.10, 0.55), (0.85, 0.35, 0.05), (0.15, 0.15, 0.70)),
    "gravel": ((0.80, 0.10, 0.10), (0.10, 0.30, 0.80), (0.10, 0.55, 0.15)),
    "nut": ((0.22, 0.15, 0.08), (0.05, 0.05, 0.05), (0.45, 0.30, 0.10)),
    "pill": ((0.22, 0.15, 0.08), (0.05, 0.05, 0.05), (0.15, 0.30, 0.70)),
}


def draw_defect(category: str, defect: str, render: Render, size: int,
                rng: np.random.Generator) -> Stroke:
    """One attempt at drawing ``defect`` over ``render``: its :class:`Stroke`."""
    if defect not in _DRAW:  # pragma: no cover - defect names come from defect_types()
        raise ValueError(f"unknown defect {defect!r}")
    stroke = _DRAW[defect](category, render, size, rng)
    return stroke._replace(layer=np.asarray(stroke.layer, np.float32))


def apply_defect(category: str, defect: str, render: Render, size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Composite a defect over the clean render; returns (image (S, S, 3), mask (S, S) bool)."""
    area = size * size
    for _ in range(50):  # redraw the rare defect that falls mostly off an object
        sdf, edge, opacity, layer = draw_defect(category, defect, render, size, rng)
        mask = sdf <= 0
        if _MIN_DEFECT_AREA * area <= mask.sum() <= _MAX_DEFECT_AREA * area:
            # Nothing is drawn farther than the soft edge from the mask: where a defect only
            # grazes an object the overlap is a faint sliver that the mask would not cover.
            distance = ndimage.distance_transform_edt(~mask)
            alpha = soft_coverage(sdf, edge) * opacity * np.clip(edge / 2 + 1 - distance, 0, 1)
            image = render.image * (1 - alpha[..., None]) + layer * alpha[..., None]
            return image.astype(np.float32), mask
    raise RuntimeError(f"could not place a {defect!r} defect on {category!r} at size {size}")
