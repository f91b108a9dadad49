"""KolektorSDD: electrical commutators, one folder per physical item.

Tabernik et al., "Segmentation-based deep-learning approach for surface-defect detection",
Journal of Intelligent Manufacturing 2020. ``kosNN/PartK.jpg`` has the mask ``PartK_label.bmp``
(values 0/1 or 0/255); an image is defective iff its mask has a non-zero pixel. The paper puts
about 25% of the defect-free images in the test set; every defective image is a test image.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from .layout import as_path, find_mask, list_images, require_dir, seeded_test_mask
from .records import ANOMALOUS, NORMAL, ImageRecord

KSDD_CATEGORY = "ksdd"

KSDD_LAYOUT = """\
  <root>/                          e.g. /data/KolektorSDD
    kos01/ ... kos50/              one folder per item
      Part0.jpg ... Part7.jpg      images (grayscale)
      Part0_label.bmp ...          masks, 0/1 or 0/255; any non-zero pixel = defective image"""

_ROOT_HINT = "pass dataset.root=/path/to/KolektorSDD (or set KSDD_ROOT)"


def list_ksdd(
    root: str | Path | None, *, seed: int = 0, test_fraction: float = 0.25, keep_duplicates_together: bool = True
) -> list[ImageRecord]:
    """List KolektorSDD with a seeded split of the defect-free images.

    Parameters
    ----------
    root : str or Path
        Folder holding the ``kosNN`` folders (see ``KSDD_LAYOUT``).
    seed : int
        Seed of the split; the same seed gives the same split.
    test_fraction : float
        Fraction of the defect-free images put in the test set.
    keep_duplicates_together : bool
        The published data holds identical images in several folders (kos01/kos26,
        kos27/kos34). When True, images with identical file contents form one unit of the
        split, so no test image has a copy in the training set (the test fraction is then
        only approximate).

    Returns
    -------
    list of ImageRecord
        Category ``"ksdd"``; defective images have defect type ``"defect"`` and their mask,
        defect-free images ``"good"`` and ``mask_path=None`` (their mask is empty).

    Raises
    ------
    FileNotFoundError
        When ``root`` is missing or holds no image folder.
    ValueError
        When ``root`` is not set, or an image has no ``<stem>_label`` mask, from which its
        label is read.
    OSError
        When a mask cannot be read (the message names it).
    """
    root = require_dir(as_path(root, "the KolektorSDD root", _ROOT_HINT), "KolektorSDD root", KSDD_LAYOUT)
    images = [p for folder in sorted(root.iterdir()) if folder.is_dir() for p in list_images(folder)
              if not p.stem.endswith("_label")]
    if not images:
        raise FileNotFoundError(
            f"no images in the folders under the KolektorSDD root {root}. Expected layout:\n{KSDD_LAYOUT}"
        )
    normal, defective = [], []
    for path in images:
        mask = find_mask(path.parent, f"{path.stem}_label", (".bmp", ".png"))
        if mask is None:
            raise ValueError(
                f"KolektorSDD image {path} has no mask {path.parent / (path.stem + '_label.bmp')}: "
                f"its label is read from the mask. Expected layout:\n{KSDD_LAYOUT}"
            )
        if _mask_is_empty(mask):
            normal.append(path)
        else:
            defective.append((path, mask))

    units = _duplicate_groups(normal) if keep_duplicates_together else [[p] for p in normal]
    is_test = seeded_test_mask(len(units), test_fraction, seed, sizes=[len(u) for u in units])
    train = sorted(p for unit, t in zip(units, is_test) if not t for p in unit)
    test = sorted(p for unit, t in zip(units, is_test) if t for p in unit)
    return (
        [ImageRecord(p, KSDD_CATEGORY, "train", NORMAL, "good") for p in train]
        + [ImageRecord(p, KSDD_CATEGORY, "test", NORMAL, "good") for p in test]
        + [ImageRecord(p, KSDD_CATEGORY, "test", ANOMALOUS, "defect", m) for p, m in defective]
    )


def _mask_is_empty(mask: Path) -> bool:
    try:
        with Image.open(mask) as image:
            return not np.asarray(image).any()
    except OSError as exc:
        raise OSError(f"cannot read KolektorSDD mask {mask}: {exc}") from exc


def _duplicate_groups(paths: list[Path]) -> list[list[Path]]:
    """Group files with identical bytes, in the order of their first member."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        groups[hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()].append(path)
    return list(groups.values())
