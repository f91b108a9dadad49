"""Datasets by name: one listing entry point and the category groups reported by the paper."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .btad import list_btad
from .folder import list_folder
from .ksdd import list_ksdd
from .mtd import list_mtd
from .mvtec import MVTEC_OBJECTS, MVTEC_TEXTURES, list_mvtec
from .records import ImageRecord

# Keyword options each dataset's listing accepts (through `list_dataset(**options)`).
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    "generated": ("seed", "progress"),
    "mvtec": (),
    "rd_mvtec": (),
    "btad": (),
    "mtd": ("seed", "test_fraction"),
    "ksdd": ("seed", "test_fraction", "keep_duplicates_together"),
    "folder": ("train_dir", "test_normal_dir", "test_anomalous_dir", "mask_dir", "split_ratio", "seed", "category"),
}
DATASET_NAMES = tuple(DATASET_OPTIONS)

#: Listing options that are not config keys: the run passes them (``progress``), or the config
#: names them differently (``seed``: :func:`seed_key`).
_RUN_OPTIONS = ("progress", "seed")


#: The image resize filter of the PSDL authors' code per dataset (``interpolation: authors``):
#: torchvision's ``Resize`` on PIL images, bicubic for MVTec AD (and its rotated variant),
#: ``Image.ANTIALIAS`` (Lanczos) for BTAD, MTD and KolektorSDD; the MVTec-layout datasets of this
#: project (generated, folder) follow MVTec AD.
AUTHORS_INTERPOLATION = {"mvtec": "bicubic", "rd_mvtec": "bicubic", "btad": "lanczos", "mtd": "lanczos",
                         "ksdd": "lanczos", "folder": "bicubic", "generated": "bicubic"}


def resolve_interpolation(name: str, interpolation: str) -> str:
    """``interpolation`` of dataset ``name``, with ``"authors"`` replaced by that dataset's filter
    in the authors' code (:data:`AUTHORS_INTERPOLATION`)."""
    return AUTHORS_INTERPOLATION[name] if interpolation == "authors" else interpolation


def seed_key(name: str) -> str:
    """The config key of dataset ``name``'s listing seed: a split seed is not the seed that
    generates the images."""
    return "generation_seed" if name == "generated" else "split_seed"


def dataset_option_keys(name: str) -> tuple[str, ...]:
    """The config keys of dataset ``name`` beyond the common schema of ``conf/dataset/*.yaml``."""
    own = tuple(option for option in DATASET_OPTIONS[name] if option not in _RUN_OPTIONS)
    return ("generation_seed",) + own if name == "generated" else own


def list_dataset(
    name: str, root: str | Path | None, categories: Sequence[str] | str | None = None, **options: Any
) -> list[ImageRecord]:
    """List any supported dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES`: ``"generated"`` (created on first use, cached; ``root``
        None means the default cache folder), ``"mvtec"``, ``"rd_mvtec"`` (the MVTec AD tree;
        its rotations are preprocessing), ``"btad"``, ``"mtd"``, ``"ksdd"``, ``"folder"``.
    root : str or Path or None
        Dataset root. For ``"folder"``, relative folder options are resolved against it.
    categories : sequence of str or str, optional
        Restrict to these categories; ``None`` for all.
    **options
        The dataset's listing options, :data:`DATASET_OPTIONS` ``[name]`` (for instance
        ``seed`` and ``test_fraction`` of ``"mtd"``).

    Returns
    -------
    list of ImageRecord

    Raises
    ------
    ValueError
        For an unknown name or option, or a category the dataset does not have; and the
        listing function's own errors.
    """
    if name not in DATASET_OPTIONS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}")
    unknown = sorted(set(options) - set(DATASET_OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option {', '.join(unknown)}; its options are: "
            f"{', '.join(DATASET_OPTIONS[name]) or 'none'}"
        )
    return _LISTERS[name](root, categories, **options)


def category_groups(name: str, categories: Sequence[str]) -> dict[str, list[str]]:
    """Groups of categories whose metrics are averaged, as the paper's tables report them.

    Returns
    -------
    dict of str to list of str
        MVTec AD (and Rd-MVTec, and the generated dataset): ``{"textures": [...],
        "objects": [...]}`` restricted to ``categories`` in their given order, empty groups
        dropped. Other datasets: ``{}`` (only the overall mean is reported).
    """
    if name in ("mvtec", "rd_mvtec"):
        textures, objects = MVTEC_TEXTURES, MVTEC_OBJECTS
    elif name == "generated":
        from .generated import GENERATED_OBJECTS, GENERATED_TEXTURES

        textures, objects = GENERATED_TEXTURES, GENERATED_OBJECTS
    else:
        return {}
    groups = {
        "textures": [c for c in categories if c in textures],
        "objects": [c for c in categories if c in objects],
    }
    return {group: members for group, members in groups.items() if members}


def _only(records: list[ImageRecord], categories: Sequence[str] | str | None, name: str) -> list[ImageRecord]:
    """Keep the records of ``categories`` for datasets listed as a whole (MTD, KSDD, folder)."""
    if categories is None:
        return records
    wanted = [categories] if isinstance(categories, str) else list(categories)
    present = list(dict.fromkeys(r.category for r in records))
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(
            f"dataset {name!r} has no category {', '.join(map(repr, missing))}; it has: {', '.join(present)}"
        )
    return [r for r in records if r.category in wanted]


def _list_generated(root, categories, *, seed: int = 0, progress: bool = True) -> list[ImageRecord]:
    # Imported here so that listing real datasets never needs the generator's dependencies.
    from .generated import GENERATED_CATEGORIES, ensure_generated

    wanted = [categories] if isinstance(categories, str) else list(categories or [])
    unknown = [name for name in wanted if name not in GENERATED_CATEGORIES]
    if unknown:
        raise ValueError(f"the generated dataset has no category {', '.join(map(repr, unknown))}; it has: "
                         f"{', '.join(GENERATED_CATEGORIES)}")
    return list_mvtec(ensure_generated(root, seed=seed, progress=progress), categories)


def _list_folder(root, categories, *, train_dir=None, **options) -> list[ImageRecord]:
    if train_dir is None:
        raise ValueError("the folder dataset needs its training images: pass dataset.train_dir=/path/to/normal/images")
    base = Path(root).expanduser() if root is not None else Path()
    dirs = {key: (base / Path(options[key]).expanduser() if options.get(key) is not None else None)
            for key in ("test_normal_dir", "test_anomalous_dir", "mask_dir")}
    options.update(dirs)
    return _only(list_folder(base / Path(train_dir).expanduser(), **options), categories, "folder")


_LISTERS: dict[str, Callable[..., list[ImageRecord]]] = {
    "generated": _list_generated,
    "mvtec": list_mvtec,
    "rd_mvtec": list_mvtec,
    "btad": list_btad,
    "mtd": lambda root, categories, **options: _only(list_mtd(root, **options), categories, "mtd"),
    "ksdd": lambda root, categories, **options: _only(list_ksdd(root, **options), categories, "ksdd"),
    "folder": _list_folder,
}
