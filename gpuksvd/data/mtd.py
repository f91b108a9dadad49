"""Magnetic Tile Defects, as published: one ``MT_<class>/Imgs`` folder per class.

Huang et al., "Surface defect saliency of magnetic tile", The Visual Computer 2020. Each
``<id>.jpg`` has its mask ``<id>.png`` next to it (grayscale with soft edges); images vary in
size. ``MT_Free`` holds the defect-free images: the paper puts a seeded 20% of them in the test
set and trains on the rest; every defect image is a test image.
"""
from __future__ import annotations

from pathlib import Path

from .layout import IMAGE_SUFFIXES, as_path, find_mask, list_images, require_dir, require_images, seeded_test_mask
from .records import ANOMALOUS, NORMAL, ImageRecord

MTD_CATEGORY = "magnetic_tile"
MTD_DEFECTS = ("Blowhole", "Break", "Crack", "Fray", "Uneven")

MTD_LAYOUT = """\
  <root>/                          e.g. /data/Magnetic-tile-defect-datasets
    MT_Free/Imgs/<id>.jpg          defect-free images (a seeded split makes train and test)
    MT_Blowhole/Imgs/<id>.jpg      defect images (all test), with their masks <id>.png
    MT_Break/ MT_Crack/ MT_Fray/ MT_Uneven/   the same"""

# In the published tree every Imgs folder holds <id>.jpg images and <id>.png masks side by
# side, so .png files are masks, never images.
_IMAGE_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s != ".png")
_ROOT_HINT = "pass dataset.root=/path/to/Magnetic-tile-defect-datasets (or set MTD_ROOT)"


def list_mtd(root: str | Path | None, *, seed: int = 0, test_fraction: float = 0.2) -> list[ImageRecord]:
    """List Magnetic Tile Defects with the paper's split of the defect-free images.

    Parameters
    ----------
    root : str or Path
        Folder holding ``MT_Free`` and the ``MT_<defect>`` folders (see ``MTD_LAYOUT``).
    seed : int
        Seed of the split of ``MT_Free``; the same seed gives the same split.
    test_fraction : float
        Fraction of the ``MT_Free`` images put in the test set (rounded to an image count).

    Returns
    -------
    list of ImageRecord
        Category ``"magnetic_tile"``; defect types are the lower-case class names
        (``"blowhole"`` …). A defect image keeps its mask even when the mask is empty: it is
        still anomalous. One without a ``.png`` mask gets ``mask_path=None``.

    Raises
    ------
    FileNotFoundError
        When ``root`` or ``MT_Free/Imgs`` is missing, or there is no ``MT_<defect>`` folder.
    ValueError
        When ``root`` is not set or ``MT_Free/Imgs`` holds no images.
    """
    root = as_path(root, "the Magnetic Tile Defects root", _ROOT_HINT)
    require_dir(root, "Magnetic Tile Defects root", MTD_LAYOUT)
    free = require_images(
        root / "MT_Free" / "Imgs", "Magnetic Tile Defects defect-free folder", MTD_LAYOUT, _IMAGE_SUFFIXES
    )
    defect_dirs = sorted(p for p in root.glob("MT_*") if p.is_dir() and p.name != "MT_Free")
    if not defect_dirs:
        raise FileNotFoundError(
            f"no defect folder MT_<defect> (e.g. {root / 'MT_Crack'}) under {root}: without defect "
            f"images there is nothing to detect. Expected layout:\n{MTD_LAYOUT}"
        )
    is_test = seeded_test_mask(len(free), test_fraction, seed)
    records = [ImageRecord(p, MTD_CATEGORY, "train", NORMAL, "good") for p, t in zip(free, is_test) if not t]
    records += [ImageRecord(p, MTD_CATEGORY, "test", NORMAL, "good") for p, t in zip(free, is_test) if t]
    for folder in defect_dirs:
        images = require_dir(folder / "Imgs", "Magnetic Tile Defects defect folder", MTD_LAYOUT)
        defect = folder.name.removeprefix("MT_").lower()
        for path in list_images(images, _IMAGE_SUFFIXES):
            mask = find_mask(images, path.stem, (".png",))
            records.append(ImageRecord(path, MTD_CATEGORY, "test", ANOMALOUS, defect, mask))
    return records
