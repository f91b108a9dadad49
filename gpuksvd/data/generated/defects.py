"""Defects drawn over a clean render, with the mask of exactly what was drawn.

Defects are signed distance fields: the mask is the region inside the defect's contour (its
half-coverage line), so it covers exactly what was drawn. Every defect lies inside the central
224/256 crop that the MVTec preprocessing keeps, and covers roughly 0.6–5 % of the image.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .scenes import GENERATED_TEXTURES, Render, check_categories, render_texture
from .shapes import blob_sdf, curve_sdf, grid, smooth_noise, soft_coverage

TEXTURE_DEFECTS: tuple[str, ...] = ("scratch", "hole", "stain", "foreign_patch")
OBJECT_DEFECTS: tuple[str, ...] = ("scratch", "missing", "color", "contamination")

_CROP_MARGIN = 16 / 256  # MVTec preprocessing keeps the central 224 of 256 pixels
_MIN_DEFECT_AREA, _MAX_DEFECT_AREA = 0.006, 0.07  # fractions of the image area


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


def _contrasting(mean_colour: np.ndarray) -> np.ndarray:
    """Near-black on bright content, near-white on dark content."""
    return (np.full(3, 0.06, np.float32) if mean_colour.mean() > 0.42
            else np.array([0.95, 0.94, 0.90], np.float32))


def draw_defect(category: str, defect: str, render: Render, size: int,
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
        sdf = curve_sdf(size, center, length, width, rng)
        if is_object:
            sdf = np.maximum(sdf, render.object_sdf)
        near = sdf <= 0
        colour = _contrasting(clean[near].mean(axis=0) if near.any() else clean.mean(axis=(0, 1)))
        layer = np.broadcast_to(colour, clean.shape)
    elif defect == "hole":
        radius = rng.uniform(14, 24) * s
        sdf = blob_sdf(size, _pick_center(render, size, radius, rng), radius, rng)
        depth = np.clip(-sdf / radius, 0, 1)[..., None]  # 0 on the rim, 1 in the middle
        layer = np.array([0.16, 0.14, 0.13], np.float32) * (1 - depth) + 0.03 * depth
    elif defect == "stain":
        radius = rng.uniform(18, 32) * s
        sdf = blob_sdf(size, _pick_center(render, size, radius, rng), radius, rng)
        hue = _STAIN_COLOURS[category][rng.integers(len(_STAIN_COLOURS[category]))]
        layer = np.broadcast_to(np.asarray(hue, np.float32), clean.shape)
        edge, opacity = 4.0 * s, 0.8 + 0.15 * smooth_noise(size, rng, 6 * s)
    elif defect == "foreign_patch":
        radius = rng.uniform(18, 30) * s
        sdf = blob_sdf(size, _pick_center(render, size, radius, rng), radius, rng)
        others = [t for t in GENERATED_TEXTURES if t != category]
        layer = render_texture(others[rng.integers(len(others))], size, rng)
    elif defect == "missing":
        radius = rng.uniform(20, 30) * s
        center = _pick_center(render, size, radius, rng, inside=0.0)
        y, x = grid(size)
        disc = np.hypot(y - center[0], x - center[1]) - radius
        sdf = np.maximum(disc, render.object_sdf)
        opacity = soft_coverage(render.object_sdf, 1.2)  # only the object's own pixels vanish
        layer = render.background
    elif defect in ("color", "contamination"):
        radius = rng.uniform(14, 24) * s
        center = _pick_center(render, size, radius, rng, inside=0.5 * radius)
        sdf = np.maximum(blob_sdf(size, center, radius, rng), render.object_sdf)
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
