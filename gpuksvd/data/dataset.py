"""Reading images and masks with PIL, and the torch Dataset that serves them preprocessed."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .layout import DatasetWarning
from .records import ImageRecord
from .transforms import Preprocess

_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# PIL reports broken files with any of these, depending on the decoder.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


T = TypeVar("T")


class UnreadableImageError(OSError):
    """An image or mask file that PIL cannot decode; the message names the file."""


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit (or wider) integer array to 0..255."""
    return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _read(path: str | Path, what: str, read: Callable[[Image.Image], T]) -> T:
    """``read(image)`` of the file opened with PIL; any decoding failure becomes an
    :class:`UnreadableImageError` that names the file (``what``: "image", "mask" …)."""
    try:
        with Image.open(path) as image:
            return read(image)
    except _READ_ERRORS as exc:
        raise UnreadableImageError(f"cannot read {what}{' ' if what else ''}{path}: {exc}") from exc


def _rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = _to_uint8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.asarray(image)
        gray = gray * 255.0 if gray.max() <= 1.0 else gray
        return np.repeat(np.clip(np.rint(gray), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))


def _grey_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("1", "L"):
        return np.asarray(image)
    return np.asarray(image.convert("L"))


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB.

    Grayscale images are repeated over three channels, RGBA and palette images converted,
    16-bit images scaled to 8 bits.

    Returns
    -------
    numpy.ndarray of shape (H, W, 3), uint8

    Raises
    ------
    UnreadableImageError
        When the file cannot be decoded.
    """
    return _read(path, "image", _rgb_array)


def load_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask as booleans.

    The threshold adapts to the encoding: masks whose largest value is 1 (KolektorSDD's 0/1)
    are ``> 0``, 8-bit masks (MVTec's 0/255, MTD's soft edges) are ``> 127``, 16-bit masks
    ``> 32767``.

    Returns
    -------
    numpy.ndarray of shape (H, W), bool

    Raises
    ------
    UnreadableImageError
        When the file cannot be decoded.
    """
    array = _read(path, "mask", _grey_array)
    top = int(array.max()) if array.size else 0
    if top <= 1:
        return array > 0
    return array > (127 if top <= 255 else 32767)


def _image_size(path: Path, decode: bool) -> tuple[int, int]:
    """``(height, width)`` from the file header, or after a full decode when ``decode``."""
    def size(image: Image.Image) -> tuple[int, int]:
        if decode:
            image.load()
        return image.height, image.width

    return _read(path, "", size)


class ImageDataset(Dataset):
    """Preprocessed images and masks of a list of records.

    Every file's header is read at construction, so a corrupt file or a mask of the wrong size
    is reported before any feature is extracted (with ``skip_unreadable`` every file is fully
    decoded once, to find those that are truncated too).

    Parameters
    ----------
    records : sequence of ImageRecord
    preprocess : Preprocess
    mean, std : sequence of 3 floats
        Per-channel normalisation the backbone expects, on images scaled to [0, 1].
    skip_unreadable : bool
        Drop records whose image or mask cannot be read, with one warning that names them,
        instead of raising :class:`UnreadableImageError`.

    Notes
    -----
    An item is a dict: ``image`` float32 (3, h, w), ``mask`` float32 (1, h, w) in {0, 1}
    (zeros for normal images and for anomalous images without mask), ``has_mask`` bool,
    ``label`` int, ``category`` str, ``defect_type`` str, ``path`` str, ``index`` int.
    torch's default collate batches them.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        preprocess: Preprocess,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        skip_unreadable: bool = False,
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={mean}, std={std}")
        self.records = _check_files(list(records), skip_unreadable)
        self.preprocess = preprocess
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = torch.from_numpy(load_image(record.path)).permute(2, 0, 1).contiguous()
        if record.mask_path is None:
            mask = torch.zeros_like(image[:1])
        else:
            mask = torch.from_numpy(load_mask(record.mask_path).astype(np.uint8))[None]
            if mask.shape[1:] != image.shape[1:]:  # warned once at construction
                mask = F.resize(mask, list(image.shape[1:]), interpolation=InterpolationMode.NEAREST_EXACT)
        image, mask = self.preprocess(image, mask, index)
        image = (image.float() / 255.0 - self.mean) / self.std
        return {
            "image": image,
            "mask": mask.float(),
            "has_mask": record.has_mask,
            "label": int(record.label),
            "category": record.category,
            "defect_type": record.defect_type,
            "path": str(record.path),
            "index": index,
        }


def _check_files(records: list[ImageRecord], skip_unreadable: bool) -> list[ImageRecord]:
    """Read every header; drop or raise on unreadable files; warn once about mask sizes."""
    kept, unreadable, mismatched = [], [], []
    for record in records:
        try:
            size = _image_size(record.path, decode=skip_unreadable)
            mask_size = size if record.mask_path is None else _image_size(record.mask_path, decode=skip_unreadable)
        except UnreadableImageError as exc:
            if not skip_unreadable:
                raise UnreadableImageError(
                    f"{exc}. Fix or remove the file, or set dataset.skip_unreadable=true to skip it"
                ) from exc
            unreadable.append(str(exc))
            continue
        if mask_size != size:
            mismatched.append(f"{record.mask_path} {mask_size} for {record.path} {size}")
        kept.append(record)
    if unreadable:
        warnings.warn(
            f"skipped {len(unreadable)} unreadable image(s)/mask(s): " + "; ".join(unreadable[:3])
            + (" ..." if len(unreadable) > 3 else ""), DatasetWarning, stacklevel=3,
        )
    if mismatched:
        warnings.warn(
            f"{len(mismatched)} mask(s) differ in size from their image and are resized with nearest neighbour "
            f"(height, width): " + "; ".join(mismatched[:3]) + (" ..." if len(mismatched) > 3 else ""),
            DatasetWarning, stacklevel=3,
        )
    return kept
