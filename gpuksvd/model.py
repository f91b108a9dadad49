"""The PSDL detector: per-location dictionaries and Gaussians over one or more feature sets.

Fit (paper, Sec. 2): training features → K-SVD per location → per-location Gaussian over
(L1 norm of the code, squared reconstruction error). Score: fresh OMP codes → Mahalanobis
distance per location → bicubic upsampling → Gaussian blur (σ = 4) → image score = maximum.

Fitted state lives in registered buffers (``dictionaries_``, ``mean_``, ``precision_`` …) so that
``state_dict()`` holds everything; :mod:`gpuksvd.model_io` writes and reads model files.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .gaussian import code_descriptors, fit_gaussian, mahalanobis
from .dictionaries import INITS
from .ksvd import ATOM_UPDATES, ksvd
from .maps import anomaly_maps, image_scores
from .omp import batch_omp

STATS_CODES = ("ksvd", "omp")


@dataclass
class PSDLConfig:
    """Dictionary learning and scoring settings (the paper's defaults).

    Attributes
    ----------
    n_atoms : int or None
        Atoms per location; None gives a square dictionary (K = C).
    sparsity : float
        Non-zeros per code as a fraction of the atoms (paper: 1/4), rounded, at least 1.
    n_iter : int
        K-SVD iterations (0: fixed initial dictionary, OMP only).
    init : str
        ``"dct"``, ``"dct2d"``, ``"haar"`` or ``"random"``.
    atom_update : str
        ``"approximate"`` (reference code) or ``"exact"``.
    stats_codes : str
        Codes the Gaussian is fitted on: ``"ksvd"`` (those after the last atom update, as the
        reference code) or ``"omp"`` (fresh OMP codes, as at test time).
    covariance_reg : float
        λ in Σ + λI.
    sigma : float
        Gaussian blur of the anomaly maps, in pixels.
    seed : int
        Seeds ``init="random"``.
    max_memory : int or None
        Working-memory budget of K-SVD / OMP in bytes (None: automatic).
    """

    n_atoms: int | None = None
    sparsity: float = 0.25
    n_iter: int = 20
    init: str = "dct"
    atom_update: str = "approximate"
    stats_codes: str = "ksvd"
    covariance_reg: float = 0.01
    sigma: float = 4.0
    seed: int = 0
    max_memory: int | None = None

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}: choose one of {', '.join(INITS)}")
        if self.atom_update not in ATOM_UPDATES:
            raise ValueError(f"unknown atom_update {self.atom_update!r}: choose one of {', '.join(ATOM_UPDATES)}")
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int) or self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer (0: fixed dictionary), got {self.n_iter!r}")
        if self.covariance_reg < 0 or self.sigma < 0:
            raise ValueError(f"covariance_reg and sigma must be ≥ 0, got {self.covariance_reg} and {self.sigma}")
        if not 0 < self.sparsity <= 1:
            raise ValueError(f"sparsity must be a fraction of the atoms in (0, 1], got {self.sparsity}")
        if self.stats_codes not in STATS_CODES:
            raise ValueError(f"stats_codes must be one of {STATS_CODES}, got {self.stats_codes!r}")
        if self.n_atoms is not None and self.n_atoms < 1:
            raise ValueError(f"n_atoms must be a positive integer or None (square), got {self.n_atoms}")

    def atoms_for(self, n_features: int) -> int:
        return n_features if self.n_atoms is None else int(self.n_atoms)

    def check_features(self, n_features: int, name: str) -> None:
        """Refuse settings that cannot work on ``n_features`` channels, before any data is read."""
        n_atoms = self.atoms_for(n_features)
        if self.init == "haar" and n_atoms > n_features:
            raise ValueError(
                f"init=haar gives at most {n_features} atoms on {name!r} ({n_features} channels), but "
                f"n_atoms={n_atoms}: use ksvd.init=dct or random, or ksvd.n_atoms ≤ {n_features}"
            )
        if round(self.sparsity * n_atoms) > n_features:
            warnings.warn(
                f"sparsity={self.sparsity} of n_atoms={n_atoms} asks for {round(self.sparsity * n_atoms)} non-zeros "
                f"per code, but the {n_features} channels of {name!r} allow at most {n_features} independent "
                f"atoms: the codes use {n_features}. Lower ksvd.sparsity or ksvd.n_atoms to silence this.",
                UserWarning,
                stacklevel=2,
            )
        if self.init == "dct2d" and (math.isqrt(n_features) ** 2 != n_features or math.isqrt(n_atoms) ** 2 != n_atoms):
            raise ValueError(
                f"init=dct2d needs square channel and atom counts, got {n_features} channels and {n_atoms} "
                f"atoms on {name!r}: set backbone.trim_to_square=true (and a square ksvd.n_atoms), or use ksvd.init=dct"
            )

    def nonzero_for(self, n_atoms: int, n_features: int) -> int:
        return max(1, min(round(self.sparsity * n_atoms), n_atoms, n_features))


class LocationModel(nn.Module):
    """Dictionaries and Gaussians of one feature set (P = h·w locations).

    Buffers
    -------
    dictionaries_ : (P, K, C)
    mean_ : (P, 2)
    precision_ : (P, 2, 2)
    train_error_ : (n_iter + 1, P) relative training reconstruction error per location
    """

    def __init__(self, n_locations: int, n_atoms: int, n_features: int, n_iter: int) -> None:
        super().__init__()
        self.register_buffer("dictionaries_", torch.zeros(n_locations, n_atoms, n_features))
        self.register_buffer("mean_", torch.zeros(n_locations, 2))
        self.register_buffer("precision_", torch.zeros(n_locations, 2, 2))
        self.register_buffer("train_error_", torch.zeros(n_iter + 1, n_locations))

    def fit(self, signals: Tensor, config: PSDLConfig,
            callback: Callable[[int, float], None] | None = None) -> Tensor:
        """Learn from training signals (P, N, C); returns their Mahalanobis distances (P, N),
        scored with fresh OMP codes as test signals are."""
        n_atoms = self.dictionaries_.shape[1]
        n_nonzero = config.nonzero_for(n_atoms, signals.shape[-1])
        generator = torch.Generator().manual_seed(config.seed)  # initial atoms are drawn on the CPU
        result = ksvd(signals, n_atoms, n_nonzero, config.n_iter, init=config.init,
                      atom_update=config.atom_update, generator=generator, callback=callback,
                      max_memory=config.max_memory)
        fresh_codes = batch_omp(result.dictionary, signals, n_nonzero, max_memory=config.max_memory)
        fresh = code_descriptors(signals, result.dictionary, fresh_codes)
        descriptors = fresh if config.stats_codes == "omp" else code_descriptors(signals, result.dictionary, result.codes)
        mean, precision = fit_gaussian(descriptors, config.covariance_reg)
        self.dictionaries_.copy_(result.dictionary)
        self.mean_.copy_(mean)
        self.precision_.copy_(precision)
        self.train_error_.copy_(result.location_error)
        # Training images are scored as test images are (fresh OMP codes), so that the
        # per-category normalisation from training scores compares like with like.
        return mahalanobis(fresh, mean, precision)

    def location_scores(self, signals: Tensor, n_nonzero: int, max_memory: int | None = None) -> tuple[Tensor, Tensor]:
        """Mahalanobis distances (P, B) of test signals (P, B, C), and their descriptors (P, B, 2)."""
        dictionaries = self.dictionaries_.to(signals.dtype)
        codes = batch_omp(dictionaries, signals, n_nonzero, max_memory=max_memory)
        descriptors = code_descriptors(signals, dictionaries, codes)
        return mahalanobis(descriptors, self.mean_.to(signals.dtype), self.precision_.to(signals.dtype)), descriptors


@dataclass
class FitTimes:
    """Wall-clock seconds of a fit."""

    features: float
    ksvd: float
    ksvd_per_iter: float
    total: float


def to_signals(features: Tensor) -> Tensor:
    """(N, C, h, w) feature maps → (P = h·w, N, C) signals."""
    return features.flatten(2).permute(2, 0, 1).contiguous()


class PSDL(nn.Module):
    """A fitted-or-not PSDL model over the feature sets of an extractor.

    Parameters
    ----------
    extractor : FeatureExtractor
        Gives the feature sets (see :mod:`gpuksvd.features`).
    config : PSDLConfig
    image_size : (H, W)
        Input size; fixes the feature-map sizes, hence P per feature set.
    """

    def __init__(self, extractor: nn.Module, config: PSDLConfig, image_size: Sequence[int]) -> None:
        super().__init__()
        self.extractor = extractor
        self.config = config
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.feature_shapes = extractor.output_shapes(self.image_size)
        for (channels, _, _), name in zip(self.feature_shapes, extractor.set_names):
            config.check_features(channels, name)
        #: Geometry of the training images (resize/crop …), recorded so that a folder of new
        #: images can be scored the same way; set by whoever builds the training data.
        self.preprocess: dict = {}
        self.sets = nn.ModuleList(
            LocationModel(h * w, config.atoms_for(c), c, config.n_iter) for c, h, w in self.feature_shapes
        )
        self.register_buffer("train_scores_", torch.zeros(0))
        self.train_categories: list[str] = []

    @property
    def device(self) -> torch.device:
        return self.train_scores_.device

    def n_nonzero(self, index: int) -> int:
        channels = self.feature_shapes[index][0]
        return self.config.nonzero_for(self.config.atoms_for(channels), channels)

    def extract(self, images: Tensor) -> list[Tensor]:
        """Feature sets (B, C, h, w) of a batch, checked against the model's image size."""
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the model was built for {self.image_size}: "
                "use the same preprocessing (resize/crop) for training and testing"
            )
        return self.extractor(images.to(self.device))

    def fit_features(self, feature_sets: Sequence[Tensor], categories: Sequence[str] = (),
                     progress: bool = True) -> float:
        """Fit on precomputed training features.

        Parameters
        ----------
        feature_sets : sequence of Tensor of shape (N, C_i, h_i, w_i)
            One per feature set, N training images.
        categories : sequence of str, length N (optional)
            Category of each training image, kept for leak-free per-category normalisation.

        Returns
        -------
        float
            Seconds per K-SVD iteration (all feature sets): the wall time of the K-SVD runs over
            n_iter, where the initial coding counts as the first iteration's sparse coding.
        """
        from tqdm.auto import tqdm

        n_train = feature_sets[0].shape[0]
        for features, expected, name in zip(feature_sets, self.feature_shapes, self.extractor.set_names):
            if tuple(features.shape[1:]) != tuple(expected) or features.shape[0] != n_train:
                raise ValueError(
                    f"training features of {name!r} have shape {tuple(features.shape)}, expected "
                    f"({n_train}, {', '.join(map(str, expected))}) for {self.image_size} images"
                )
        location_scores, iteration_times = [], []
        for index, (features, location_model) in enumerate(zip(feature_sets, self.sets)):
            signals = to_signals(features.to(self.device, torch.float32))
            bar = tqdm(total=self.config.n_iter, desc=f"K-SVD {self.extractor.set_names[index]}",
                       disable=not progress or self.config.n_iter == 0, leave=False)
            start = [time.perf_counter()]

            def tick(iteration: int, error: float) -> None:
                now = time.perf_counter()
                iteration_times.append(now - start[0])
                start[0] = now
                bar.set_postfix(error=f"{error:.4f}")
                bar.update()

            scores = location_model.fit(signals, self.config, callback=tick)
            bar.close()
            height, width = self.feature_shapes[index][1:]
            location_scores.append(scores.T.reshape(n_train, height, width))
        self.train_scores_ = self._image_scores_in_batches(location_scores)
        self.train_categories = list(categories)
        return sum(iteration_times) / max(1, self.config.n_iter)

    def _image_scores_in_batches(self, location_scores: list[Tensor], batch: int = 64) -> Tensor:
        scores = [image_scores(anomaly_maps([s[i : i + batch] for s in location_scores], self.image_size,
                                            self.config.sigma))
                  for i in range(0, location_scores[0].shape[0], batch)]
        return torch.cat(scores) if scores else torch.zeros(0, device=self.device)

    @torch.no_grad()
    def anomaly_maps(self, images: Tensor) -> Tensor:
        """Anomaly maps (B, H, W) of normalised images (B, 3, H, W)."""
        return self.score(images)[0]

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Anomaly maps (B, H, W) and, per feature set, the descriptors (B, h, w, 2): L1 norm of
        the code and squared reconstruction error of every location."""
        location_scores, descriptors = [], []
        for index, (features, location_model) in enumerate(zip(self.extract(images), self.sets)):
            scores, values = location_model.location_scores(to_signals(features.float()), self.n_nonzero(index),
                                                            self.config.max_memory)
            grid = (features.shape[0], *features.shape[-2:])
            location_scores.append(scores.T.reshape(grid))
            descriptors.append(values.transpose(0, 1).reshape(*grid, 2))
        return anomaly_maps(location_scores, self.image_size, self.config.sigma), descriptors

    def describe(self) -> dict:
        """JSON-able description of everything but the tensors."""
        return {
            "extractor": self.extractor.describe(),
            "config": asdict(self.config),
            "image_size": list(self.image_size),
            "preprocess": dict(self.preprocess),
            "train_categories": list(self.train_categories),
        }
