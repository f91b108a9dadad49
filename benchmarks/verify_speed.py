"""Time the check that decodes every image before a run (``gpuksvd.data.dataset.verify_files``).

    python benchmarks/verify_speed.py                      # 1000 MVTec-sized PNGs, 2 threads
    python benchmarks/verify_speed.py --n-images 5354 --workers 2 8

It writes PNG images the size of MVTec AD's (1024x1024 RGB by default: the largest categories;
the content is a scikit-image photograph, tiled, tinted and noised so that PNG compression is
as hard as on real photographs), times a cold check (every file's pixel data checked — for PNG
every chunk's CRC — in ``workers`` threads; the files were just written, so they are read from
the page cache, as on a machine that has read the dataset before), then the warm check of the
same listing (headers only: it was verified before), and appends the table to RESULTS.md with
the per-image cost and the time extrapolated to MVTec AD's 5354 images.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import commit, machine, publish  # noqa: E402
from gpuksvd.data import ImageRecord  # noqa: E402
from gpuksvd.data.dataset import verify_files  # noqa: E402

MVTEC_IMAGES = 5354  # 3629 training + 1725 test images


def write_images(folder: Path, n_images: int, size: int) -> list[Path]:
    from skimage import data

    photo = data.astronaut().astype(np.float32)
    reps = -(-size // photo.shape[0])
    tiled = np.tile(photo, (reps, reps, 1))[:size, :size]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_images):
        image = np.roll(tiled, (i * 37) % size, axis=1) * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 4, tiled.shape)
        path = folder / f"{i:05d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, compress_level=6)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=1000, help="PNG images written and checked (default 1000)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default 1024, MVTec AD's largest)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="decoding threads to time (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["GPUKSVD_CACHE"] = str(scratch / "cache")  # the verified-listing markers, thrown away
        start = time.perf_counter()
        paths = write_images(scratch, args.n_images, args.size)
        written = time.perf_counter() - start
        megabytes = sum(path.stat().st_size for path in paths) / 1e6
        records = [ImageRecord(path, "x", "train", 0, "good") for path in paths]
        for workers in args.workers:
            for marker in (scratch / "cache").glob("verified/*"):
                marker.unlink()
            start = time.perf_counter()
            verify_files(records, workers=workers)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            verify_files(records, workers=workers)
            warm = time.perf_counter() - start
            rows.append((workers, cold, warm))
            print(f"{workers} threads: cold {cold:.1f} s, warm {warm:.2f} s", flush=True)
    load = os.getloadavg()[0]
    lines = [f"### verify_speed.py — {time.strftime('%Y-%m-%d %H:%M')} — commit {commit()}", "",
             f"Machine: {machine()}; load average {load:.1f} when it ended. {args.n_images} PNG images of "
             f"{args.size}x{args.size} RGB ({megabytes:.0f} MB, written in {written:.0f} s, so read from the page "
             "cache); cold = every file's pixel data checked (PNG: every chunk's CRC), warm = the same listing "
             "again (verified before: headers only). The MVTec AD column "
             f"scales the cold time linearly to its {MVTEC_IMAGES} images (most of them smaller than "
             f"{args.size}x{args.size}: an upper estimate).", "",
             "| threads | cold s | ms per image | warm s | MVTec AD, cold (extrapolated) |",
             "|---:|---:|---:|---:|---:|"]
    for workers, cold, warm in rows:
        lines.append(f"| {workers} | {cold:.1f} | {1000 * cold / args.n_images:.1f} | {warm:.2f} | "
                     f"{cold * MVTEC_IMAGES / args.n_images:.0f} s |")
    table = "\n".join(lines) + "\n"
    publish(table, not args.no_write)
    return table


if __name__ == "__main__":
    main()
