"""Fit a PSDL model on a dataset and score a dataset, with progress bars and timings.

The detector knows nothing of loaders, progress bars or clocks: these loops feed it batches,
show progress (tqdm) through its plain fit callback, and time the stages. They work on plain
torch datasets whose items are dicts with at least ``image`` (and, for evaluation, ``label``,
``mask``, ``has_mask``, ``category``, ``path``), as :class:`gpuksvd.data.ImageDataset` serves them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..detector import PSDL, image_scores
from ..evaluation import MetricsReport, crossfit_folds, evaluate, normalize_scores, per_image, smallest_fold_complement
from .feature_cache import cached_features_path, load_features, save_features, size_text

log = logging.getLogger("gpuksvd")


@dataclass
class FitTimes:
    """Wall-clock seconds of a fit.

    ``ksvd_per_iter`` is the K-SVD wall time of all feature sets over n_iter (the initial sparse
    coding counts as the first iteration's), 0 without iterations.
    """

    features: float
    ksvd: float
    ksvd_per_iter: float
    total: float
    crossfit: float = 0.0  # the out-of-fold fits of threshold.method=crossfit (after the fit, not in total)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      persistent_workers=False)


@torch.no_grad()
def extract_training_features(model: PSDL, dataset: Dataset, *, batch_size: int = 32, num_workers: int = 0,
                              progress: bool = True) -> tuple[list[Tensor], list[str]]:
    """Feature sets (N, C, h, w) of all training images, on the model's device, and their categories."""
    if len(dataset) == 0:
        raise ValueError("the training set is empty: check the dataset root and categories")
    chunks, categories = None, []
    for batch in tqdm(make_loader(dataset, batch_size, num_workers), desc="features (train)", disable=not progress,
                      leave=False):
        features = model.extract(batch["image"])
        chunks = [[] for _ in features] if chunks is None else chunks
        for store, value in zip(chunks, features):
            store.append(value.float())
        categories += list(batch.get("category", [""] * len(batch["image"])))
    return [torch.cat(store) for store in chunks], categories


class KSVDProgress:
    """The detector's fit callback: a tqdm bar per feature set and the time of each iteration."""

    def __init__(self, n_iter: int, show: bool) -> None:
        self.n_iter, self.show = n_iter, show
        self.iteration_seconds: list[float] = []
        self._bar = None
        self._last = time.perf_counter()

    def __call__(self, set_name: str, iteration: int, error: float) -> None:
        now = time.perf_counter()
        if iteration == 0:
            self.close()
            self._bar = tqdm(total=self.n_iter, desc=f"K-SVD {set_name}", leave=False,
                             disable=not self.show or self.n_iter == 0)
        else:
            self.iteration_seconds.append(now - self._last)
            self._bar.set_postfix(error=f"{error:.4f}")
            self._bar.update()
        self._last = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def seconds_per_iteration(self) -> float:
        return sum(self.iteration_seconds) / max(1, self.n_iter)


def fit(model: PSDL, dataset: Dataset, *, batch_size: int = 32, num_workers: int = 0,
        progress: bool = True, cache: bool = False, folds: int | None = None, seed: int = 0) -> FitTimes:
    """Extract training features and fit ``model`` on them (all categories at once).

    With ``cache`` (an :class:`~gpuksvd.data.ImageDataset`), the features are read from, or
    written to, the feature cache (:mod:`~gpuksvd.runs.feature_cache`). With ``folds`` (≥ 2),
    also set ``model.out_of_fold_scores_``, each training image scored by a model fitted
    without its fold (:func:`~gpuksvd.evaluation.crossfit_folds`, seeded by ``seed``).
    """
    start = time.perf_counter()
    # before the (long) feature extraction
    model.check_training_size(len(dataset), None if folds is None else smallest_fold_complement(len(dataset), folds))
    loaded, cache_path = None, None
    if cache:
        cache_path = cached_features_path(model, dataset)
        loaded = load_features(cache_path)
        if loaded is not None:
            log.info("training features from the cache: %s (%s)", cache_path, size_text(cache_path.stat().st_size))
    if loaded is not None:
        features, categories = loaded
    else:
        features, categories = extract_training_features(model, dataset, batch_size=batch_size,
                                                         num_workers=num_workers, progress=progress)
        if cache_path is not None:
            save_features(cache_path, features, categories)
            log.info("cached the training features (%s) at %s; cache=false skips this",
                     size_text(cache_path.stat().st_size), cache_path)
    synchronize(model.device)
    extracted = time.perf_counter()
    tracker = KSVDProgress(model.config.n_iter, progress)
    try:
        model.fit_features(features, categories, callback=tracker)
    finally:
        tracker.close()
    synchronize(model.device)
    done = time.perf_counter()
    if folds is not None:
        fold_tracker = KSVDProgress(model.config.n_iter, progress)
        try:
            model.out_of_fold_scores_ = model.out_of_fold_image_scores(features, crossfit_folds(categories, folds, seed),
                                                                       callback=fold_tracker)
        finally:
            fold_tracker.close()
        synchronize(model.device)
    return FitTimes(features=extracted - start, ksvd=done - extracted, ksvd_per_iter=tracker.seconds_per_iteration,
                    total=done - start, crossfit=0.0 if folds is None else time.perf_counter() - done)


@dataclass
class Predictions:
    """Scores of a test set, in dataset order.

    Attributes
    ----------
    image_scores : Tensor of shape (M,)
    maps : Tensor of shape (M, H, W)
    labels : Tensor of shape (M,)
    masks : Tensor of shape (M, H, W), bool, or None
    has_mask : Tensor of shape (M,), bool
    categories, paths, defect_types : list of str
    seconds : float
        Wall-clock scoring time (features + OMP + maps).
    descriptors : list of Tensor of shape (M, h, w, 2), or None
        Per feature set, (L1 norm of the code, squared reconstruction error) of every location,
        when asked for (``keep_descriptors=True``).
    """

    image_scores: Tensor
    maps: Tensor
    labels: Tensor
    masks: Tensor | None
    has_mask: Tensor
    categories: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    defect_types: list[str] = field(default_factory=list)
    seconds: float = 0.0
    descriptors: list[Tensor] | None = None


@torch.no_grad()
def predict(model: PSDL, dataset: Dataset, *, batch_size: int = 32, num_workers: int = 0,
            progress: bool = True, keep_descriptors: bool = False) -> Predictions:
    """Anomaly maps and image scores of every image of ``dataset``."""
    if len(dataset) == 0:
        raise ValueError("nothing to score: the dataset is empty (check its folders and categories)")
    scores, maps, labels, masks, has_mask, descriptors = [], [], [], [], [], []
    categories, paths, defect_types = [], [], []
    start = time.perf_counter()
    for batch in tqdm(make_loader(dataset, batch_size, num_workers), desc="scoring", disable=not progress,
                      leave=False):
        batch_maps, batch_descriptors = model.score(batch["image"])
        batch_maps = batch_maps.cpu()
        if keep_descriptors:
            descriptors.append([d.cpu() for d in batch_descriptors])
        scores.append(image_scores(batch_maps))
        maps.append(batch_maps)
        n = len(batch_maps)
        labels.append(torch.as_tensor(batch.get("label", torch.zeros(n, dtype=torch.long))))
        if "mask" in batch:
            masks.append(batch["mask"][:, 0] > 0.5)
        has_mask.append(torch.as_tensor(batch.get("has_mask", torch.zeros(n, dtype=torch.bool))))
        categories += list(batch.get("category", [""] * n))
        paths += list(batch.get("path", [""] * n))
        defect_types += list(batch.get("defect_type", [""] * n))
    synchronize(model.device)
    return Predictions(
        image_scores=torch.cat(scores), maps=torch.cat(maps), labels=torch.cat(labels),
        masks=torch.cat(masks) if masks else None, has_mask=torch.cat(has_mask), categories=categories,
        paths=paths, defect_types=defect_types, seconds=time.perf_counter() - start,
        descriptors=[torch.cat(parts) for parts in zip(*descriptors)] if keep_descriptors else None)


def normalized_scores(predictions: Predictions, model: PSDL, normalize: str) -> Tensor:
    """Image scores after per-category normalisation (:mod:`gpuksvd.evaluation.normalization`)."""
    return normalize_scores(predictions.image_scores, predictions.categories, method=normalize,
                            train_scores=model.train_scores_.cpu(), train_categories=model.train_categories)


def evaluate_predictions(predictions: Predictions, model: PSDL, groups: Mapping[str, Sequence[str]] | None = None,
                         *, normalize: str = "none") -> MetricsReport:
    """Per-category and averaged metrics of ``predictions``; the image F1 at the model's
    thresholds (raw scores against raw thresholds, whatever the normalisation)."""
    report = evaluate(normalized_scores(predictions, model, normalize), predictions.maps, predictions.labels,
                      predictions.masks, predictions.has_mask, predictions.categories, groups or {})
    if model.threshold_categories:
        with_f1 = evaluate(predictions.image_scores, None, predictions.labels, None, None, predictions.categories,
                           groups or {}, thresholds=per_image(predictions.categories, model.thresholds))
        for table, f1_table in zip((*report.per_category.values(), *report.groups.values(), report.mean),
                                   (*with_f1.per_category.values(), *with_f1.groups.values(), with_f1.mean)):
            table["image_f1"] = f1_table["image_f1"]
    return report


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; other names are checked
    (:func:`~gpuksvd.runs.config.check_device`)."""
    from .config import check_device

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocator peak on a GPU, max RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
