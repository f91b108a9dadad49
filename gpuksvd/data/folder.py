"""Any user data: a folder of normal training images, plus optional test and mask folders."""
from __future__ import annotations

from pathlib import Path

from .layout import IMAGE_SUFFIXES, find_mask, list_images, require_dir, require_images, seeded_test_mask
from .records import ANOMALOUS, NORMAL, ImageRecord

FOLDER_LAYOUT = """\
  train_dir/*.png|*.jpg|...        defect-free training images (required)
  test_normal_dir/*                defect-free test images (optional; or split_ratio)
  test_anomalous_dir/*             defective test images (optional)
  mask_dir/<stem>.png or <stem>_mask.png   mask of test_anomalous_dir/<stem>.* (optional)"""


def list_folder(
    train_dir: str | Path,
    *,
    test_normal_dir: str | Path | None = None,
    test_anomalous_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    split_ratio: float | None = None,
    seed: int = 0,
    category: str = "folder",
) -> list[ImageRecord]:
    """List user folders of images as one category.

    Parameters
    ----------
    train_dir : str or Path
        Folder of defect-free training images.
    test_normal_dir : str or Path, optional
        Folder of defect-free test images.
    test_anomalous_dir : str or Path, optional
        Folder of defective test images (defect type ``"anomalous"``).
    mask_dir : str or Path, optional
        Masks of the defective images, matched by file stem: ``<stem>.<ext>`` or
        ``<stem>_mask.<ext>``. A defective image without one gets ``mask_path=None``.
    split_ratio : float, optional
        When there is no ``test_normal_dir``: the fraction of ``train_dir`` images moved to the
        test set, chosen with ``seed``.
    seed : int
        Seed of the ``split_ratio`` split.
    category : str
        Category name of every record.

    Returns
    -------
    list of ImageRecord

    Raises
    ------
    FileNotFoundError
        When a given folder does not exist.
    ValueError
        When ``train_dir`` holds no images, both ``test_normal_dir`` and ``split_ratio`` are
        given, or ``mask_dir`` is ``test_anomalous_dir``.
    """
    if test_normal_dir is not None and split_ratio is not None:
        raise ValueError(
            f"give either test_normal_dir ({test_normal_dir}) or split_ratio ({split_ratio}), not both: "
            "split_ratio moves training images to the test set when there is no normal test folder"
        )
    train = require_images(Path(train_dir), "training folder", FOLDER_LAYOUT)
    if split_ratio is not None:
        is_test = seeded_test_mask(len(train), split_ratio, seed)
        test_normal = [p for p, t in zip(train, is_test) if t]
        train = [p for p, t in zip(train, is_test) if not t]
        if not train:
            raise ValueError(
                f"split_ratio={split_ratio} leaves no training image out of the {len(is_test)} in {train_dir}"
            )
    elif test_normal_dir is not None:
        test_normal = list_images(require_dir(Path(test_normal_dir), "normal test folder", FOLDER_LAYOUT))
    else:
        test_normal = []
    anomalous = []
    if test_anomalous_dir is not None:
        anomalous = list_images(require_dir(Path(test_anomalous_dir), "anomalous test folder", FOLDER_LAYOUT))
    masks = require_dir(Path(mask_dir), "mask folder", FOLDER_LAYOUT) if mask_dir is not None else None
    if masks is not None and test_anomalous_dir is not None and masks.resolve() == Path(test_anomalous_dir).resolve():
        raise ValueError(
            f"mask_dir and test_anomalous_dir are the same folder ({masks}): the masks would be listed as "
            "test images. Move the masks to a folder of their own."
        )

    records = [ImageRecord(p, category, "train", NORMAL, "good") for p in train]
    records += [ImageRecord(p, category, "test", NORMAL, "good") for p in test_normal]
    for path in anomalous:
        mask = None
        if masks is not None:
            mask = find_mask(masks, path.stem, IMAGE_SUFFIXES) or find_mask(masks, f"{path.stem}_mask", IMAGE_SUFFIXES)
        records.append(ImageRecord(path, category, "test", ANOMALOUS, "anomalous", mask))
    return records
