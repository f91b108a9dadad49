"""Training features kept on disk, so that a sweep over K-SVD settings extracts them once.

A cached file holds the feature sets of one training listing through one extractor: its key
digests the backbone, layers, fusion, trimming and weights (a weights file by path, size and
modification time), the data listing's fingerprint (every file's path, size and modification
time), the preprocessing, and the torch and timm versions. Anything else gives another key, so
a cached file is only ever reused for exactly the features it holds. Files are safetensors
written atomically under ``$GPUKSVD_CACHE/features`` (default ``~/.cache/gpuksvd``); delete the
folder to reclaim the space, or pass ``cache=false``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data import ImageDataset
from ..data.records import records_fingerprint
from ..detector import PSDL
from ..files import atomic_write, cache_dir

log = logging.getLogger("gpuksvd")

FORMAT = "gpuksvd-features-1"


def feature_key(model: PSDL, dataset: ImageDataset) -> str:
    """The digest that names the cached training features of ``dataset`` through ``model``'s extractor."""
    import timm

    description = model.extractor.describe()
    weights = description["weights"]
    if weights.startswith("file:"):
        stat = Path(weights[len("file:"):]).stat()
        weights = f"{weights}:{stat.st_size}:{stat.st_mtime_ns}"
    identity = {
        "format": FORMAT,
        "extractor": {**description, "weights": weights},
        "data": records_fingerprint(dataset.records),
        "preprocess": dataset.preprocess.describe(),
        "image_size": list(model.image_size),
        "versions": [torch.__version__, timm.__version__],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def load_features(path: Path, images: slice | None = None) -> tuple[list[Tensor], list[str]] | None:
    """The feature sets and categories of a cache file (only ``images`` of them, when given);
    None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                return None
            names = [f"set_{i}" for i in range(int(metadata["n_sets"]))]
            if images is None:
                tensors = load_file(str(path))
            else:  # read the slice only: a process of a distributed run holds a share of the images
                tensors = {name: handle.get_slice(name)[images] for name in names}
    except (SafetensorError, OSError, ValueError) as error:
        log.warning("ignoring the unreadable feature cache file %s (%s)", path, error)
        return None
    categories = json.loads(metadata["categories"])
    return [tensors[name] for name in names], categories if images is None else categories[images]


def save_features(path: Path, features: list[Tensor], categories: list[str]) -> Path:
    """Write feature sets and their categories atomically."""
    tensors = {f"set_{i}": value.detach().cpu().contiguous() for i, value in enumerate(features)}
    metadata = {"format": FORMAT, "n_sets": str(len(features)), "categories": json.dumps(categories)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def cached_features_path(model: PSDL, dataset: ImageDataset) -> Path:
    return cache_dir() / "features" / f"{feature_key(model, dataset)}.safetensors"


def size_text(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} GB"
