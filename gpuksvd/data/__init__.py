"""Datasets: pure listings of published folder layouts, preprocessing, and torch datasets.

``list_dataset(name, root)`` returns one :class:`ImageRecord` per image (validated before any
feature is extracted); :class:`ImageDataset` serves them preprocessed as the paper does;
``build_splits(cfg, mean=..., std=...)`` does both from a ``conf/dataset/<name>.yaml``.
"""
from .layout import IMAGE_SUFFIXES, DatasetWarning, list_images
from .btad import BTAD_LAYOUT, list_btad
from .dataset import ImageDataset, UnreadableImageError, load_image, load_mask
from .folder import FOLDER_LAYOUT, list_folder
from .ksdd import KSDD_LAYOUT, list_ksdd
from .mtd import MTD_LAYOUT, list_mtd
from .mvtec import MVTEC_LAYOUT, MVTEC_OBJECTS, MVTEC_TEXTURES, list_mvtec
from .records import ANOMALOUS, NORMAL, ImageRecord
from .registry import (
    AUTHORS_INTERPOLATION,
    DATASET_NAMES,
    DATASET_OPTIONS,
    category_groups,
    dataset_option_keys,
    list_dataset,
    resolve_interpolation,
    seed_key,
)
from .splits import DataSplits, build_splits
from .transforms import INTERPOLATIONS, Preprocess

__all__ = [
    "ANOMALOUS", "AUTHORS_INTERPOLATION", "INTERPOLATIONS", "resolve_interpolation", "BTAD_LAYOUT", "DATASET_NAMES", "DATASET_OPTIONS", "DataSplits", "DatasetWarning",
    "FOLDER_LAYOUT", "IMAGE_SUFFIXES", "ImageDataset", "ImageRecord", "KSDD_LAYOUT", "MTD_LAYOUT",
    "MVTEC_LAYOUT", "MVTEC_OBJECTS", "MVTEC_TEXTURES", "NORMAL", "Preprocess", "UnreadableImageError",
    "build_splits", "category_groups", "dataset_option_keys", "list_btad", "list_dataset", "list_folder", "list_images", "list_ksdd",
    "list_mtd", "list_mvtec", "load_image", "load_mask", "seed_key",
]
