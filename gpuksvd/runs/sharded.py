"""Who does what in a run over several processes: the shares of images and of locations.

Fit (every process, rank r of W):

1. **Images.** The training images, in dataset order, are cut into batches of ``batch_size``;
   rank r extracts the features of a contiguous block of whole batches (rank order is image
   order). Each image therefore goes through the backbone in the batch it would be in with one
   process, and its features are the same.
2. **Exchange.** The P locations of each feature set are cut into W contiguous blocks; one
   all-to-all sends every process the signals of its block from every image, so that rank r
   holds all N signals of its locations, (P_r, N, C), in image order.
3. **Fit.** Rank r runs K-SVD and fits the Gaussians for its locations, starting from its slice
   of the initial dictionaries drawn for all P from the seed
   (:meth:`~gpuksvd.detector.LocationModel.initial_dictionaries`): every location's result is
   the one a single process would get, to float32 rounding, whatever W.
4. **Assembly.** The fitted buffers are all-gathered, so that every process holds the whole
   model (to score its test images); the training scores go back to the image owners (the
   reverse all-to-all), which compute their image scores, all-gathered in image order.
   Rank 0 writes the model file, once, atomically.

Scoring: rank r scores a contiguous block of whole test batches with the whole model; rank 0
gathers the scores and maps (point to point) and computes the metrics once.

Memory per process: the features of its images, the signals of its locations (twice while they
arrive), K-SVD's working memory for P/W locations, and the whole model.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..detector import PSDL, LocationModel
from ..detector.model import to_signals
from ..evaluation import crossfit_folds, smallest_fold_complement
from .config import ConfigError
from .feature_cache import cached_features_path, load_features
from .loops import FitTimes, KSVDProgress, Predictions, extract_training_features, predict, synchronize

log = logging.getLogger("gpuksvd")


def share(n: int, parts: int, index: int) -> range:
    """Part ``index`` of ``range(n)`` cut into ``parts`` contiguous blocks whose sizes differ by at
    most one (the first ``n % parts`` blocks are one longer)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def batch_shares(n_images: int, batch_size: int, parts: int) -> list[range]:
    """The image block of each part: whole batches of ``batch_size``, contiguous, in order (a
    part gets none when there are fewer batches than parts)."""
    n_batches = math.ceil(n_images / batch_size)
    blocks = [share(n_batches, parts, index) for index in range(parts)]
    return [range(min(block.start * batch_size, n_images), min(block.stop * batch_size, n_images)) for block in blocks]


def check_locations(feature_shapes: Sequence[Sequence[int]], names: Sequence[str], world_size: int) -> None:
    """Refuse more processes than a feature set has locations (a process would have none)."""
    for (_, height, width), name in zip(feature_shapes, names):
        if height * width < world_size:
            raise ConfigError(
                f"{name!r} has {height * width} locations ({height}x{width}) for {world_size} processes: every "
                f"process fits a share of the locations, so start at most {height * width} processes "
                "(--nproc-per-node), or use larger images or an earlier layer"
            )


def fit_sharded(model: PSDL, dataset: Dataset, group, *, batch_size: int = 32, num_workers: int = 0,
                progress: bool = True, cache: bool = False, folds: int | None = None, seed: int = 0) -> FitTimes:
    """:func:`~gpuksvd.runs.loops.fit` over the processes of ``group`` (see the module docstring);
    every process ends with the whole fitted model (and, with ``folds``, the out-of-fold
    training scores: each process runs the fold fits of its locations, as it runs the fit)."""
    start = time.perf_counter()
    model.check_training_size(len(dataset), None if folds is None else smallest_fold_complement(len(dataset), folds))
    shares = batch_shares(len(dataset), batch_size, group.world_size)
    mine = shares[group.rank]
    image_counts = [len(block) for block in shares]
    features, categories = local_features(model, dataset, mine, batch_size=batch_size, num_workers=num_workers,
                                          progress=progress and group.is_root, cache=cache, root=group.is_root)
    categories = [name for part in group.all_gather_objects(categories, "training categories") for name in part]
    synchronize(model.device)
    extracted = time.perf_counter()
    tracker = KSVDProgress(model.config.n_iter, progress and group.is_root)
    fold_of_image = None if folds is None else crossfit_folds(categories, folds, seed)
    by_image, held_out_by_image, crossfit_seconds = [], [], 0.0
    try:
        for index, (location_model, name, (channels, height, width)) in enumerate(
                zip(model.sets, model.extractor.set_names, model.feature_shapes)):
            n_locations = height * width
            location_counts = [len(share(n_locations, group.world_size, rank)) for rank in range(group.world_size)]
            locations = share(n_locations, group.world_size, group.rank)
            signals = to_locations(group, to_signals(features[index].to(model.device, torch.float32)), image_counts,
                                   location_counts, name)
            features[index] = None  # the exchanged signals replace them
            part = LocationModel(len(locations), location_model.dictionaries_.shape[1], channels,
                                 model.config.n_iter).to(model.device)
            tracker(name, 0, float("nan"))
            initial = location_model.initial_dictionaries(model.config, slice(locations.start, locations.stop))
            scores = part.fit(signals, model.config,
                              callback=lambda iteration, error, name=name: tracker(name, iteration, error),
                              initial=initial)
            if fold_of_image is not None:
                crossfit_start = time.perf_counter()
                held_out = part.out_of_fold_scores(signals, model.config, fold_of_image, initial=initial)
                held_out_by_image.append(to_images(group, held_out, image_counts, location_counts, name)
                                         .T.reshape(len(mine), height, width))
                synchronize(model.device)
                crossfit_seconds += time.perf_counter() - crossfit_start
            del signals
            for buffer, dim in LocationModel.location_dims.items():
                getattr(location_model, buffer).copy_(
                    group.all_gather_along(getattr(part, buffer), location_counts, dim, f"fitted {buffer} of {name}"))
            own_images = to_images(group, scores, image_counts, location_counts, name)  # (P, n_r)
            by_image.append(own_images.T.reshape(len(mine), height, width))
    finally:
        tracker.close()
    train_scores = model.image_scores_of(by_image)
    model.train_scores_ = group.all_gather_along(train_scores, image_counts, 0, "training image scores")
    model.train_categories = categories
    if fold_of_image is not None:
        model.out_of_fold_scores_ = group.all_gather_along(model.image_scores_of(held_out_by_image), image_counts, 0,
                                                           "out-of-fold training image scores")
    synchronize(model.device)
    done = time.perf_counter()
    return FitTimes(features=extracted - start, ksvd=done - extracted - crossfit_seconds,
                    ksvd_per_iter=tracker.seconds_per_iteration, total=done - start - crossfit_seconds,
                    crossfit=crossfit_seconds)


