"""One record per image: the common currency of every dataset listing.

A listing function (``list_mvtec``, ``list_btad`` …) is pure: it walks a folder tree, returns
one :class:`ImageRecord` per image and validates image/mask pairs, so a bad tree fails in
seconds, before any feature is extracted.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
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


def files_fingerprint(paths: Iterable[str | Path]) -> str:
    """A hex digest of files' absolute paths, sizes and modification times, in order.

    Two listings with the same fingerprint name the same files in the same state (a rewritten,
    fixed or replaced file changes its size or modification time), so results computed from one
    hold for the other. Reads no file content: fast on any dataset.

    Raises
    ------
    OSError
        When a file does not exist.
    """
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path).absolute()
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def records_fingerprint(records: Iterable[ImageRecord]) -> str:
    """:func:`files_fingerprint` of the records' images and masks, with their split, label,
    category and defect type: the identity of a dataset listing."""
    digest = hashlib.sha256()
    records = list(records)
    for record in records:
        digest.update(f"{record.split}\0{record.label}\0{record.category}\0{record.defect_type}\n".encode())
    digest.update(files_fingerprint(path for record in records for path in (record.path, record.mask_path)
                                    if path).encode())
    return digest.hexdigest()
