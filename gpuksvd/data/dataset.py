"""Reading images and masks with PIL, and the torch Dataset that serves them preprocessed."""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..files import cache_dir, write_text
from .layout import DatasetWarning
from .records import ImageRecord, files_fingerprint
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
    """``(height, width)`` from the file header, after checking that the pixels can be read
    when ``decode`` (:func:`_check_pixels`)."""
    def size(image: Image.Image) -> tuple[int, int]:
        height, width = image.height, image.width
        if decode:
            _check_pixels(image)
        return height, width

    return _read(path, "", size)


def _check_pixels(image: Image.Image) -> None:
    """Raise if the image's pixel data cannot be read, at the least cost per format.

    PNG: every chunk is read and its CRC checked (``verify``), which catches a truncated or
    damaged file ~40x faster than decoding it. JPEG: decoded at 1/8 scale (libjpeg's DCT
    scaling still reads every entropy-coded byte). Other formats: decoded in full.
    """
    if image.format == "PNG":
        image.verify()
    else:
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()


class ImageDataset(Dataset):
    """Preprocessed images and masks of a list of records.

    Every file's pixel data is checked once at construction (:func:`verify_files`, in parallel
    threads), so a corrupt or truncated file, or a mask of the wrong size, is reported before
    any feature is extracted, not in the middle of a run. A listing verified before (same files, sizes and
    modification times) is not decoded again: its fingerprint is kept under the cache folder.

    Parameters
    ----------
    records : sequence of ImageRecord
    preprocess : Preprocess
    mean, std : sequence of 3 floats
        Per-channel normalisation the backbone expects, on images scaled to [0, 1].
    skip_unreadable : bool
        Drop records whose image or mask cannot be read, with one warning that names them,
        instead of raising :class:`UnreadableImageError`.
    workers : int, optional
        Threads that decode the files (default: the CPU count, at most 8).
    verify : bool
        Check every file's pixel data at construction (default). ``False`` reads the headers only.

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
        workers: int | None = None,
        verify: bool = True,
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={mean}, std={std}")
        self.records = verify_files(list(records), skip_unreadable, workers=workers, decode=verify)
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


def verify_files(records: list[ImageRecord], skip_unreadable: bool = False, *, workers: int | None = None,
                 decode: bool = True) -> list[ImageRecord]:
    """Check that every image and mask of ``records`` can be read, before any of them is used.

    Each file's pixel data is checked (``decode``, :func:`_check_pixels`: PNG checksums, JPEG
    at 1/8 scale, other formats decoded; else only its header is read), in ``workers`` threads:
    PIL releases the GIL while it reads. A listing whose files all decoded before
    (same paths, sizes and modification times) is not decoded again (a marker per listing
    under :func:`gpuksvd.files.cache_dir`).

    Returns
    -------
    list of ImageRecord
        ``records``, without the unreadable ones when ``skip_unreadable`` (one warning names
        them).

    Raises
    ------
    UnreadableImageError
        The first unreadable file, named, with the ``dataset.skip_unreadable`` hint.

    Warns
    -----
    DatasetWarning
        Once, with the count, when masks differ in size from their images (they are resized).
    """
    marker = _verified_marker(records) if decode else None
    already = marker is not None and marker.exists()
    workers = workers or min(8, os.cpu_count() or 1)

    def sizes(record: ImageRecord):
        try:
            size = _image_size(record.path, decode=decode and not already)
            mask_size = size if record.mask_path is None else _image_size(record.mask_path, decode=decode and not already)
            return size, mask_size, None
        except UnreadableImageError as exc:
            return None, None, exc

    if workers > 1 and len(records) > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="gpuksvd-verify") as pool:
            results = list(pool.map(sizes, records))
    else:
        results = [sizes(record) for record in records]
    kept, unreadable, mismatched = [], [], []
    for record, (size, mask_size, error) in zip(records, results):
        if error is not None:
            if not skip_unreadable:
                raise UnreadableImageError(
                    f"{error}. Fix or remove the file, or set dataset.skip_unreadable=true to skip it"
                ) from error
            unreadable.append(str(error))
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
    if marker is not None and not already and not unreadable:
        try:
            write_text("", marker)
        except OSError:  # a read-only cache only costs the next run a decode
            pass
    return kept


def _verified_marker(records: list[ImageRecord]) -> Path | None:
    """The cache marker of a listing whose every file decoded, or None when a file is missing."""
    try:
        key = files_fingerprint(path for record in records for path in (record.path, record.mask_path) if path)
    except OSError:
        return None
    return cache_dir() / "verified" / key