def local_features(model: PSDL, dataset: Dataset, images: range, *, batch_size: int, num_workers: int,
                   progress: bool, cache: bool, root: bool) -> tuple[list[Tensor], list[str]]:
    """The feature sets (n, C, h, w) and categories of this process's ``images``: read from the
    feature cache when it holds them, else extracted (the cache is written by single-process
    runs only: no process holds all the features here)."""
    if cache:
        path = cached_features_path(model, dataset)
        loaded = load_features(path, images=slice(images.start, images.stop))
        if loaded is not None:
            if root:
                log.info("training features from the cache: %s", path)
            return loaded
        if root:
            log.info("training features are not written to the cache by a run over several processes (each "
                     "holds a share); a single-process run with the same data and backbone writes them")
    if len(images) == 0:
        shapes = model.feature_shapes
        return [torch.zeros(0, c, h, w, device=model.device) for c, h, w in shapes], []
    return extract_training_features(model, Subset(dataset, images), batch_size=batch_size, num_workers=num_workers,
                                     progress=progress)


def to_locations(group, signals: Tensor, image_counts: Sequence[int], location_counts: Sequence[int],
                 name: str) -> Tensor:
    """(P, n_r, C) signals of this process's images → (P_r, N, C) signals of its locations, the
    N images in rank (= image) order."""
    _, n_images, channels = signals.shape
    mine = location_counts[group.rank]
    received = group.all_to_all(signals, [count * n_images * channels for count in location_counts],
                                [mine * count * channels for count in image_counts], f"signals of {name}")
    pieces = received.split([mine * count * channels for count in image_counts])
    return torch.cat([piece.view(mine, count, channels) for piece, count in zip(pieces, image_counts)], dim=1)


def to_images(group, scores: Tensor, image_counts: Sequence[int], location_counts: Sequence[int], name: str) -> Tensor:
    """(P_r, N) scores of this process's locations → (P, n_r) scores of its images."""
    starts = [sum(image_counts[:rank]) for rank in range(len(image_counts))]
    outgoing = torch.cat([scores[:, start:start + count].reshape(-1) for start, count in zip(starts, image_counts)])
    mine = image_counts[group.rank]
    received = group.all_to_all(outgoing, [len(scores) * count for count in image_counts],
                                [count * mine for count in location_counts], f"training scores of {name}")
    return received.view(sum(location_counts), mine)


def predict_sharded(model: PSDL, dataset: Dataset, group, *, batch_size: int = 32, num_workers: int = 0,
                    progress: bool = True, keep_descriptors: bool = False) -> Predictions | None:
    """:func:`~gpuksvd.runs.loops.predict` over the processes of ``group``: the whole
    :class:`~gpuksvd.runs.loops.Predictions` on rank 0, None on the others."""
    start = time.perf_counter()
    mine = batch_shares(len(dataset), batch_size, group.world_size)[group.rank]
    local = None
    if len(mine):
        local = predict(model, Subset(dataset, mine), batch_size=batch_size, num_workers=num_workers,
                        progress=progress and group.is_root, keep_descriptors=keep_descriptors)
    texts = group.all_gather_objects(None if local is None else (local.categories, local.paths, local.defect_types),
                                     "test image names")
    fields = {}
    for field in ("image_scores", "maps", "labels", "masks", "has_mask"):
        fields[field] = group.gather_to_root(None if local is None else getattr(local, field), f"test {field}")
    descriptors = None
    if keep_descriptors:
        n_sets = len(model.sets)
        descriptors = [group.gather_to_root(None if local is None else local.descriptors[index], "test descriptors")
                       for index in range(n_sets)]
    if not group.is_root:
        return None
    categories, paths, defect_types = ([item for part in texts if part is not None for item in part[column]]
                                       for column in range(3))
    return Predictions(**fields, categories=categories, paths=paths, defect_types=defect_types,
                       seconds=time.perf_counter() - start, descriptors=descriptors)


__all__ = ["batch_shares", "check_locations", "fit_sharded", "local_features", "predict_sharded", "share",
           "to_images", "to_locations"]
