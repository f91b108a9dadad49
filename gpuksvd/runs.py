"""What ``train.py`` and ``evaluate.py`` do, on plain dicts, so the library runs without Hydra.

A training run writes into its folder: the model file, ``metrics.json`` (metrics, timings,
peak memory, config), ``metrics.md`` (the printed table), anomaly-map overlays and a plot of
the training error per location. Files are written atomically: an interrupted run never
leaves a ``metrics.json`` that a resumed sweep would take as finished.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import platform
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .data import ImageDataset, ImageRecord, Preprocess, build_splits
from .data._layout import list_images
from .metrics import MetricsReport, MissingMaskWarning
from .model import PSDL, PSDLConfig
from .model_io import build_extractor, load_model, save_model
from .pipeline import Predictions, evaluate_predictions, fit, peak_memory_bytes, predict
from .plots import denormalize, pick_overlay_indices, save_location_error, save_overlays

log = logging.getLogger("gpuksvd")

METRICS_FILE = "metrics.json"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; other names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} asked for, but CUDA is not available here: use device=cpu or device=auto")
    return device


def write_json(data: Any, path: str | Path) -> Path:
    """Write JSON atomically (temporary sibling, then rename)."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, allow_nan=False, default=str)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def train_run(cfg: Mapping[str, Any], run_dir: str | Path = ".") -> dict:
    """Fit on the dataset's training split, evaluate its test split, write the run folder.

    Parameters
    ----------
    cfg : mapping
        The composed config as a plain dict (``backbone``, ``dataset``, ``ksvd`` and the
        top-level keys of ``conf/config.yaml``).
    run_dir : path
        Where the outputs go.

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("skip_existing", False) and (run_dir / METRICS_FILE).is_file():
        log.info("%s already has %s: skipping (skip_existing=true)", run_dir, METRICS_FILE)
        return json.loads((run_dir / METRICS_FILE).read_text())
    progress = bool(cfg.get("progress", True))
    device = resolve_device(cfg.get("device", "auto"))
    torch.manual_seed(int(cfg.get("seed", 0)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    backbone = cfg["backbone"]
    extractor = build_extractor(backbone["name"], list(backbone["layers"]), weights=str(backbone.get("weights", "pretrained")),
                                fusion=backbone.get("fusion", "concat"), trim_to_square=bool(backbone.get("trim_to_square", False)))
    # progress also drives the generated dataset's bar (a listing option of that dataset only)
    splits = build_splits({**cfg["dataset"], "progress": progress}, mean=extractor.mean, std=extractor.std)
    if len(splits.test) == 0:
        raise ValueError(
            f"dataset {splits.name!r} has no test image, so train.py cannot evaluate: give test folders "
            "(dataset.test_normal_dir / dataset.test_anomalous_dir) or dataset.split_ratio; to score new "
            "images with a model, use evaluate.py images=<folder>"
        )
    image_size = tuple(splits.train[0]["image"].shape[-2:])
    model = PSDL(extractor, PSDLConfig(**cfg.get("ksvd", {})), image_size).to(device)
    model.preprocess = {key: cfg["dataset"].get(key) for key in ("resize", "crop", "pre_crop")}
    log.info("fitting %s %s on %d training images of %s (%d categories) on %s",
             backbone["name"], "+".join(backbone["layers"]), len(splits.train), splits.name, len(splits.categories), device)
    loader = dict(batch_size=int(cfg.get("batch_size", 32)), num_workers=int(cfg.get("num_workers", 0)), progress=progress)
    times = fit(model, splits.train, **loader)
    save_model(model, run_dir / cfg.get("model_file", "model.safetensors"))
    predictions = predict(model, splits.test, **loader, keep_descriptors=bool(cfg.get("save_patch_errors", False)))
    report = _evaluate(predictions, model, splits.groups, cfg.get("normalize", "none"))
    if predictions.descriptors is not None:
        save_patch_errors(model, predictions, run_dir / "patch_errors.npz")
    result = {
        "main_metric": _finite_or_none(report.main_metric),
        "metrics": report.to_dict(),
        "normalize": cfg.get("normalize", "none"),
        "times": {
            "features_s": times.features,
            "ksvd_s": times.ksvd,
            "ksvd_per_iter_s": times.ksvd_per_iter,
            "fit_s": times.total,
            "test_scoring_s": predictions.seconds,
            "test_images_per_s": len(predictions.image_scores) / max(predictions.seconds, 1e-9),
        },
        "peak_memory_bytes": peak_memory_bytes(device),
        "n_train": len(splits.train),
        "n_test": len(splits.test),
        "image_size": list(image_size),
        "feature_shapes": [list(shape) for shape in model.feature_shapes],
        "device": _device_name(device),
        # Relative training reconstruction error per location, per iteration (row 0: initial
        # dictionary), per feature set: the data of the paper's error figures.
        "train_error": {name: location_model.train_error_.cpu().tolist()
                        for name, location_model in zip(model.extractor.set_names, model.sets)},
        "config": dict(cfg),
    }
    (run_dir / "metrics.md").write_text(report.to_markdown() + "\n")
    _write_figures(model, predictions, splits.test, run_dir, int(cfg.get("n_overlays", 8)))
    write_json(result, run_dir / METRICS_FILE)  # last: its presence marks the run as finished
    log.info("\n%s", report.to_markdown())
    log.info("image AUROC %.4f | fit %.1f s (K-SVD %.3f s/iter) | scoring %.1f images/s",
             report.main_metric, times.total, times.ksvd_per_iter, result["times"]["test_images_per_s"])
    return result


def evaluate_run(cfg: Mapping[str, Any], run_dir: str | Path = ".") -> dict:
    """Load a model file and evaluate a dataset's test split, or score a folder of images.

    ``cfg["model"]`` is the model file; ``cfg["images"]`` (optional) a folder to score, which
    writes ``scores.csv`` and one heatmap PNG per image instead of metrics. When
    ``cfg["backbone"]`` is given, the model file must have been made with that backbone and
    those layers.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.get("model"):
        raise ValueError("no model file given: pass model=/path/to/model.safetensors (written by train.py)")
    backbone = cfg.get("backbone") or {}
    model = load_model(cfg["model"], backbone=backbone.get("name"),
                       layers=list(backbone["layers"]) if backbone.get("layers") else None,
                       weights=backbone.get("weights") if backbone.get("weights") not in (None, "pretrained") else None,
                       device=resolve_device(cfg.get("device", "auto")), fusion=backbone.get("fusion"),
                       trim_to_square=backbone.get("trim_to_square"))
    progress = bool(cfg.get("progress", True))
    loader = dict(batch_size=int(cfg.get("batch_size", 32)), num_workers=int(cfg.get("num_workers", 0)), progress=progress)
    if cfg.get("images"):
        return _score_folder(model, cfg, run_dir, loader)
    splits = build_splits(cfg["dataset"], mean=model.extractor.mean, std=model.extractor.std)
    predictions = predict(model, splits.test, **loader)
    report = _evaluate(predictions, model, splits.groups, cfg.get("normalize", "none"))
    result = {"main_metric": _finite_or_none(report.main_metric), "metrics": report.to_dict(),
              "normalize": cfg.get("normalize", "none"), "model": str(cfg["model"]), "n_test": len(splits.test),
              "test_images_per_s": len(predictions.image_scores) / max(predictions.seconds, 1e-9),
              "device": _device_name(model.device), "config": dict(cfg)}
    (run_dir / "metrics.md").write_text(report.to_markdown() + "\n")
    _write_figures(model, predictions, splits.test, run_dir, int(cfg.get("n_overlays", 8)), with_error_plot=False)
    write_json(result, run_dir / METRICS_FILE)
    log.info("\n%s", report.to_markdown())
    return result


