"""What ``evaluate.py`` does: load a model file, then evaluate a test split or score a folder.

By default the test split is the one the model was trained for: the dataset, categories and
preprocessing recorded in the model file. Another dataset is evaluated only when named
(``dataset=<name>``), always with the model's own preprocessing (a model works at the input
size it was trained at), with a warning for categories the model never saw. A folder of new
images (``images=<folder>``) gets ``scores.csv`` — score, the category's threshold, the decision,
and the score normalised so that the threshold is 0.5 — and one captioned heat map per image.
``threshold.validation_root`` re-fits each category's threshold F1-optimally on labelled images
and writes the model with those thresholds into the run folder.
"""
from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any


from ..data import ANOMALOUS, NORMAL, ImageDataset, ImageRecord, build_splits, list_images
from ..detector import PSDL, load_model, save_model
from ..evaluation import decide, f1_optimal_threshold, normalize_to_threshold, per_image
from ..files import atomic_write, write_json, write_text
from .config import EvaluateConfig, evaluate_config
from .loops import predict, resolve_device
from .run_folder import METRICS_FILE, device_name, finite_or_none, write_figures, write_overlays
from .training import evaluate_quietly

log = logging.getLogger("gpuksvd")

GEOMETRY_KEYS = ("resize", "crop", "pre_crop", "random_rotation", "random_crop", "interpolation")


class UnseenCategoryWarning(UserWarning):
    """The evaluated dataset has categories the model was not trained on."""


def evaluate_run(config: EvaluateConfig | Mapping[str, Any], run_dir: str | Path = ".") -> dict:
    """Load a model file and evaluate a test split (the model's own by default), or score a
    folder of images (``config.images``). When ``config.backbone`` is given, the model file must
    have been made with that backbone and those layers."""
    if not isinstance(config, EvaluateConfig):
        config = evaluate_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    backbone = config.backbone
    model = load_model(config.model, backbone=backbone.name if backbone else None,
                       layers=backbone.layers if backbone else None,
                       weights=backbone.weights if backbone and backbone.weights != "pretrained" else None,
                       device=resolve_device(config.device), fusion=backbone.fusion if backbone else None,
                       trim_to_square=backbone.trim_to_square if backbone else None)
    loader = dict(batch_size=config.batch_size, num_workers=config.num_workers, progress=config.progress)
    if config.threshold.validation_root:
        refit_thresholds(model, Path(config.threshold.validation_root), loader)
        save_model(model, run_dir / "model.safetensors")
        log.info("thresholds re-fitted F1-optimally on %s: %s (model written to %s)", config.threshold.validation_root,
                 model.thresholds, run_dir / "model.safetensors")
    if config.images:
        return score_folder(model, config, run_dir, loader)
    dataset = evaluation_dataset(config, model)
    splits = build_splits(dataset, mean=model.extractor.mean, std=model.extractor.std,
                          workers=max(1, config.num_workers))
    unseen = [name for name in splits.categories if name not in model.train_categories]
    if unseen:
        warnings.warn(
            f"the model was trained on {model.train_categories}, not on {unseen}: their anomaly scores measure "
            "distance to the training categories' statistics, and they have no threshold (normalize=train "
            "refuses them)", UnseenCategoryWarning, stacklevel=2)
    predictions = predict(model, splits.test, **loader)
    report = evaluate_quietly(predictions, model, splits.groups, config.normalize)
    result = {"main_metric": finite_or_none(report.main_metric), "metrics": report.to_dict(),
              "normalize": config.normalize, "model": str(config.model), "dataset": dataset,
              "thresholds": model.thresholds, "threshold_rule": model.threshold_rule, "n_test": len(splits.test),
              "test_images_per_s": len(predictions.image_scores) / max(predictions.seconds, 1e-9),
              "device": device_name(model.device), "config": config.resolved}
    write_text(report.to_markdown() + "\n", run_dir / "metrics.md")
    write_figures(model, predictions, splits.test, run_dir, config.n_overlays, with_error_plot=False)
    write_json(result, run_dir / METRICS_FILE)
    log.info("\n%s", report.to_markdown())
    return result


def evaluation_dataset(config: EvaluateConfig, model: PSDL) -> dict[str, Any]:
    """The dataset config to evaluate: the named one, or the one the model file records; with
    the model's preprocessing either way (its training seed too, for random crops)."""
    if config.dataset is None:
        recorded = model.provenance.get("dataset")
        if not recorded:
            raise ValueError(f"{config.model} records no training dataset (written by an older gpuksvd): name the "
                             "dataset to evaluate, e.g. dataset=mvtec dataset.root=/path/to/data")
        dataset = dict(recorded)
        log.info("evaluating on the dataset the model was trained for: %s (root %s, categories %s)",
                 dataset["name"], dataset.get("root"), dataset.get("categories") or "all")
    else:
        dataset = config.dataset.as_dict()
    geometry = model.preprocess.describe()
    own = {key: geometry[key] for key in GEOMETRY_KEYS}
    named = {key: dataset.get(key) for key in GEOMETRY_KEYS}
    if config.dataset is not None and _sizes(named) != _sizes(own):
        log.warning("evaluating with the model's preprocessing %s, not the dataset config's %s: a model works at "
                    "the input size it was trained at", own, named)
    return {**dataset, **own, "train_seed": geometry["seed"]}


