"""How well a model's stored decision thresholds sit against the test set's normal images.

    python train.py progress=false hydra.run.dir=runs/crossfit5                         # the default rule
    python train.py progress=false threshold.method=quantile hydra.run.dir=runs/insample
    python benchmarks/threshold_calibration.py runs/insample/model.safetensors runs/crossfit5/model.safetensors

For each model file it scores the test split of the dataset the model records (as
``evaluate.py model=...`` does) and prints, per category, the stored threshold beside the 0.99
quantile and the maximum of the test set's *normal* image scores, and the share of normal and
of anomalous test images the threshold flags. The test-set quantile uses test labels: it is an
assessment of a threshold, never a way to set one. Appends the table to ``benchmarks/RESULTS.md``
with the date, the machine and the git commit (``--no-write`` to print only).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import commit, machine, publish  # noqa: E402
from gpuksvd.data import build_splits  # noqa: E402
from gpuksvd.detector import load_model  # noqa: E402
from gpuksvd.runs import predict  # noqa: E402


def calibration_rows(path: Path, batch_size: int) -> list[str]:
    model = load_model(path)
    dataset = model.provenance.get("dataset")
    if not dataset:
        raise SystemExit(f"{path} records no training dataset: train it with this version of gpuksvd")
    splits = build_splits(dict(dataset, progress=False), mean=model.extractor.mean, std=model.extractor.std)
    predictions = predict(model, splits.test, batch_size=batch_size, num_workers=0, progress=False)
    rule = model.threshold_rule
    label = f"{rule.get('method')}" + (f", {rule['folds']} folds" if "folds" in rule else "")
    rows = []
    for category, threshold in model.thresholds.items():
        mine = torch.tensor([name == category for name in predictions.categories])
        scores, labels = predictions.image_scores[mine].double(), predictions.labels[mine]
        normal, anomalous = scores[labels == 0], scores[labels == 1]
        rows.append(f"| {path.parent.name} ({label}) | {category} | {threshold:.1f} | "
                    f"{float(torch.quantile(normal, 0.99)):.1f} | {float(normal.max()):.1f} | "
                    f"{100 * float((normal >= threshold).double().mean()):.0f} % | "
                    f"{100 * float((anomalous >= threshold).double().mean()):.0f} % |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="model files written by train.py")
    parser.add_argument("--batch-size", type=int, default=32, help="images per scoring batch (default 32)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    lines = [f"### threshold_calibration.py — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} — commit {commit()}",
             "", f"Machine: {machine()}. Stored thresholds against the test split's normal image scores (the "
             "0.99 quantile uses test labels: an assessment, not a rule).", "",
             "| model (rule) | category | threshold | test normals: 0.99 quantile | max | normals flagged | "
             "anomalous flagged |", "|---|---|---:|---:|---:|---:|---:|"]
    for path in args.models:
        lines += calibration_rows(path, args.batch_size)
    text = "\n".join(lines) + "\n"
    publish(text, not args.no_write)
    return text


if __name__ == "__main__":
    main()
