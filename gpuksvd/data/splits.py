"""From a dataset config (``conf/dataset/<name>.yaml`` as a plain dict) to train and test datasets."""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .layout import DatasetWarning
from .dataset import ImageDataset
from .records import ANOMALOUS
from .registry import DATASET_OPTIONS, category_groups, list_dataset, resolve_interpolation, seed_key
from .transforms import Preprocess


@dataclass
class DataSplits:
    """The train and test sets of one dataset, and how its categories are reported.

    Attributes
    ----------
    train, test : ImageDataset
    categories : list of str
        Every listed category, in listing order.
    groups : dict of str to list of str
        Category groups averaged in reports (``textures``/``objects`` for MVTec AD), may be empty.
    name : str
        Dataset name (``mvtec``, ``btad`` …).
    preprocess : Preprocess
        The geometry of the training images (the test images have the same geometry with the
        test seed): what a model fitted on them is built with.
    """

    train: ImageDataset
    test: ImageDataset
    categories: list[str]
    groups: dict[str, list[str]]
    name: str
    preprocess: Preprocess


def build_splits(dataset_cfg: Mapping[str, Any], *, mean: Sequence[float], std: Sequence[float],
                 workers: int | None = None) -> DataSplits:
    """List a dataset and wrap its train and test records in preprocessed datasets.

    Parameters
    ----------
    dataset_cfg : mapping
        The keys of ``conf/dataset/*.yaml``: ``name``, ``root``, ``categories``, ``resize``,
        ``crop``, ``pre_crop``, ``random_rotation``, ``random_crop``, ``interpolation`` (``authors``:
        the PSDL code's filter for the dataset), ``train_seed``,
        ``test_seed`` (seeds of the random preprocessing of each split, Rd-MVTec's protocol),
        ``split_seed`` (MTD, KSDD, folder), ``test_fraction`` (MTD, KSDD),
        ``skip_unreadable``; plus ``generation_seed`` and ``progress`` (generated), ``keep_duplicates_together``
        (KSDD), ``train_dir``, ``test_normal_dir``, ``test_anomalous_dir``, ``mask_dir``,
        ``split_ratio``, ``category`` (folder). Missing keys take the listing's defaults.
    mean, std : sequence of 3 floats
        The backbone's input normalisation.
    workers : int, optional
        Threads that decode every image once to verify it (:func:`~gpuksvd.data.dataset.verify_files`).

    Returns
    -------
    DataSplits

    Raises
    ------
    ValueError
        When ``name`` is missing or unknown, the listing leaves no training image, or a
        listing error (missing root, empty folder …) occurs.

    Warns
    -----
    DatasetWarning
        Once, with the count, when anomalous test images have no mask: their pixel metrics
        are skipped, their image metrics still computed.
    """
    cfg = dict(dataset_cfg)
    name = cfg.get("name")
    if name is None:
        raise ValueError("the dataset config has no 'name' (e.g. name: mvtec)")
    records = list_dataset(name, cfg.get("root"), cfg.get("categories"), **_listing_options(name, cfg))
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == "test"]
    if not train:
        raise ValueError(f"dataset {name!r} has no training image after splitting: lower test_fraction / split_ratio")

    anomalous = [r for r in test if r.label == ANOMALOUS]
    unmasked = [r for r in anomalous if r.mask_path is None]
    if unmasked:
        warnings.warn(
            f"{len(unmasked)} of {len(anomalous)} anomalous test images have no mask (e.g. {unmasked[0].path}): "
            "their pixel metrics are skipped, their image metrics are still computed",
            DatasetWarning, stacklevel=2,
        )

    geometry = dict(
        resize=cfg.get("resize", 256),
        crop=cfg.get("crop"),
        pre_crop=cfg.get("pre_crop"),
        random_rotation=float(cfg.get("random_rotation") or 0.0),
        random_crop=bool(cfg.get("random_crop", False)),
        interpolation=resolve_interpolation(name, cfg.get("interpolation") or "bilinear"),
    )
    skip = bool(cfg.get("skip_unreadable", False))
    categories = list(dict.fromkeys(r.category for r in records))
    train_preprocess = Preprocess(**geometry, seed=int(cfg.get("train_seed", 0)))
    test_preprocess = Preprocess(**geometry, seed=int(cfg.get("test_seed", 0)))
    return DataSplits(
        train=ImageDataset(train, train_preprocess, mean, std, skip_unreadable=skip, workers=workers),
        test=ImageDataset(test, test_preprocess, mean, std, skip_unreadable=skip, workers=workers),
        categories=categories,
        groups=category_groups(name, categories),
        name=name,
        preprocess=train_preprocess,
    )


def _listing_options(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The listing options of dataset ``name`` found in its config (null values left out)."""
    options = {}
    for option in DATASET_OPTIONS[name]:
        key = seed_key(name) if option == "seed" else option
        if cfg.get(key) is not None:
            options[option] = cfg[key]
    return options
