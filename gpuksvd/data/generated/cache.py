"""The cached copy of the generated tree: generated once, reused while its parameters match.

A tree is complete when its marker file holds exactly the requested parameters. Otherwise it is
generated into a temporary sibling folder and renamed into place, so an interrupted run never
leaves a half tree that looks complete, and concurrent callers do not write into each other's
files (the first rename wins; the others reuse its tree).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from . import writer
from .scenes import GENERATED_CATEGORIES
from .writer import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_N_TEST_DEFECT,
    DEFAULT_N_TEST_GOOD,
    DEFAULT_N_TRAIN,
    FORMAT_VERSION,
    MARKER_NAME,
    generation_parameters,
)


def default_cache_dir(seed: int = 0) -> Path:
    """``$GPUKSVD_CACHE/generated/v<version>-seed<seed>``, else under ``~/.cache/gpuksvd``."""
    base = os.environ.get("GPUKSVD_CACHE") or Path.home() / ".cache" / "gpuksvd"
    return Path(base) / "generated" / f"v{FORMAT_VERSION}-seed{seed}"


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _looks_generated(root: Path) -> bool:
    """True when every entry of ``root`` is something :func:`generate_dataset` writes."""
    return all(p.name in GENERATED_CATEGORIES or p.name == MARKER_NAME for p in root.iterdir())


def _remove_stale_temporaries(root: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary siblings left by interrupted runs (generation takes seconds)."""
    for stale in root.parent.glob(f".{root.name}.*"):
        try:
            if time.time() - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:  # a concurrent caller removed it first
            pass


def ensure_generated(root=None, seed: int = 0, *, n_train: int = DEFAULT_N_TRAIN,
                     n_test_good: int = DEFAULT_N_TEST_GOOD,
                     n_test_defect: int = DEFAULT_N_TEST_DEFECT,
                     image_size: int = DEFAULT_IMAGE_SIZE, categories=None,
                     progress: bool = True) -> Path:
    """Return a complete generated tree, generating it once into a cache folder.

    A tree is complete when its marker file holds exactly the requested parameters. Otherwise
    the tree is generated into a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half tree that looks complete, and concurrent callers do not
    write into each other's files (the first rename wins; the others reuse its tree).

    Parameters
    ----------
    root : str or os.PathLike, optional
        The tree's folder; :func:`default_cache_dir` of ``seed`` by default. An existing folder
        without a matching marker is replaced only if it holds nothing but generated
        categories; anything else is refused, never deleted.
    seed, n_train, n_test_good, n_test_defect, image_size, categories, progress
        As in :func:`generate_dataset`.

    Returns
    -------
    pathlib.Path
        The folder holding the complete tree.
    """
    params = generation_parameters(seed, n_train, n_test_good, n_test_defect, image_size, categories)
    root = Path(root) if root is not None else default_cache_dir(params["seed"])
    if _read_marker(root) == params:
        return root
    if root.exists() and not (root.is_dir() and _looks_generated(root)):
        raise ValueError(f"{root} exists and is not a generated dataset: pass another root "
                         "or remove it")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        writer.generate_dataset(work, params["seed"], n_train=n_train, n_test_good=n_test_good,
                         n_test_defect=n_test_defect, image_size=image_size,
                         categories=params["categories"], progress=progress)
        _move_into_place(work, root, params)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # already renamed away unless we lost a race
    return root


def _move_into_place(work: Path, root: Path, params: dict) -> None:
    """Atomically rename ``work`` to ``root``, replacing an outdated or incomplete tree."""
    try:
        os.rename(work, root)  # POSIX also replaces an empty folder
        return
    except OSError:
        if _read_marker(root) == params:  # a concurrent caller finished first
            return
    # An outdated tree (other parameters or format version): move it aside, then swap in ours.
    aside = root.with_name(f".{root.name}.old-{uuid.uuid4().hex}")
    try:
        os.rename(root, aside)
    except OSError:
        if _read_marker(root) == params:
            return
        raise
    try:
        os.rename(work, root)
    except OSError:
        if _read_marker(root) != params:
            raise
    shutil.rmtree(aside, ignore_errors=True)
