"""MVTec AD (and Rd-MVTec, which lists the same tree): one record per image.

Bergmann et al., "MVTec AD — a comprehensive real-world dataset for unsupervised anomaly
detection", CVPR 2019. The generated default dataset is written in this layout too.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .layout import as_path, category_folders, find_mask, list_images, require_dir, require_images
from .records import ANOMALOUS, NORMAL, ImageRecord

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS = (
    "bottle", "cable", "capsule", "hazelnut", "metal_nut",
    "pill", "screw", "toothbrush", "transistor", "zipper",
)

MVTEC_LAYOUT = """\
  <root>/                                  e.g. /data/mvtec_anomaly_detection
    <category>/                            bottle, cable, ..., zipper (one folder each)
      train/good/*.png                     defect-free training images
      test/good/*.png                      defect-free test images
      test/<defect>/*.png                  defective test images, one folder per defect type
      ground_truth/<defect>/<name>_mask.png   0/255 mask of test/<defect>/<name>.png"""

_ROOT_HINT = "pass dataset.root=/path/to/mvtec_anomaly_detection (or set MVTEC_ROOT)"


def list_mvtec(root: str | Path | None, categories: Sequence[str] | str | None = None) -> list[ImageRecord]:
    """List an MVTec AD tree: training and test images of the chosen categories.

    Parameters
    ----------
    root : str or Path
        The folder that holds one sub-folder per category (see ``MVTEC_LAYOUT``).
    categories : sequence of str or str, optional
        Categories to list, in this order. ``None`` lists every sub-folder of ``root`` that
        has a ``train`` folder, sorted by name.

    Returns
    -------
    list of ImageRecord
        Train records (``train/good``, all normal) then test records per category. A defective
        test image whose ``<name>_mask.png`` is missing gets ``mask_path=None``.

    Raises
    ------
    FileNotFoundError
        When ``root``, a requested category, or its ``train/good`` or ``test`` folder is missing.
    ValueError
        When ``root`` is not set, or a training folder holds no images.
    """
    root = require_dir(as_path(root, "the MVTec AD root", _ROOT_HINT), "MVTec AD root", MVTEC_LAYOUT)
    records: list[ImageRecord] = []
    for folder in category_folders(root, categories, "MVTec AD category", "Categories", MVTEC_LAYOUT):
        records += _list_category(folder)
    return records


def _list_category(folder: Path) -> list[ImageRecord]:
    category = folder.name
    train = require_images(folder / "train" / "good", f"MVTec AD training folder of {category!r}", MVTEC_LAYOUT)
    test_dir = require_dir(folder / "test", f"MVTec AD test folder of {category!r}", MVTEC_LAYOUT)
    records = [ImageRecord(path, category, "train", NORMAL, "good") for path in train]
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for path in list_images(defect_dir):
            if defect == "good":
                records.append(ImageRecord(path, category, "test", NORMAL, "good"))
            else:
                mask = find_mask(folder / "ground_truth" / defect, f"{path.stem}_mask")
                records.append(ImageRecord(path, category, "test", ANOMALOUS, defect, mask))
    if len(records) == len(train):
        raise ValueError(
            f"MVTec AD test folder of {category!r}, {test_dir}, holds no images. Expected layout:\n{MVTEC_LAYOUT}"
        )
    return records
