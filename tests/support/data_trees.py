"""Miniature dataset trees in the published layouts, with their quirks, for tests.

Each ``make_*_tree(root, ...)`` writes a small tree under ``root`` and returns the path to pass
as ``dataset.root`` (or, for the folder dataset, the folder holding ``train/`` ...). Images are
dark noise; a defective image has a bright square (value 255) exactly where its mask is 255, so
tests can check that image and mask stay aligned.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

MVTEC_GRAYSCALE = ("grid", "screw", "zipper")
BTAD_FORMATS = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".png", ".bmp")}  # (image, mask)
MTD_CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")


def planted(rng: np.random.Generator, shape: tuple[int, int], grayscale: bool = False,
            defect: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A dark noise image (uint8, (H, W) or (H, W, 3)) and its 0/255 mask of a bright square."""
    height, width = shape
    image = rng.integers(0, 100, size=shape if grayscale else (*shape, 3), dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    if defect:
        side_h, side_w = max(2, height // 4), max(2, width // 4)
        top, left = int(rng.integers(0, height - side_h)), int(rng.integers(0, width - side_w))
        mask[top:top + side_h, left:left + side_w] = 255
        image[mask > 0] = 255
    return image, mask


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write ``array`` with PIL (format from the suffix), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def write_junk(folder: Path) -> None:
    """Files a real tree carries that are not images: they must be ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "readme.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0" * 16)
    (folder / ".DS_Store").write_bytes(b"\0" * 16)


def write_corrupt(path: Path) -> Path:
    """A file with an image suffix and garbage contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a png" * 10)
    return path


def write_truncated(path: Path, shape: tuple[int, int] = (32, 32)) -> Path:
    """A PNG whose header is fine but whose data stops half-way."""
    save(path, np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_mvtec_tree(root: Path, categories=("bottle", "grid"), n_train: int = 4, n_test_good: int = 2,
                    defects=("crack", "scratch"), n_per_defect: int = 2, size: int = 32,
                    missing_masks: int = 0, seed: int = 0) -> Path:
    """MVTec AD layout; grid/screw/zipper are grayscale; ``missing_masks`` defect masks are not written."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    write_junk(root)
    for category in categories:
        gray = category in MVTEC_GRAYSCALE
        base = root / category
        for i in range(n_train):
            save(base / "train" / "good" / f"{i:03d}.png", planted(rng, (size, size), gray, defect=False)[0])
        for i in range(n_test_good):
            save(base / "test" / "good" / f"{i:03d}.png", planted(rng, (size, size), gray, defect=False)[0])
        for defect in defects:
            for i in range(n_per_defect):
                image, mask = planted(rng, (size, size), gray)
                save(base / "test" / defect / f"{i:03d}.png", image)
                if missing_masks > 0:
                    missing_masks -= 1
                    continue
                save(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
        write_junk(base / "train" / "good")
    return root


def make_btad_tree(root: Path, products=("01", "02", "03"), n_train: int = 4, n_test_ok: int = 2,
                   n_test_ko: int = 2, size: int = 32, seed: int = 0) -> Path:
    """BTAD layout: 01 .bmp images/.png masks, 02 .png/.png, 03 .png images/.bmp masks."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for product in products:
        image_ext, mask_ext = BTAD_FORMATS.get(product, (".png", ".png"))
        base = root / product
        for i in range(n_train):
            save(base / "train" / "ok" / f"{i:04d}{image_ext}", planted(rng, (size, size), defect=False)[0])
        for i in range(n_test_ok):
            save(base / "test" / "ok" / f"{i:04d}{image_ext}", planted(rng, (size, size), defect=False)[0])
        for i in range(n_test_ko):
            image, mask = planted(rng, (size, size))
            save(base / "test" / "ko" / f"{i:04d}{image_ext}", image)
            save(base / "ground_truth" / "ko" / f"{i:04d}{mask_ext}", mask)
        write_junk(base / "test" / "ko")
    return root


def make_mtd_tree(root: Path, n_free: int = 10, n_per_defect: int = 2, classes=MTD_CLASSES,
                  seed: int = 0) -> Path:
    """MTD layout: ``MT_<class>/Imgs/<id>.jpg`` + ``<id>.png``, varying sizes, soft-edged masks.

    The first image of the first defect class has an empty mask; MT_Free images have empty
    masks too, as in the published data.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for name, count in [("Free", n_free)] + [(c, n_per_defect) for c in classes]:
        folder = root / f"MT_{name}" / "Imgs"
        for i in range(count):
            shape = (int(rng.integers(24, 48)), int(rng.integers(24, 48)))
            defect = name != "Free" and not (name == classes[0] and i == 0)
            image, mask = planted(rng, shape, grayscale=True, defect=defect)
            save(folder / f"exp{i}_num_{i + 100}.jpg", image)
            save(folder / f"exp{i}_num_{i + 100}.png", soften(mask))
        write_junk(folder)
    return root


def soften(mask: np.ndarray) -> np.ndarray:
    """Soft edges like MTD's masks: the mean over each pixel and its 4 neighbours.

    Edge pixels take values in (0, 255); thresholding at > 127 gives back the hard mask.
    """
    padded = np.pad(mask.astype(np.float64), 1)
    height, width = mask.shape
    offsets = ((1, 1), (0, 1), (2, 1), (1, 0), (1, 2))
    blurred = sum(padded[dy:dy + height, dx:dx + width] for dy, dx in offsets) / len(offsets)
    return np.rint(blurred).astype(np.uint8)


def make_ksdd_tree(root: Path, n_folders: int = 6, n_parts: int = 4, defective=((1, 2), (3, 0), (4, 1)),
                   duplicates=((1, 5),), shape: tuple[int, int] = (48, 20), seed: int = 0) -> Path:
    """KolektorSDD layout: ``kosNN/PartK.jpg`` + ``PartK_label.bmp``.

    ``defective`` lists (folder number, part) pairs with a defect; their masks are 0/1 except
    the last, which is 0/255. ``duplicates`` lists (source, copy) folder numbers: the copy is a
    byte-identical folder (the published kos01/kos26 quirk).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    copies = {copy for _, copy in duplicates}
    for number in range(1, n_folders + 1):
        if number in copies:
            continue
        folder = root / f"kos{number:02d}"
        for part in range(n_parts):
            is_defect = (number, part) in defective
            image, mask = planted(rng, shape, grayscale=True, defect=is_defect)
            save(folder / f"Part{part}.jpg", image)
            scale = 255 if (number, part) == tuple(defective[-1]) else 1
            save(folder / f"Part{part}_label.bmp", (mask // 255 * scale).astype(np.uint8))
    for source, copy in duplicates:
        shutil.copytree(root / f"kos{source:02d}", root / f"kos{copy:02d}")
    write_junk(root / "kos01")
    return root


def make_folder_tree(root: Path, n_train: int = 6, n_test_normal: int = 2, n_test_anomalous: int = 3,
                     mask_suffix: str = "_mask", missing_masks: int = 1, size: int = 32, seed: int = 0) -> Path:
    """``train/``, ``test_normal/``, ``test_anomalous/``, ``masks/<stem><mask_suffix>.png``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for i in range(n_train):
        save(root / "train" / f"img{i}.jpg", planted(rng, (size, size), defect=False)[0])
    for i in range(n_test_normal):
        save(root / "test_normal" / f"ok{i}.png", planted(rng, (size, size), defect=False)[0])
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n_test_anomalous):
        image, mask = planted(rng, (size, size))
        save(root / "test_anomalous" / f"bad{i}.png", image)
        if i >= missing_masks:
            save(root / "masks" / f"bad{i}{mask_suffix}.png", mask)
    write_junk(root / "train")
    return root
