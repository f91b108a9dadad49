"""End-to-end fit/evaluation time and scoring throughput on generated images.

    python benchmarks/pipeline_speed.py                                   # MVTec-sized: 3629 train, 1725 test, EN-B6 block 30
    python benchmarks/pipeline_speed.py --backbone efficientnet_lite0 --layers block10 --n-train 300 --n-test 150

The images are those of the generated dataset (``gpuksvd.data.generated``), repeated to reach
MVTec AD's counts at 224x224 after the usual resize 256 / crop 224. Backbone weights default
to ``random``: the time does not depend on the weights' values, and the GPU machine has no
network. It reports the fit (features + K-SVD + Gaussians), the evaluation of the test split
(features + OMP + maps + metrics), and the scoring throughput at a fixed batch with the images
already on the device (features + OMP + maps only), then appends the table to
``benchmarks/RESULTS.md`` with the date, the machine and the git commit.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import commit, machine, publish  # noqa: E402
from gpuksvd.data import ImageDataset, Preprocess, list_dataset  # noqa: E402
from gpuksvd.detector import PSDL, PSDLConfig  # noqa: E402
from gpuksvd.evaluation import evaluate  # noqa: E402
from gpuksvd.features import build_extractor  # noqa: E402
from gpuksvd.runs.loops import fit, peak_memory_bytes, predict, resolve_device  # noqa: E402


class Repeated(Dataset):
    """``dataset`` cycled to ``length`` items."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.dataset[index % len(self.dataset)]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_b6", help="backbone config name (default: the paper's best)")
    parser.add_argument("--layers", nargs="+", default=["block30"], help="layers to read (default: block30)")
    parser.add_argument("--weights", default="random",
                        help="backbone weights: random (default; the time does not depend on them), pretrained or a file")
    parser.add_argument("--n-train", type=int, default=3629, help="training images (default: MVTec AD's 3629)")
    parser.add_argument("--n-test", type=int, default=1725, help="test images (default: MVTec AD's 1725)")
    parser.add_argument("--n-iter", type=int, default=20, help="K-SVD iterations (default 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--num-workers", type=int, default=8, help="DataLoader workers (default 8)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    extractor = build_extractor(args.backbone, args.layers, weights=args.weights)
    records = list_dataset("generated", None)
    preprocess = Preprocess(resize=256, crop=224)
    train = Repeated(ImageDataset([r for r in records if r.split == "train"], preprocess, extractor.mean, extractor.std),
                     args.n_train)
    test = Repeated(ImageDataset([r for r in records if r.split == "test"], preprocess, extractor.mean, extractor.std),
                    args.n_test)
    model = PSDL(extractor, PSDLConfig(n_iter=args.n_iter), preprocess).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loader = dict(batch_size=args.batch_size, num_workers=args.num_workers, progress=True)

    times = fit(model, train, **loader)
    start = time.perf_counter()
    predictions = predict(model, test, **loader)
    evaluate(predictions.image_scores, predictions.maps, predictions.labels, predictions.masks,
             predictions.has_mask, predictions.categories)
    evaluation_s = time.perf_counter() - start

    batch = torch.stack([test[i]["image"] for i in range(args.batch_size)]).to(device)
    model.anomaly_maps(batch)  # warm-up
    repeats = 5
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        model.anomaly_maps(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    throughput = repeats * args.batch_size / (time.perf_counter() - start)

    channels, height, width = model.feature_shapes[0]
    lines = [
        f"### pipeline_speed.py — {time.strftime('%Y-%m-%d %H:%M')} — commit {commit()}",
        "",
        f"Machine: {machine()}; device {device}. {args.backbone} {'+'.join(args.layers)} ({channels} channels, "
        f"{height}x{width} map), {args.n_train} training + {args.n_test} test generated images at 224x224, "
        f"{args.n_iter} K-SVD iterations, {args.weights} backbone weights, batch {args.batch_size}, "
        f"{args.num_workers} loader workers.",
        "",
        "| fit s (features / K-SVD) | K-SVD s/iter | evaluation s | fit + evaluation s | scoring images/s (on device) | peak memory |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {times.total:.1f} ({times.features:.1f} / {times.ksvd:.1f}) | {times.ksvd_per_iter:.3f} | {evaluation_s:.1f} | "
        f"{times.total + evaluation_s:.1f} | {throughput:.0f} | {peak_memory_bytes(device) / 2**30:.1f} GiB |",
        "",
    ]
    table = "\n".join(lines)
    publish(table, not args.no_write)
    return table


if __name__ == "__main__":
    main()
