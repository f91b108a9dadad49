"""Small helpers shared by the dataset listings: finding image files, checking folders, splitting.

Every listing function validates its tree with these, so that the errors look the same for all
datasets: they name the path that is wrong and show the layout that was expected.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Lower-case suffixes of the files a listing treats as images; anything else (readme.txt,
# Thumbs.db, .DS_Store …) is ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetWarning(UserWarning):
    """Something odd in a dataset that does not stop a run (missing masks, resized masks …)."""


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is one of :data:`IMAGE_SUFFIXES`."""
    # Names starting with "." include macOS "._name.png" resource forks, which are not images.
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; empty when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p) and p.suffix.lower() in suffixes)


def as_path(root: str | Path | None, what: str, hint: str) -> Path:
    """Turn a user-given root into a :class:`Path`, failing with ``hint`` when it is not set."""
    if root is None or str(root).strip() == "":
        raise ValueError(f"{what} is not set: {hint}")
    return Path(root).expanduser()


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` when it is a folder, else raise naming it and showing ``layout``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or is not a folder.
    """
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{what} {path} {state}. Expected layout:\n{layout}")
    return path


def require_images(
    folder: Path, what: str, layout: str, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[Path]:
    """Images of an existing, non-empty folder, else an error naming it and showing ``layout``.

    Raises
    ------
    FileNotFoundError
        When ``folder`` does not exist.
    ValueError
        When it holds no file with one of ``suffixes``.
    """
    require_dir(folder, what, layout)
    images = list_images(folder, suffixes)
    if not images:
        raise ValueError(
            f"{what} {folder} holds no image files (looked for {', '.join(suffixes)})."
            f" Expected layout:\n{layout}"
        )
    return images


def find_mask(folder: Path, stem: str, suffixes: Sequence[str] = (".png", ".bmp")) -> Path | None:
    """The first existing ``folder/<stem><suffix>`` (suffix in ``suffixes`` order), or None."""
    for suffix in suffixes:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def seeded_test_mask(n_units: int, test_fraction: float, seed: int, sizes: Sequence[int] | None = None) -> np.ndarray:
    """Choose which units go to the test split, reproducibly for a seed.

    Parameters
    ----------
    n_units : int
        Number of units (images, or groups of duplicate images) to split.
    test_fraction : float
        Fraction of the *images* wanted in the test split, in [0, 1].
    seed : int
        Seed of the permutation; the same seed gives the same split.
    sizes : sequence of int, optional
        Images per unit (all 1 when omitted). Units are taken in a seeded random order until
        ``round(test_fraction * total images)`` images are in the test split.

    Returns
    -------
    numpy.ndarray of bool, of shape (n_units,)
        True for the units in the test split.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    if n_units == 0:
        return np.zeros(0, dtype=bool)
    sizes = np.ones(n_units, dtype=int) if sizes is None else np.asarray(sizes, dtype=int)
    target = int(round(test_fraction * int(sizes.sum())))
    order = np.random.default_rng(seed).permutation(n_units)
    # Cumulative image count in the shuffled order: take units while the count before a unit
    # is still short of the target, so the test split holds `target` images when units are
    # single images and about `target` when duplicate groups must stay together.
    taken_before = np.concatenate([[0], np.cumsum(sizes[order])[:-1]])
    is_test = np.zeros(n_units, dtype=bool)
    is_test[order[taken_before < target]] = True
    return is_test


def category_folders(root: Path, categories: Sequence[str] | str | None, what: str, plural: str,
                     layout: str) -> list[Path]:
    """The folders of the requested categories under ``root`` (all with a ``train/`` folder when
    ``categories`` is None), each checked to exist.

    ``what`` names one category in messages ("MVTec AD category", "BTAD product"), ``plural``
    all of them ("Categories", "Products"). Integers are
    read as two-digit names: Hydra parses ``categories=[01]`` as the int 1 (BTAD's "01").
    """
    dataset, _, singular = what.rpartition(" ")
    found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
    if categories is None:
        if not found:
            raise FileNotFoundError(
                f"no {singular} folder (a folder with a train/ sub-folder) under the {dataset} root {root}. "
                f"Expected layout:\n{layout}"
            )
        categories = found
    elif isinstance(categories, (str, int)):
        categories = [categories]
    folders = []
    for name in categories:
        name = f"{name:02d}" if isinstance(name, int) else str(name)
        if not (root / name).is_dir():
            raise FileNotFoundError(
                f"{what} {name!r} not found: {root / name} does not exist. "
                f"{plural} under {root}: {', '.join(found) or 'none'}. Expected layout:\n{layout}"
            )
        folders.append(root / name)
    return folders
