"""What ``train.py`` does: config → data → fit → evaluate → run folder.

A training run writes into its folder: the model file, ``metrics.json`` (metrics, timings,
peak memory, config and the fingerprint of what the results depend on), ``metrics.md`` (the
printed table), anomaly-map overlays and a plot of the training error per location.

Everything that can be checked is checked before the fit: the config (typed, see
:mod:`~gpuksvd.runs.config`), the dataset's folders, and every image and mask, decoded once.
A folder that already holds results is reused only when its recorded fingerprint — the
result-changing config and the data listing — is the current one (:mod:`~gpuksvd.runs.fingerprint`);
otherwise its stale results are removed before any work, so that the folder never shows
results beside a config they did not come from. A model file saved by an interrupted run is
reused on the same rule. A failure after the fit keeps the model file and says how to finish.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..data import DataSplits, build_splits
from ..detector import PSDL, load_model, save_model
from ..detector.model_file import read_description
from ..evaluation import (MAX_AUTO_FOLDS, MetricsReport, MissingMaskWarning, fold_count, quantile_thresholds,
                          smallest_fold_complement)
from ..features import build_extractor, get_spec
from ..files import write_json, write_text
from ..sparse import resolve_kernel
from .config import ConfigError, ThresholdConfig, TrainConfig, train_config
from .fingerprint import differences, run_fingerprint, same_model, same_results
from .distributed import Group, Solo, process_group
from .loops import FitTimes, Predictions, evaluate_predictions, fit, peak_memory_bytes, predict
from .run_folder import FAILED_FILE, METRICS_FILE, device_name, finite_or_none, save_patch_errors, write_figures

log = logging.getLogger("gpuksvd")


class FailedAfterFitError(RuntimeError):
    """The evaluation failed after the model was fitted and saved; the message says how to finish."""


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
    # A plain run is one process (Solo); under torchrun the group spreads the fit and the
    # scoring over the processes (see gpuksvd.runs.sharded) and rank 0 writes the run folder.
    with process_group(config.device, config.distributed.timeout_s) as group:
        device = group.device
        # kernel=triton on a CPU run, or native where no compiler builds it: say so before any work
        # ("auto" never fails: it falls back to the torch path, and builds nothing before the fit).
        if config.ksvd.kernel != "auto":
            resolve_kernel(config.ksvd.kernel, torch.empty(0, device=device))
        splits = group.root_first(lambda: load_data(config))
        fingerprint = run_fingerprint(config.resolved, splits)
        finished = group.from_root(lambda: reusable_results(config, run_dir, fingerprint))
        if finished is not None:
            return finished
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        backbone = config.backbone
        model_path = run_dir / config.model_file
        model, times = None, None
        if config.skip_existing:
            reusable = group.from_root(lambda: reusable_model_times(model_path, fingerprint))
            if reusable is not None:
                model, times = group.read_shared(model_path, lambda path: load_model(path, device=device)), reusable
        if model is None:
            extractor = build_extractor(backbone.name, backbone.layers, weights=backbone.weights,
                                        fusion=backbone.fusion, trim_to_square=backbone.trim_to_square)
            model = PSDL(extractor, config.ksvd, splits.preprocess).to(device)
            group.check_model(model)
            if group.is_root:
                log.info("fitting %s %s on %d training images of %s (%d categories) on %s%s", backbone.name,
                         "+".join(backbone.layers), len(splits.train), splits.name, len(splits.categories), device,
                         "" if group.world_size == 1 else f" and {group.world_size - 1} other process(es)")
            fit_on = fit if group.world_size == 1 else group.fit  # several processes: gpuksvd.runs.sharded
            folds = crossfit_folds_for(model, config.threshold, len(splits.train))
            times = fit_on(model, splits.train, batch_size=config.batch_size, num_workers=config.num_workers,
                           progress=config.progress, cache=config.cache, folds=folds, seed=config.seed)
            model.set_thresholds(*training_thresholds(model, config.threshold, config.seed, folds))
            model.provenance = {"dataset": config.dataset.as_dict(), "fingerprint": fingerprint,
                                "fit_times": vars(times)}
            group.on_root(lambda: save_model(model, model_path))
        try:
            return evaluate_and_write(config, run_dir, model, splits, times, fingerprint, device, group)
        except Exception as error:
            raise FailedAfterFitError(
                f"{type(error).__name__}: {error}. The model was fitted and saved at {model_path}: finish with "
                f"`python evaluate.py model={model_path}`, or re-run this command (the model file is reused)"
            ) from error


def crossfit_folds_for(model: PSDL, rule: ThresholdConfig, n_train: int) -> int | None:
    """The folds of ``threshold.method=crossfit`` (None for ``quantile``): ``threshold.folds``, or
    the fewest whose fits keep enough images for the largest dictionaries (logged)."""
    if rule.method != "crossfit":
        return None
    if rule.folds is not None:
        if rule.folds > n_train:
            raise ConfigError(f"threshold.folds={rule.folds} but there are only {n_train} training images: use at "
                              f"most {n_train} folds, threshold.folds=null (chosen from the atoms), or "
                              "threshold.method=quantile")
        return rule.folds
    n_atoms = max(model.config.atoms_for(channels) for channels, _, _ in model.feature_shapes)
    folds = fold_count(n_train, n_atoms)
    if folds > MAX_AUTO_FOLDS:
        return folds  # no fold count works: the size check before the features says so
    log.info("thresholds from out-of-fold training scores: %d folds (each fit on %d of the %d training images; "
             "threshold.method=quantile skips these fits)", folds, smallest_fold_complement(n_train, folds), n_train)
    return folds


def training_thresholds(model: PSDL, rule: ThresholdConfig, seed: int,
                        folds: int | None = None) -> tuple[dict[str, float], dict]:
    """Each category's decision threshold from the fitted model's training scores, and the rule
    recorded beside them (no test label is used)."""
    if rule.method == "crossfit":
        scores, of = model.out_of_fold_scores_, (f"each category's out-of-fold training image scores ({folds} "
                                                 f"folds, seed {seed}: every image scored by a model fitted without it)")
    else:
        scores, of = model.train_scores_, "each category's training image scores (in-sample)"
    thresholds = quantile_thresholds(scores, model.train_categories, rule.quantile)
    recorded = {"method": rule.method, "quantile": rule.quantile, "of": of}
    if rule.method == "crossfit":
        recorded["folds"] = folds
    return thresholds, recorded


def load_data(config: TrainConfig) -> DataSplits:
    """List the dataset and decode every image once (before any feature), named on failure."""
    spec = get_spec(config.backbone.name)  # the input normalisation; the model is built later
    # progress also drives the generated dataset's bar (a listing option of that dataset only)
    splits = build_splits({**config.dataset.as_dict(), "progress": config.progress}, mean=spec.mean, std=spec.std,
                          workers=max(1, config.num_workers))
    if len(splits.test) == 0:
        raise ValueError(
            f"dataset {splits.name!r} has no test image, so train.py cannot evaluate: give test folders "
            "(dataset.test_normal_dir / dataset.test_anomalous_dir) or dataset.split_ratio; to score new "
            "images with a model, use evaluate.py images=<folder>"
        )
    return splits


def reusable_results(config: TrainConfig, run_dir: Path, fingerprint: dict) -> dict | None:
    """The folder's finished results when they hold for this config and data (and
    ``skip_existing``); otherwise None, after removing any stale results and failure record."""
    metrics_path = run_dir / METRICS_FILE
    recorded = None
    if metrics_path.is_file():
        try:
            recorded = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            recorded = None
    if recorded is not None and config.skip_existing and same_results(recorded.get("fingerprint"), fingerprint):
        log.info("%s already holds the results of this config and data: skipping (skip_existing=true)", run_dir)
        return recorded
    if recorded is not None:
        why = ("skip_existing=false" if config.skip_existing is False
               else f"they came from another config or other data ({differences(recorded.get('fingerprint'), fingerprint)})")
        log.warning("%s holds earlier results; running again because %s", run_dir, why)
    # Removed before any work: a folder must never show results beside a config they did not
    # come from (Hydra has already written this run's config into .hydra/).
    for name in (METRICS_FILE, "metrics.md", FAILED_FILE):
        (run_dir / name).unlink(missing_ok=True)
    return None


def reusable_model_times(path: Path, fingerprint: dict) -> FitTimes | None:
    """The fit times of the model file of an interrupted run, when it was fitted on this config
    and data (then the file can be loaded instead of fitting); None otherwise."""
    if not path.is_file():
        return None
    try:
        recorded = read_description(path).get("provenance", {})
    except (OSError, ValueError):
        return None
    if not same_model(recorded.get("fingerprint"), fingerprint):
        log.info("%s was fitted on another config or other data (%s): fitting again", path,
                 differences(recorded.get("fingerprint"), fingerprint))
        return None
    log.info("reusing the model file %s: fitted on this config and data", path)
    return FitTimes(**recorded.get("fit_times", dict(features=math.nan, ksvd=math.nan, ksvd_per_iter=math.nan,
                                                     total=math.nan)))


def evaluate_and_write(config: TrainConfig, run_dir: Path, model: PSDL, splits: DataSplits, times: FitTimes,
                       fingerprint: dict, device: torch.device, group: Solo | Group | None = None) -> dict:
    """Score the test split (over the processes of ``group``), write the run folder (rank 0),
    ``metrics.json`` last; every process returns its content."""
    group = Solo(device) if group is None else group
    predict_on = predict if group.world_size == 1 else group.predict  # several processes: rank 0 gets them all
    predictions = predict_on(model, splits.test, batch_size=config.batch_size, num_workers=config.num_workers,
                             progress=config.progress, keep_descriptors=config.save_patch_errors)
    facts = group.run_facts(device)  # a distributed run's processes and peak memory per process
    return group.from_root(lambda: write_results(config, run_dir, model, splits, times, fingerprint, device,
                                                 predictions, facts))


def write_results(config: TrainConfig, run_dir: Path, model: PSDL, splits: DataSplits, times: FitTimes,
                  fingerprint: dict, device: torch.device, predictions: Predictions, facts: dict) -> dict:
    """Compute the metrics of ``predictions`` and write the run folder, ``metrics.json`` last."""
    report = evaluate_quietly(predictions, model, splits.groups, config.normalize)
    if predictions.descriptors is not None:
        save_patch_errors(predictions, run_dir / "patch_errors.npz")
    result = {
        "main_metric": finite_or_none(report.main_metric),
        "metrics": report.to_dict(),
        "normalize": config.normalize,
        "thresholds": model.thresholds,
        "threshold_rule": model.threshold_rule,
        "times": {
            "features_s": times.features,
            "ksvd_s": times.ksvd,
            "ksvd_per_iter_s": times.ksvd_per_iter,
            "fit_s": times.total,
            "crossfit_s": times.crossfit,
            "test_scoring_s": predictions.seconds,
            "test_images_per_s": len(predictions.image_scores) / max(predictions.seconds, 1e-9),
        },
        "peak_memory_bytes": peak_memory_bytes(device),
        **facts,
        "n_train": len(splits.train),
        "n_test": len(splits.test),
        "image_size": list(model.image_size),
        "feature_shapes": [list(shape) for shape in model.feature_shapes],
        "device": device_name(device),
        # Relative training reconstruction error per location, per iteration (row 0: initial
        # dictionary), per feature set: the data of the paper's error figures.
        "train_error": {name: location_model.train_error_.cpu().tolist()
                        for name, location_model in zip(model.extractor.set_names, model.sets)},
        "train_mse": {name: location_model.train_mse_.cpu().tolist()
                      for name, location_model in zip(model.extractor.set_names, model.sets)},
        "fingerprint": fingerprint,
        "config": config.resolved,
    }
    result["times"] = {key: finite_or_none(value) for key, value in result["times"].items()}
    write_text(report.to_markdown() + "\n", run_dir / "metrics.md")
    write_figures(model, predictions, splits.test, run_dir, config.n_overlays)
    write_json(result, run_dir / METRICS_FILE)  # last: its presence marks the run as finished
    log.info("\n%s", report.to_markdown())
    log.info("image AUROC %.4f | fit %.1f s (K-SVD %.3f s/iter) | scoring %.1f images/s", report.main_metric,
             times.total, times.ksvd_per_iter, len(predictions.image_scores) / max(predictions.seconds, 1e-9))
    return result


def evaluate_quietly(predictions: Predictions, model: PSDL, groups, normalize: str) -> MetricsReport:
    """:func:`~gpuksvd.runs.loops.evaluate_predictions` without the missing-mask warning, which
    :func:`~gpuksvd.data.build_splits` already gave once, with the count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMaskWarning)
        return evaluate_predictions(predictions, model, groups, normalize=normalize)
