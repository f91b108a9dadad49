"""What ``evaluate.py`` does: load a model file, then evaluate a dataset's test split or score a
folder of new images (``scores.csv`` and one heat map per image)."""
from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data import ImageDataset, ImageRecord, build_splits, list_images
from ..detector import PSDL, load_model
from ..files import atomic_write, write_json, write_text
from .config import EvaluateConfig, evaluate_config
from .loops import predict, resolve_device
from .run_folder import METRICS_FILE, device_name, finite_or_none, write_figures, write_overlays
from .training import evaluate_quietly

log = logging.getLogger("gpuksvd")


def evaluate_run(config: EvaluateConfig | Mapping[str, Any], run_dir: str | Path = ".") -> dict:
    """Load a model file and evaluate a dataset's test split, or score a folder of images.

    ``config.model`` is the model file; ``config.images`` (optional) a folder to score, which
    writes ``scores.csv`` and one heatmap PNG per image instead of metrics. When
    ``config.backbone`` is given, the model file must have been made with that backbone and
    those layers.
    """
    if not isinstance(config, EvaluateConfig):
        config = evaluate_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not config.model:
        raise ValueError("no model file given: pass model=/path/to/model.safetensors (written by train.py)")
    backbone = config.backbone
    model = load_model(config.model, backbone=backbone.name if backbone else None,
                       layers=backbone.layers if backbone else None,
                       weights=backbone.weights if backbone and backbone.weights != "pretrained" else None,
                       device=resolve_device(config.device), fusion=backbone.fusion if backbone else None,
                       trim_to_square=backbone.trim_to_square if backbone else None)
    loader = dict(batch_size=config.batch_size, num_workers=config.num_workers, progress=config.progress)
    if config.images:
        return score_folder(model, config, run_dir, loader)
    splits = build_splits(config.dataset.as_dict(), mean=model.extractor.mean, std=model.extractor.std)
    predictions = predict(model, splits.test, **loader)
    report = evaluate_quietly(predictions, model, splits.groups, config.normalize)
    result = {"main_metric": finite_or_none(report.main_metric), "metrics": report.to_dict(),
              "normalize": config.normalize, "model": str(config.model), "n_test": len(splits.test),
              "test_images_per_s": len(predictions.image_scores) / max(predictions.seconds, 1e-9),
              "device": device_name(model.device), "config": config.resolved}
    write_text(report.to_markdown() + "\n", run_dir / "metrics.md")
    write_figures(model, predictions, splits.test, run_dir, config.n_overlays, with_error_plot=False)
    write_json(result, run_dir / METRICS_FILE)
    log.info("\n%s", report.to_markdown())
    return result


def score_folder(model: PSDL, config: EvaluateConfig, run_dir: Path, loader: dict) -> dict:
    """Score every image of ``config.images`` with the model's own preprocessing: ``scores.csv``
    and ``heatmaps/``."""
    folder = Path(config.images)
    if not folder.is_dir():
        raise FileNotFoundError(f"images={folder} is not a folder: pass a folder of images to score")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"no image files in {folder} (looked for .png, .jpg, .bmp, .tif …)")
    records = [ImageRecord(path=p, category=folder.name, split="test", label=0, defect_type="unknown") for p in paths]
    skip = bool(config.dataset.skip_unreadable) if config.dataset is not None else False
    dataset = ImageDataset(records, model.preprocess.without_randomness(), model.extractor.mean, model.extractor.std,
                           skip_unreadable=skip)
    predictions = predict(model, dataset, **loader)

    def write_scores(tmp: str) -> None:
        with open(tmp, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "score"])
            writer.writerows((path, f"{float(score):.6f}")
                             for path, score in zip(predictions.paths, predictions.image_scores))

    atomic_write(run_dir / "scores.csv", write_scores)
    write_overlays(model, predictions, dataset, list(range(len(dataset))), run_dir / "heatmaps")
    log.info("scored %d images of %s: %s", len(paths), folder, run_dir / "scores.csv")
    return {"n_images": len(paths), "scores_csv": str(run_dir / "scores.csv")}
