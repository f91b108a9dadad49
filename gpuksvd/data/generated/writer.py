"""Rendering samples and writing the generated tree in the MVTec AD layout.

The tree is written in the MVTec AD layout, which :func:`gpuksvd.data.list_mvtec` reads::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png      (mode "L", 0 or 255)

Each image draws its randomness from its own generator, seeded by (seed, category, split,
defect type, index): an image does not depend on how many others are generated, and the same
seed gives identical pixels, hence byte-identical PNG files with the same Pillow and zlib.
"""
from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .defects import apply_defect, defect_types
from .scenes import GENERATED_CATEGORIES, check_categories, render_clean

FORMAT_VERSION = 2
"""Bump when the rendering changes, so that cached trees of the old version are not reused."""

DEFAULT_N_TRAIN = 60  # 5 x 60 = 300 >= the 112 atoms of Lite0's default layer
DEFAULT_N_TEST_GOOD = 15
DEFAULT_N_TEST_DEFECT = 20
DEFAULT_IMAGE_SIZE = 256
MARKER_NAME = ".complete"
_SENSOR_NOISE = 0.012  # std of the additive pixel noise, on the [0, 1] scale


def sample_rngs(seed: int, category: str, split: str, defect: str, index: int):
    """Independent generators for the clean render, the defect and the pixel noise."""
    key = [zlib.crc32(name.encode()) for name in (category, split, defect)] + [index]
    return [np.random.default_rng(child)
            for child in np.random.SeedSequence(seed, spawn_key=key).spawn(3)]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def render_sample(category: str, split: str, defect: str, index: int, *, seed: int = 0,
                  image_size: int = DEFAULT_IMAGE_SIZE):
    """Render one image exactly as :func:`generate_dataset` writes it, plus its clean twin.

    Parameters
    ----------
    category : str
        One of :data:`GENERATED_CATEGORIES`.
    split : str
        ``"train"`` or ``"test"``.
    defect : str
        ``"good"`` or one of :func:`defect_types`.
    index : int
        Index of the image inside its folder.

    Returns
    -------
    image : numpy.ndarray of shape (S, S, 3), uint8
    clean : numpy.ndarray of shape (S, S, 3), uint8
        The same image without the defect (equal to ``image`` for ``"good"``).
    mask : numpy.ndarray of shape (S, S), bool
        Where the defect is (all False for ``"good"``).
    """
    render_rng, defect_rng, noise_rng = sample_rngs(seed, category, split, defect, index)
    render = render_clean(category, image_size, render_rng)
    noise = _SENSOR_NOISE * noise_rng.standard_normal(render.image.shape, dtype=np.float32)
    clean = _to_uint8(render.image + noise)
    if defect == "good":
        return clean, clean, np.zeros((image_size, image_size), bool)
    image, mask = apply_defect(category, defect, render, image_size, defect_rng)
    return _to_uint8(image + noise), clean, mask


def generation_parameters(seed, n_train, n_test_good, n_test_defect, image_size, categories) -> dict:
    """Validated generation parameters, as stored in the completion marker."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value, low in (("n_train", n_train, 1), ("n_test_good", n_test_good, 0),
                             ("n_test_defect", n_test_defect, 0), ("image_size", image_size, 64)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    cats = GENERATED_CATEGORIES if categories is None else check_categories(list(categories))
    if not cats:
        raise ValueError("categories is empty: pass None for all of "
                         f"{list(GENERATED_CATEGORIES)} or a non-empty subset")
    return {"format_version": FORMAT_VERSION, "seed": int(seed), "n_train": int(n_train),
            "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
            "image_size": int(image_size), "categories": list(cats)}


def _jobs(params: dict) -> list[tuple[str, str, str, int]]:
    """(category, split, defect, index) of every image; defects take turns per category."""
    jobs = []
    for category in params["categories"]:
        jobs += [(category, "train", "good", i) for i in range(params["n_train"])]
        jobs += [(category, "test", "good", i) for i in range(params["n_test_good"])]
        kinds = defect_types(category)
        jobs += [(category, "test", kinds[i % len(kinds)], i // len(kinds))
                 for i in range(params["n_test_defect"])]
    return jobs


def _save_png(array: np.ndarray, path: Path) -> None:
    # No metadata and a fixed compression level: same pixels give the same bytes.
    Image.fromarray(array).save(path, format="PNG", compress_level=3)


def generate_dataset(root, seed: int = 0, *, n_train: int = DEFAULT_N_TRAIN,
                     n_test_good: int = DEFAULT_N_TEST_GOOD,
                     n_test_defect: int = DEFAULT_N_TEST_DEFECT,
                     image_size: int = DEFAULT_IMAGE_SIZE, categories=None,
                     progress: bool = True) -> Path:
    """Write the generated dataset into ``root`` in the MVTec AD layout.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to write; it must not exist or be empty. Use :func:`ensure_generated` for a
        cached, crash-safe copy.
    seed : int
        Same seed, same parameters: byte-identical PNG files.
    n_train, n_test_good : int
        Defect-free images per category in ``train/good`` and ``test/good``.
    n_test_defect : int
        Defective images per category, spread round-robin over :func:`defect_types`.
    image_size : int
        Side of the square RGB images, in pixels (at least 64).
    categories : sequence of str, optional
        Subset of :data:`GENERATED_CATEGORIES`; all of them by default.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pathlib.Path
        ``root``. Its marker file (``.complete``, the parameters as JSON) is written last.
    """
    params = generation_parameters(seed, n_train, n_test_good, n_test_defect, image_size, categories)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty: pass a new or empty folder, or use "
                         "ensure_generated() to reuse or replace a cached copy")
    jobs = _jobs(params)
    for category, split, defect, _ in jobs:  # a few dozen folders at most
        (root / category / split / defect).mkdir(parents=True, exist_ok=True)
        if defect != "good":
            (root / category / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)

    def write(job: tuple[str, str, str, int]) -> None:
        category, split, defect, index = job
        image, _, mask = render_sample(category, split, defect, index, seed=params["seed"],
                                       image_size=params["image_size"])
        _save_png(image, root / category / split / defect / f"{index:03d}.png")
        if defect != "good":
            _save_png(mask.astype(np.uint8) * 255,
                      root / category / "ground_truth" / defect / f"{index:03d}_mask.png")

    # Threads: numpy, scipy and PNG encoding release the GIL for most of each image, and every
    # image has its own generator, so the files do not depend on the scheduling.
    with ThreadPoolExecutor(max_workers=_n_workers()) as pool:
        for _ in tqdm(pool.map(write, jobs), total=len(jobs), desc="generating dataset",
                      unit="img", disable=not progress):
            pass
    (root / MARKER_NAME).write_text(json.dumps(params, sort_keys=True))
    return root


def _n_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))