def _evaluate(predictions: Predictions, model: PSDL, groups, normalize: str) -> MetricsReport:
    # build_splits already warned once, with the count, about test images without a mask.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMaskWarning)
        return evaluate_predictions(predictions, model, groups, normalize=normalize)


def _score_folder(model: PSDL, cfg: Mapping[str, Any], run_dir: Path, loader: dict) -> dict:
    folder = Path(cfg["images"])
    if not folder.is_dir():
        raise FileNotFoundError(f"images={folder} is not a folder: pass a folder of images to score")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"no image files in {folder} (looked for .png, .jpg, .bmp, .tif …)")
    dataset_cfg = cfg.get("dataset") or {}
    # The training geometry recorded in the model file wins: the images must match its input size.
    geometry = model.preprocess or {key: dataset_cfg.get(key) for key in ("resize", "crop", "pre_crop")}
    preprocess = Preprocess(resize=geometry.get("resize") or 256, crop=geometry.get("crop"),
                            pre_crop=geometry.get("pre_crop"))
    records = [ImageRecord(path=p, category=folder.name, split="test", label=0, defect_type="unknown") for p in paths]
    dataset = ImageDataset(records, preprocess, model.extractor.mean, model.extractor.std,
                           skip_unreadable=bool(dataset_cfg.get("skip_unreadable", False)))
    predictions = predict(model, dataset, **loader)
    with open(run_dir / "scores.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "score"])
        writer.writerows((path, f"{float(score):.6f}") for path, score in zip(predictions.paths, predictions.image_scores))
    _overlays(model, predictions, dataset, list(range(len(dataset))), run_dir / "heatmaps")
    log.info("scored %d images of %s: %s", len(paths), folder, run_dir / "scores.csv")
    return {"n_images": len(paths), "scores_csv": str(run_dir / "scores.csv")}


def _write_figures(model: PSDL, predictions: Predictions, dataset, run_dir: Path, n_overlays: int,
                   with_error_plot: bool = True) -> None:
    if n_overlays > 0 and predictions.maps is not None:
        chosen = pick_overlay_indices(predictions.labels, predictions.categories, n_overlays)
        _overlays(model, predictions, dataset, chosen, run_dir / "overlays")
    if with_error_plot:
        for name, location_model, (_, height, width) in zip(model.extractor.set_names, model.sets, model.feature_shapes):
            save_location_error(location_model.train_error_, (height, width),
                                run_dir / f"train_error_{name.replace('+', '_')}.png", title=f"training error, {name}")


def _overlays(model: PSDL, predictions: Predictions, dataset, indices: list[int], out_dir: Path) -> None:
    vmax = float(predictions.maps.max())
    for start in range(0, len(indices), 32):  # a folder may hold many images: a batch at a time
        part = indices[start : start + 32]
        images = denormalize(torch.stack([dataset[i]["image"] for i in part]), model.extractor.mean, model.extractor.std)
        names = [f"{start + j:04d}_{predictions.categories[i]}_{predictions.defect_types[i]}_{Path(predictions.paths[i]).stem}"
                 for j, i in enumerate(part)]
        save_overlays(images, names, predictions.maps[part],
                      predictions.masks[part] if predictions.masks is not None else None,
                      predictions.image_scores[part], predictions.labels[part], out_dir, vmax=vmax)


def save_patch_errors(model: PSDL, predictions: Predictions, path: Path) -> Path:
    """Test reconstruction errors per location, split by whether the location's cell of the
    image holds an anomalous pixel (the paper's Fig. 5 histograms).

    Writes ``errors_<i>`` (M, h, w) squared reconstruction errors, ``l1_<i>`` (M, h, w) code L1
    norms and ``anomalous_<i>`` (M, h, w) bool for each feature set i, plus ``labels`` (M,).
    """
    import numpy as np
    import torch.nn.functional as F

    arrays = {"labels": predictions.labels.numpy()}
    for i, values in enumerate(predictions.descriptors):
        grid = values.shape[1:3]
        if predictions.masks is not None:
            cells = F.adaptive_max_pool2d(predictions.masks[:, None].float(), grid)[:, 0] > 0
            cells &= predictions.has_mask[:, None, None]
        else:
            cells = torch.zeros(values.shape[:3], dtype=torch.bool)
        arrays[f"errors_{i}"] = values[..., 1].numpy()
        arrays[f"l1_{i}"] = values[..., 0].numpy()
        arrays[f"anomalous_{i}"] = cells.numpy()
    np.savez_compressed(path, **arrays)
    return path


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _finite_or_none(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None


def report_from(result: Mapping[str, Any]) -> MetricsReport:
    """The :class:`MetricsReport` inside a ``metrics.json``."""
    return MetricsReport.from_dict(result["metrics"])


__all__ = ["METRICS_FILE", "evaluate_run", "report_from", "resolve_device", "train_run", "write_json"]