def _sizes(geometry: Mapping[str, Any]) -> dict:
    """Geometry with sizes written as [h, w] pairs, for comparison."""
    def pair(value):
        return None if value is None else (list(value) if isinstance(value, (list, tuple)) else [value, value])
    return {key: pair(value) if key in ("resize", "crop", "pre_crop") else value for key, value in geometry.items()}


def refit_thresholds(model: PSDL, root: Path, loader: dict) -> None:
    """Each category's threshold set F1-optimally on labelled images under ``root``:
    ``<category>/good/*`` (normal) and ``<category>/<defect>/*`` (anomalous), or ``good/`` and
    ``<defect>/`` directly when the model covers one category."""
    if not root.is_dir():
        raise FileNotFoundError(f"threshold.validation_root={root} is not a folder: pass a folder with good/ and "
                                "defect sub-folders (per category for a model of several categories)")
    single = len(set(model.train_categories)) == 1
    folders = {model.train_categories[0]: root} if single and (root / "good").is_dir() else {
        category: root / category for category in dict.fromkeys(model.train_categories) if (root / category).is_dir()}
    if not folders:
        raise FileNotFoundError(f"no validation folder under {root} for the model's categories "
                                f"{sorted(set(model.train_categories))}: expected <category>/good and "
                                "<category>/<defect> (or good/ and <defect>/ for a one-category model)")
    thresholds = dict(model.thresholds)
    for category, folder in folders.items():
        records = [ImageRecord(path, category, "test", NORMAL if sub.name == "good" else ANOMALOUS, sub.name)
                   for sub in sorted(p for p in folder.iterdir() if p.is_dir()) for path in list_images(sub)]
        if not any(r.label == NORMAL for r in records) or not any(r.label == ANOMALOUS for r in records):
            raise ValueError(f"the validation folder {folder} needs good/ images and at least one defect folder of "
                             "images: an F1-optimal threshold weighs both")
        dataset = ImageDataset(records, model.preprocess.without_randomness(), model.extractor.mean,
                               model.extractor.std)
        predictions = predict(model, dataset, **loader)
        thresholds[category], f1 = f1_optimal_threshold(predictions.image_scores, predictions.labels)
        log.info("%s: F1-optimal threshold %.4g (F1 %.3f on %d validation images)", category, thresholds[category],
                 f1, len(records))
    model.set_thresholds(thresholds, {"method": "f1", "validation_root": str(root.resolve()),
                                      "refitted": sorted(folders)})


def folder_category(model: PSDL, folder: Path, category: str | None) -> str:
    """Whose threshold decides for a folder of new images."""
    known = list(dict.fromkeys(model.threshold_categories or model.train_categories))
    if category is not None:
        if category not in known:
            raise ValueError(f"category={category!r} is not one the model was trained on: choose one of {known}")
        return category
    if len(known) == 1:
        return known[0]
    if folder.name in known:
        return folder.name
    raise ValueError(f"the model covers categories {known}: pass category=<name> to say which one the images of "
                     f"{folder} are, so that its threshold decides")


def score_folder(model: PSDL, config: EvaluateConfig, run_dir: Path, loader: dict) -> dict:
    """Score every image of ``config.images`` with the model's own preprocessing: ``scores.csv``
    (score, threshold, decision, score normalised so that the threshold is 0.5) and ``heatmaps/``."""
    folder = Path(config.images)
    if not folder.is_dir():
        raise FileNotFoundError(f"images={folder} is not a folder: pass a folder of images to score")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"no image files in {folder} (looked for .png, .jpg, .bmp, .tif …)")
    category = folder_category(model, folder, config.category)
    records = [ImageRecord(path=p, category=category, split="test", label=0, defect_type="unknown") for p in paths]
    skip = bool(config.dataset.skip_unreadable) if config.dataset is not None else False
    dataset = ImageDataset(records, model.preprocess.without_randomness(), model.extractor.mean, model.extractor.std,
                           skip_unreadable=skip, workers=max(1, config.num_workers))
    predictions = predict(model, dataset, **loader)
    thresholds = per_image(predictions.categories, model.thresholds)
    decisions = decide(predictions.image_scores, thresholds)
    lows = per_image(predictions.categories, {name: low for name, (low, _) in model.training_score_range().items()})
    normalized = normalize_to_threshold(predictions.image_scores, thresholds, lows)

    def write_scores(tmp: str) -> None:
        with open(tmp, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["path", "score", "threshold", "decision", "normalized_score"])
            for path, score, threshold, anomalous, value in zip(predictions.paths, predictions.image_scores,
                                                                thresholds, decisions, normalized):
                writer.writerow([path, f"{float(score):.6f}", f"{float(threshold):.6f}",
                                 "anomalous" if bool(anomalous) else "normal", f"{float(value):.6f}"])

    atomic_write(run_dir / "scores.csv", write_scores)
    write_overlays(model, predictions, dataset, list(range(len(dataset))), run_dir / "heatmaps", labelled=False)
    n_anomalous = int(decisions.sum())
    log.info("scored %d images of %s (category %s, threshold %.4g): %d anomalous, %d normal; %s", len(paths), folder,
             category, model.thresholds.get(category, float("nan")), n_anomalous, len(paths) - n_anomalous,
             run_dir / "scores.csv")
    return {"n_images": len(paths), "n_anomalous": n_anomalous, "category": category,
            "threshold": finite_or_none(model.thresholds.get(category, float("nan"))),
            "scores_csv": str(run_dir / "scores.csv")}
