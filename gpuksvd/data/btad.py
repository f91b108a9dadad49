"""BTAD (beanTech Anomaly Detection): three industrial products, ok/ko images.

Mishra et al., "VT-ADL: A vision transformer network for image anomaly detection and
localization", ISIE 2021. Images are .bmp or .png depending on the product, and so are the
masks, which share the image's file stem.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .layout import as_path, category_folders, find_mask, list_images, require_dir, require_images
from .records import ANOMALOUS, NORMAL, ImageRecord

BTAD_PRODUCTS = ("01", "02", "03")

BTAD_LAYOUT = """\
  <root>/                          e.g. /data/BTech_Dataset_transformed
    01/ 02/ 03/                    one folder per product
      train/ok/*.bmp|*.png         defect-free training images
      test/ok/*.bmp|*.png          defect-free test images
      test/ko/*.bmp|*.png          defective test images
      ground_truth/ko/<stem>.png|<stem>.bmp   mask of test/ko/<stem>.*"""

_ROOT_HINT = "pass dataset.root=/path/to/BTech_Dataset_transformed (or set BTAD_ROOT)"


def list_btad(root: str | Path | None, categories: Sequence[str] | str | None = None) -> list[ImageRecord]:
    """List a BTAD tree: training and test images of the chosen products.

    Parameters
    ----------
    root : str or Path
        The folder that holds the product folders ``01``, ``02``, ``03`` (see ``BTAD_LAYOUT``).
    categories : sequence of str or str, optional
        Products to list; ``None`` lists every sub-folder of ``root`` with a ``train`` folder.

    Returns
    -------
    list of ImageRecord
        One record per image; a ``ko`` image without a mask file gets ``mask_path=None``.

    Raises
    ------
    FileNotFoundError
        When ``root``, a requested product, or its ``train/ok`` or ``test`` folder is missing.
    ValueError
        When ``root`` is not set, or a training folder holds no images.
    """
    root = require_dir(as_path(root, "the BTAD root", _ROOT_HINT), "BTAD root", BTAD_LAYOUT)
    records: list[ImageRecord] = []
    for folder in category_folders(root, categories, "BTAD product", "Products", BTAD_LAYOUT):
        records += _list_product(folder)
    return records


def _list_product(folder: Path) -> list[ImageRecord]:
    product = folder.name
    train = require_images(folder / "train" / "ok", f"BTAD training folder of product {product!r}", BTAD_LAYOUT)
    require_dir(folder / "test", f"BTAD test folder of product {product!r}", BTAD_LAYOUT)
    records = [ImageRecord(path, product, "train", NORMAL, "good") for path in train]
    records += [ImageRecord(path, product, "test", NORMAL, "good") for path in list_images(folder / "test" / "ok")]
    for path in list_images(folder / "test" / "ko"):
        mask = find_mask(folder / "ground_truth" / "ko", path.stem, (".png", ".bmp"))
        records.append(ImageRecord(path, product, "test", ANOMALOUS, "ko", mask))
    if len(records) == len(train):
        raise ValueError(
            f"BTAD test folders of product {product!r} ({folder / 'test' / 'ok'}, {folder / 'test' / 'ko'}) "
            f"hold no images. Expected layout:\n{BTAD_LAYOUT}"
        )
    return records
