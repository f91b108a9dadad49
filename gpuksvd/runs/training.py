"""What ``train.py`` does: config → data → fit → evaluate → run folder.

A training run writes into its folder: the model file, ``metrics.json`` (metrics, timings,
peak memory, config), ``metrics.md`` (the printed table), anomaly-map overlays and a plot of
the training error per location.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..data import build_splits
from ..detector import PSDL, save_model
from ..evaluation import MetricsReport, MissingMaskWarning
from ..features import build_extractor
from ..files import write_json, write_text
from .config import TrainConfig, train_config
from .loops import Predictions, evaluate_predictions, fit, peak_memory_bytes, predict, resolve_device
from .run_folder import METRICS_FILE, device_name, finite_or_none, save_patch_errors, write_figures

log = logging.getLogger("gpuksvd")


def train_run(config: TrainConfig | Mapping[str, Any], run_dir: str | Path = ".") -> dict:
    """Fit on the dataset's training split, evaluate its test split, write the run folder.

    Parameters
    ----------
    config : TrainConfig or mapping
        The run configuration, or the composed config as a plain dict (``backbone``, ``dataset``,
        ``ksvd`` and the top-level keys of ``conf/config.yaml``), converted by
        :func:`~gpuksvd.runs.config.train_config`.
    run_dir : path
        Where the outputs go.

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    if not isinstance(config, TrainConfig):
        config = train_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.skip_existing and (run_dir / METRICS_FILE).is_file():
        log.info("%s already has %s: skipping (skip_existing=true)", run_dir, METRICS_FILE)
        return json.loads((run_dir / METRICS_FILE).read_text())
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    backbone = config.backbone
    extractor = build_extractor(backbone.name, backbone.layers, weights=backbone.weights, fusion=backbone.fusion,
                                trim_to_square=backbone.trim_to_square)
    # progress also drives the generated dataset's bar (a listing option of that dataset only)
    splits = build_splits({**config.dataset.as_dict(), "progress": config.progress},
                          mean=extractor.mean, std=extractor.std)
    if len(splits.test) == 0:
        raise ValueError(
            f"dataset {splits.name!r} has no test image, so train.py cannot evaluate: give test folders "
            "(dataset.test_normal_dir / dataset.test_anomalous_dir) or dataset.split_ratio; to score new "
            "images with a model, use evaluate.py images=<folder>"
        )
    model = PSDL(extractor, config.ksvd, splits.preprocess).to(device)
    log.info("fitting %s %s on %d training images of %s (%d categories) on %s",
             backbone.name, "+".join(backbone.layers), len(splits.train), splits.name, len(splits.categories), device)
    loader = dict(batch_size=config.batch_size, num_workers=config.num_workers, progress=config.progress)
    times = fit(model, splits.train, **loader)
    save_model(model, run_dir / config.model_file)
    predictions = predict(model, splits.test, **loader, keep_descriptors=config.save_patch_errors)
    report = evaluate_quietly(predictions, model, splits.groups, config.normalize)
    if predictions.descriptors is not None:
        save_patch_errors(predictions, run_dir / "patch_errors.npz")
    result = {
        "main_metric": finite_or_none(report.main_metric),
        "metrics": report.to_dict(),
        "normalize": config.normalize,
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
        "image_size": list(model.image_size),
        "feature_shapes": [list(shape) for shape in model.feature_shapes],
        "device": device_name(device),
        # Relative training reconstruction error per location, per iteration (row 0: initial
        # dictionary), per feature set: the data of the paper's error figures.
        "train_error": {name: location_model.train_error_.cpu().tolist()
                        for name, location_model in zip(model.extractor.set_names, model.sets)},
        "config": config.resolved,
    }
    write_text(report.to_markdown() + "\n", run_dir / "metrics.md")
    write_figures(model, predictions, splits.test, run_dir, config.n_overlays)
    write_json(result, run_dir / METRICS_FILE)  # last: its presence marks the run as finished
    log.info("\n%s", report.to_markdown())
    log.info("image AUROC %.4f | fit %.1f s (K-SVD %.3f s/iter) | scoring %.1f images/s",
             report.main_metric, times.total, times.ksvd_per_iter, result["times"]["test_images_per_s"])
    return result


def evaluate_quietly(predictions: Predictions, model: PSDL, groups, normalize: str) -> MetricsReport:
    """:func:`~gpuksvd.runs.loops.evaluate_predictions` without the missing-mask warning, which
    :func:`~gpuksvd.data.build_splits` already gave once, with the count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMaskWarning)
        return evaluate_predictions(predictions, model, groups, normalize=normalize)
