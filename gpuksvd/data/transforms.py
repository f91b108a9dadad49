"""Geometry applied identically to an image and its mask: pre-crop, resize, rotate, crop.

The paper's preprocessing per dataset, as :class:`Preprocess` settings:

=============  ==========================================================================
MVTec AD       ``resize=256, crop=224``
Rd-MVTec       ``resize=256, crop=224, random_rotation=10, random_crop=True`` (seeded)
BTAD, MTD      ``resize=256, crop=None``
KolektorSDD    ``pre_crop=(1000, 500), resize=(500, 250), crop=None``
=============  ==========================================================================

Random draws come from a generator seeded with ``(seed, index)``: the same image gets the same
rotation and crop whatever the worker order, and the mask gets exactly the image's geometry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

Size = tuple[int, int]

#: Filters an image can be resized with. ``bilinear``: torchvision's, antialiased (gpuksvd's
#: default); ``bicubic`` and ``lanczos``: PIL's, as the PSDL authors' code resizes (torchvision's
#: ``Resize`` on PIL images, bicubic for MVTec AD, ``Image.ANTIALIAS`` = Lanczos for BTAD, MTD
#: and KolektorSDD).
INTERPOLATIONS = ("bilinear", "bicubic", "lanczos")
_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def _as_size(value: int | tuple[int, int] | list[int] | None, name: str) -> Size | None:
    """``int`` -> ``(s, s)``; a pair -> ``(h, w)``; None stays None. Sizes must be positive."""
    if value is None:
        return None
    size = (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {value!r}")
    return size


@dataclass(frozen=True)
class Preprocess:
    """Geometric preprocessing of one image and its mask.

    Steps, in order: center-crop to ``pre_crop``, resize to ``resize``, rotate by a random
    angle in ``[-random_rotation, random_rotation]`` degrees (nearest neighbour, zeros
    outside), crop to ``crop`` (at the center, or at a random position when ``random_crop``).

    Parameters
    ----------
    resize : int or (int, int)
        Size after resizing, ``(height, width)``. An int means a square ``s x s`` output (not
        torchvision's shorter-side rule), so images of varying shapes batch together.
        Images are resized bilinearly with antialiasing, masks with nearest neighbour.
    crop : int or (int, int), optional
        Size of the crop taken from the resized image; ``None`` for no crop.
    pre_crop : int or (int, int), optional
        Center crop applied before resizing (KolektorSDD: ``(1000, 500)``).
    random_rotation : float
        Largest rotation in degrees; 0 for none.
    random_crop : bool
        Crop at a uniformly random position instead of the center (needs ``crop``).
    seed : int
        Seed of the random rotation and crop.
    interpolation : {"bilinear", "bicubic", "lanczos"}
        Filter of the image resize (:data:`INTERPOLATIONS`); masks always use nearest neighbour.
    """

    resize: int | Size = 256
    crop: int | Size | None = 224
    pre_crop: int | Size | None = None
    random_rotation: float = 0.0
    random_crop: bool = False
    seed: int = 0
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise the sizes to (h, w) tuples in place once.
        object.__setattr__(self, "resize", _as_size(self.resize, "resize"))
        object.__setattr__(self, "crop", _as_size(self.crop, "crop"))
        object.__setattr__(self, "pre_crop", _as_size(self.pre_crop, "pre_crop"))
        if self.resize is None:
            raise ValueError("resize must be set, e.g. 256 or [500, 250]")
        if self.crop is not None and (self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]):
            raise ValueError(
                f"crop {self.crop} is larger than the resized image {self.resize}: lower crop or raise resize"
            )
        if self.random_crop and self.crop is None:
            raise ValueError("random_crop=True needs a crop size (crop=224, for instance)")
        if not 0 <= self.random_rotation <= 180:
            raise ValueError(f"random_rotation must be in [0, 180] degrees, got {self.random_rotation}")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")

    @property
    def output_size(self) -> Size:
        """``(height, width)`` of every output image and mask."""
        return self.crop or self.resize

    def _resize_image(self, image: torch.Tensor) -> torch.Tensor:
        height, width = self.resize
        if self.interpolation == "bilinear":
            return F.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)
        # PIL's filters, exactly as the reference code resizes (on 8-bit images).
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        resized = pil.resize((width, height), _PIL_FILTERS[self.interpolation])
        return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()

    def describe(self) -> dict:
        """JSON-able settings (sizes as ``[height, width]`` lists); :meth:`from_description` inverts it."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_description(cls, description: dict) -> Preprocess:
        """The preprocessing a :meth:`describe` dict records (unknown keys are refused)."""
        return cls(**description)

    def without_randomness(self) -> Preprocess:
        """The same geometry with the random steps off (no rotation, centre crop): how new images
        are scored with a model trained on randomly rotated and cropped ones."""
        return replace(self, random_rotation=0.0, random_crop=False)

    def sample(self, index: int) -> tuple[float, int, int]:
        """The random draws for image ``index``: ``(angle in degrees, crop top, crop left)``.

        Deterministic in ``(seed, index)``; ``(0.0, center top, center left)`` when the
        preprocessing has no random step.
        """
        rng = np.random.default_rng([int(self.seed), int(index)])
        angle = float(rng.uniform(-self.random_rotation, self.random_rotation)) if self.random_rotation else 0.0
        (height, width), (crop_h, crop_w) = self.resize, self.output_size
        if self.random_crop:
            top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        else:
            # Same rounding as torchvision's center_crop.
            top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        return angle, top, left

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the geometry to an image and its mask.

        Parameters
        ----------
        image : torch.Tensor of shape (3, H, W), uint8
        mask : torch.Tensor of shape (1, H, W), uint8
            Same size as ``image``.
        index : int
            Index of the image in its dataset: seeds the random steps.

        Returns
        -------
        image : torch.Tensor of shape (3, h, w), uint8
        mask : torch.Tensor of shape (1, h, w), uint8
            ``(h, w)`` is :attr:`output_size`.
        """
        if self.pre_crop is not None:
            image, mask = F.center_crop(image, list(self.pre_crop)), F.center_crop(mask, list(self.pre_crop))
        image = self._resize_image(image)
        # NEAREST_EXACT samples at pixel centres like the bilinear image resize; plain NEAREST
        # would shift the mask by up to half a pixel against its image.
        mask = F.resize(mask, list(self.resize), interpolation=InterpolationMode.NEAREST_EXACT)
        angle, top, left = self.sample(index)
        if angle:
            image = F.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=0)
            mask = F.rotate(mask, angle, interpolation=InterpolationMode.NEAREST, fill=0)
        height, width = self.output_size
        return F.crop(image, top, left, height, width), F.crop(mask, top, left, height, width)
