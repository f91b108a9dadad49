"""Fit a PSDL model on a dataset and score a dataset, with progress bars and timings.

Everything here works on plain torch datasets whose items are dicts with at least ``image``
(and, for evaluation, ``label``, ``mask``, ``has_mask``, ``category``, ``path``), as
:class:`gpuksvd.data.ImageDataset` serves them. No Hydra: the entry scripts call these.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .metrics import MetricsReport, evaluate, normalize_per_category
from .model import PSDL, FitTimes

NORMALIZATIONS = ("none", "minmax", "train")


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


def fit(model: PSDL, dataset: Dataset, *, batch_size: int = 32, num_workers: int = 0,
        progress: bool = True) -> FitTimes:
    """Extract training features and fit ``model`` on them (all categories at once)."""
    start = time.perf_counter()
    n_train = len(dataset)  # checked before the (long) feature extraction
    for (channels, _, _), name in zip(model.feature_shapes, model.extractor.set_names):
        n_atoms = model.config.atoms_for(channels)
        if n_train < n_atoms:
            raise ValueError(
                f"need at least {n_atoms} training images for {n_atoms}-atom dictionaries on {name!r} "
                f"({channels} channels), got {n_train}: add training images, or pick a layer with fewer "
                "channels / set ksvd.n_atoms lower / backbone.trim_to_square=true"
            )
    features, categories = extract_training_features(model, dataset, batch_size=batch_size,
                                                     num_workers=num_workers, progress=progress)
    _synchronize(model.device)
    extracted = time.perf_counter()
    per_iter = model.fit_features(features, categories, progress=progress)
    _synchronize(model.device)
    done = time.perf_counter()
    return FitTimes(features=extracted - start, ksvd=done - extracted, ksvd_per_iter=per_iter, total=done - start)


@dataclass
class Predictions:
    """Scores of a test set, in dataset order.

    Attributes
    ----------
    image_scores : Tensor of shape (M,)
    maps : Tensor of shape (M, H, W) or None (when not kept)
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
    maps: Tensor | None
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
            progress: bool = True, keep_maps: bool = True, keep_descriptors: bool = False) -> Predictions:
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
        scores.append(batch_maps.flatten(1).amax(1))
        if keep_maps:
            maps.append(batch_maps)
        n = len(batch_maps)
        labels.append(torch.as_tensor(batch.get("label", torch.zeros(n, dtype=torch.long))))
        if "mask" in batch:
            masks.append(batch["mask"][:, 0] > 0.5)
        has_mask.append(torch.as_tensor(batch.get("has_mask", torch.zeros(n, dtype=torch.bool))))
        categories += list(batch.get("category", [""] * n))
        paths += list(batch.get("path", [""] * n))
        defect_types += list(batch.get("defect_type", [""] * n))
    _synchronize(model.device)
    return Predictions(
        image_scores=torch.cat(scores), maps=torch.cat(maps) if keep_maps else None, labels=torch.cat(labels),
        masks=torch.cat(masks) if masks else None, has_mask=torch.cat(has_mask), categories=categories,
        paths=paths, defect_types=defect_types, seconds=time.perf_counter() - start,
        descriptors=[torch.cat(parts) for parts in zip(*descriptors)] if keep_descriptors else None)


def normalized_scores(predictions: Predictions, model: PSDL, normalize: str) -> Tensor:
    """Image scores after per-category normalisation (``"none"``, ``"minmax"`` or ``"train"``)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if normalize == "none":
        return predictions.image_scores
    return normalize_per_category(predictions.image_scores, predictions.categories, method=normalize,
                                  train_scores=model.train_scores_.cpu(), train_categories=model.train_categories)


def evaluate_predictions(predictions: Predictions, model: PSDL, groups: Mapping[str, Sequence[str]] | None = None,
                         *, normalize: str = "none") -> MetricsReport:
    """Per-category and averaged metrics of ``predictions``."""
    return evaluate(normalized_scores(predictions, model, normalize), predictions.maps, predictions.labels,
                    predictions.masks, predictions.has_mask, predictions.categories, groups or {})


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocator peak on a GPU, max RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
