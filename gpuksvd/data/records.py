"""One record per image: the common currency of every dataset listing.

A listing function (``list_mvtec``, ``list_btad`` …) is pure: it walks a folder tree, returns
one :class:`ImageRecord` per image and validates image/mask pairs, so a bad tree fails in
seconds, before any feature is extracted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NORMAL = 0
ANOMALOUS = 1


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes
    ----------
    path : Path
        The image file.
    category : str
        Category (MVTec class, BTAD product id, ``"magnetic_tile"`` …).
    split : str
        ``"train"`` or ``"test"``.
    label : int
        0 for normal (defect-free), 1 for anomalous.
    defect_type : str
        ``"good"`` for normal images, else the defect name.
    mask_path : Path or None
        Ground-truth mask of an anomalous image, ``None`` when there is none. Normal images
        have no mask file: their mask is all zeros.
    """

    path: Path
    category: str
    split: str
    label: int
    defect_type: str
    mask_path: Path | None = None

    @property
    def has_mask(self) -> bool:
        """True when pixel metrics can be computed for this image."""
        return self.label == NORMAL or self.mask_path is not None
