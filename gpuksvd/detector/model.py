"""The PSDL detector: per-location dictionaries and Gaussians over one or more feature sets.

Fit (paper, Sec. 2): training features → K-SVD per location → per-location Gaussian over
(L1 norm of the code, squared reconstruction error). Score: fresh OMP codes → Mahalanobis
distance per location → bicubic upsampling → Gaussian blur (σ = 4) → image score = maximum.

Fitted state lives in registered buffers (``dictionaries_``, ``mean_``, ``precision_`` …) so that
``state_dict()`` holds everything and ``load_state_dict()`` restores it;
:mod:`~gpuksvd.detector.model_file` writes and reads model files.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import torch
from torch import Tensor, nn

from ..data.transforms import Preprocess
from ..sparse import batch_omp, initial_dictionary, ksvd
from .config import PSDLConfig
from .gaussian import code_descriptors, fit_gaussian, mahalanobis
from .maps import anomaly_maps, image_scores

#: ``callback(set_name, iteration, relative_error)`` of :meth:`PSDL.fit_features`: iteration 0
#: (error NaN) when a feature set's K-SVD starts, then 1 … n_iter after each iteration.
FitCallback = Callable[[str, int, float], None]


class LocationModel(nn.Module):
    """Dictionaries and Gaussians of one feature set (P = h·w locations).

    Buffers
    -------
    dictionaries_ : (P, K, C)
    mean_ : (P, 2)
    precision_ : (P, 2, 2)
    train_error_ : (n_iter + 1, P) relative training reconstruction error per location
    train_mse_ : (n_iter + 1, P) its mean squared error, ``‖X − ΓD‖²_F / (N·C)`` (the paper's figures)
    """

    #: The dimension of each buffer that runs over the locations (a fit of a share of the
    #: locations fills that slice of each).
    location_dims = {"dictionaries_": 0, "mean_": 0, "precision_": 0, "train_error_": 1, "train_mse_": 1}

    def __init__(self, n_locations: int, n_atoms: int, n_features: int, n_iter: int) -> None:
        super().__init__()
        self.register_buffer("dictionaries_", torch.zeros(n_locations, n_atoms, n_features))
        self.register_buffer("mean_", torch.zeros(n_locations, 2))
        self.register_buffer("precision_", torch.zeros(n_locations, 2, 2))
        self.register_buffer("train_error_", torch.zeros(n_iter + 1, n_locations))
        self.register_buffer("train_mse_", torch.zeros(n_iter + 1, n_locations))

    def fit(self, signals: Tensor, config: PSDLConfig,
            callback: Callable[[int, float], None] | None = None, initial: Tensor | None = None) -> Tensor:
        """Learn from training signals (P, N, C); returns their Mahalanobis distances (P, N),
        scored with fresh OMP codes as test signals are.

        ``initial`` (P, K, C), optional, replaces the starting atoms of ``config.init``: a fit of
        a share of the locations passes its slice of :meth:`initial_dictionaries` of the whole
        model, so that every location starts where it would in one fit of all of them.
        """
        n_atoms = self.dictionaries_.shape[1]
        n_nonzero = config.nonzero_for(n_atoms, signals.shape[-1])
        generator = torch.Generator().manual_seed(config.seed)  # initial atoms are drawn on the CPU
        result = ksvd(signals, n_atoms, n_nonzero, config.n_iter, init=config.init if initial is None else initial,
                      atom_update=config.atom_update, generator=generator, callback=callback,
                      max_memory=config.max_memory, dead_atoms=config.dead_atoms, kernel=config.kernel)
        fresh_codes = batch_omp(result.dictionary, signals, n_nonzero, max_memory=config.max_memory,
                                kernel=config.kernel)
        fresh = code_descriptors(signals, result.dictionary, fresh_codes)
        descriptors = fresh if config.stats_codes == "omp" else code_descriptors(signals, result.dictionary, result.codes)
        mean, precision = fit_gaussian(descriptors, config.covariance_reg)
        self.dictionaries_.copy_(result.dictionary)
        self.mean_.copy_(mean)
        self.precision_.copy_(precision)
        self.train_error_.copy_(result.location_error)
        # relative error² × ‖X‖² = ‖X − ΓD‖², per entry of the (N, C) signals of a location
        energy = signals.double().square().sum((1, 2))
        self.train_mse_.copy_(result.location_error.double().square() * energy / signals[0].numel())
        # Training images are scored as test images are (fresh OMP codes), so that the
        # per-category normalisation from training scores compares like with like.
        return mahalanobis(fresh, mean, precision)

    def initial_dictionaries(self, config: PSDLConfig, locations: slice = slice(None)) -> Tensor:
        """The starting atoms (float64, on the CPU) of ``locations`` of this model's P, as
        :meth:`fit` draws them from ``config.seed`` for all P at once.

        Random atoms are drawn for all P locations and then sliced, so a share of the locations
        gets the same atoms whatever the number of shares; the other initial dictionaries are
        the same at every location.
        """
        n_locations, n_atoms, n_features = self.dictionaries_.shape
        wanted = range(n_locations)[locations]
        if config.init != "random":
            return initial_dictionary(config.init, len(wanted), n_atoms, n_features, dtype=torch.float64)
        generator = torch.Generator().manual_seed(config.seed)
        atoms = initial_dictionary("random", n_locations, n_atoms, n_features, generator=generator, dtype=torch.float64)
        return atoms[locations].clone()

    def out_of_fold_scores(self, signals: Tensor, config: PSDLConfig, folds: Tensor,
                           initial: Tensor | None = None,
                           callback: Callable[[str, int, float], None] | None = None) -> Tensor:
        """Mahalanobis distances (P, N) of training signals (P, N, C), each scored by dictionaries
        and Gaussians fitted without its fold (``folds``: (N,) fold of each signal's image), as
        test signals are scored. Leaves this model's buffers alone; ``initial`` as :meth:`fit`;
        ``callback(label, iteration, error)`` follows each fold's K-SVD (label ``"fold k/n"``)."""
        n_locations, n_atoms, n_features = self.dictionaries_.shape
        n_nonzero = config.nonzero_for(n_atoms, n_features)
        folds = folds.to(signals.device)
        scores = signals.new_empty(signals.shape[:2])
        names = folds.unique().tolist()
        for number, fold in enumerate(names, 1):
            held_out = folds == fold
            label = f"fold {number}/{len(names)}"
            part = LocationModel(n_locations, n_atoms, n_features, config.n_iter).to(signals.device)
            if callback is not None:
                callback(label, 0, float("nan"))
            part.fit(signals[:, ~held_out], config, initial=initial,
                     callback=None if callback is None else (lambda it, err, label=label: callback(label, it, err)))
            scores[:, held_out] = part.location_scores(signals[:, held_out], n_nonzero, config.max_memory,
                                                       config.kernel)[0].to(scores.dtype)
        return scores

    def location_scores(self, signals: Tensor, n_nonzero: int, max_memory: int | None = None,
                        kernel: str = "auto") -> tuple[Tensor, Tensor]:
        """Mahalanobis distances (P, B) of test signals (P, B, C), and their descriptors (P, B, 2)."""
        dictionaries = self.dictionaries_.to(signals.dtype)
        codes = batch_omp(dictionaries, signals, n_nonzero, max_memory=max_memory, kernel=kernel)
        descriptors = code_descriptors(signals, dictionaries, codes)
        return mahalanobis(descriptors, self.mean_.to(signals.dtype), self.precision_.to(signals.dtype)), descriptors


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
    preprocess : Preprocess
        How images are brought to the model's input size (resize, crop …). It fixes the
        feature-map sizes, hence P per feature set, and is saved with the model so that new
        images are scored the way the training images were seen.

    Buffers
    -------
    train_scores_ : (N,) image scores of the training images (fresh OMP codes), for the
        leak-free per-category normalisation; ``train_categories`` names their categories.
    thresholds_ : (n,) decision threshold of each category of ``threshold_categories`` on the
        image score (anomalous: score ≥ threshold), set by :meth:`set_thresholds`;
        ``threshold_rule`` records how they were computed.

    Attributes
    ----------
    provenance : dict
        What the model was trained on (dataset settings, the listing's fingerprint …), set by
        whoever fits it and saved with it, so that it can be evaluated on its own data.
    """

    def __init__(self, extractor: nn.Module, config: PSDLConfig, preprocess: Preprocess) -> None:
        super().__init__()
        if not isinstance(preprocess, Preprocess):
            raise TypeError(f"preprocess must be a gpuksvd.data.Preprocess, got {type(preprocess).__name__}: "
                            "e.g. Preprocess(resize=256, crop=224)")
        self.extractor = extractor
        self.config = config
        self.preprocess = preprocess
        self.image_size = tuple(preprocess.output_size)
        self.feature_shapes = extractor.output_shapes(self.image_size)
        for (channels, _, _), name in zip(self.feature_shapes, extractor.set_names):
            config.check_features(channels, name)
        self.sets = nn.ModuleList(
            LocationModel(h * w, config.atoms_for(c), c, config.n_iter) for c, h, w in self.feature_shapes
        )
        self.register_buffer("train_scores_", torch.zeros(0))
        self.train_categories: list[str] = []
        self.register_buffer("thresholds_", torch.zeros(0, dtype=torch.float64))
        self.threshold_categories: list[str] = []
        self.threshold_rule: dict = {}
        self.provenance: dict = {}
        #: Leak-free training image scores (N,) when a run asked for them (threshold.method=crossfit,
        #: :meth:`out_of_fold_image_scores`); not saved in the model file.
        self.out_of_fold_scores_: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.train_scores_.device

    def n_nonzero(self, index: int) -> int:
        channels = self.feature_shapes[index][0]
        return self.config.nonzero_for(self.config.atoms_for(channels), channels)

    def check_training_size(self, n_train: int, fold_fit: int | None = None) -> None:
        """Refuse a training set smaller than any feature set's dictionaries need (before the
        features are extracted); ``fold_fit``: the images of the smallest fit of a crossfit
        (:func:`gpuksvd.evaluation.smallest_fold_complement`), which must be enough too."""
        for (channels, _, _), name in zip(self.feature_shapes, self.extractor.set_names):
            self.config.check_training_size(n_train, channels, name)
            atoms = self.config.atoms_for(channels)
            if fold_fit is None or fold_fit >= atoms:
                continue
            if n_train - 1 < atoms:
                raise ValueError(
                    f"threshold.method=crossfit cannot work on {name!r}: {atoms}-atom dictionaries need {atoms} "
                    f"training images in every fit and a fit without any fold keeps at most {n_train - 1} of the "
                    f"{n_train}: use threshold.method=quantile (in-sample thresholds) or more training images")
            raise ValueError(
                f"threshold.method=crossfit fits {atoms}-atom dictionaries on {name!r} without each fold, on "
                f"{fold_fit} of the {n_train} training images, fewer than the {atoms} atoms: use "
                f"more folds (each fit keeps (folds-1)/folds of the images: threshold.folds=5 keeps 80 %), "
                f"threshold.method=quantile (in-sample thresholds), or more training images")

    def extract(self, images: Tensor) -> list[Tensor]:
        """Feature sets (B, C, h, w) of a batch, checked against the model's image size."""
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the model was built for {self.image_size}: "
                "use the same preprocessing (resize/crop) for training and testing"
            )
        return self.extractor(images.to(self.device))

    def fit_features(self, feature_sets: Sequence[Tensor], categories: Sequence[str] = (),
                     callback: FitCallback | None = None) -> None:
        """Fit on precomputed training features.

        Parameters
        ----------
        feature_sets : sequence of Tensor of shape (N, C_i, h_i, w_i)
            One per feature set, N training images.
        categories : sequence of str, length N (optional)
            Category of each training image, kept for leak-free per-category normalisation.
        callback : callable(set_name, iteration, relative_error), optional
            Progress of each feature set's K-SVD (see :data:`FitCallback`).
        """
        n_train = feature_sets[0].shape[0]
        self._check_training_features(feature_sets)
        location_scores = []
        for features, location_model, name, (_, height, width) in zip(
                feature_sets, self.sets, self.extractor.set_names, self.feature_shapes):
            signals = to_signals(features.to(self.device, torch.float32))
            if callback is not None:
                callback(name, 0, float("nan"))
            set_callback = None if callback is None else (lambda iteration, error, name=name: callback(name, iteration, error))
            scores = location_model.fit(signals, self.config, callback=set_callback)
            location_scores.append(scores.T.reshape(n_train, height, width))
        self.train_scores_ = self.image_scores_of(location_scores)
        self.train_categories = list(categories)

    def out_of_fold_image_scores(self, feature_sets: Sequence[Tensor], folds: Tensor,
                                 callback: FitCallback | None = None) -> Tensor:
        """Leak-free image scores (N,) of the training images: each image scored by dictionaries
        and Gaussians fitted, with this model's settings, on the other folds only (``folds``:
        (N,) fold of each image, e.g. :func:`gpuksvd.evaluation.crossfit_folds`). About one more
        fit's work; the model's own buffers are not touched. ``callback`` sees each fold's fit as
        a feature set named ``"<set> fold <k>/<n>"``."""
        self._check_training_features(feature_sets)
        n_train = feature_sets[0].shape[0]
        if tuple(folds.shape) != (n_train,):
            raise ValueError(f"folds must give the fold of each of the {n_train} training images, got shape "
                             f"{tuple(folds.shape)}")
        location_scores = []
        for features, location_model, name, (_, height, width) in zip(
                feature_sets, self.sets, self.extractor.set_names, self.feature_shapes):
            signals = to_signals(features.to(self.device, torch.float32))
            scores = location_model.out_of_fold_scores(signals, self.config, folds, callback=None if callback is None
                                                       else (lambda label, iteration, error, name=name:
                                                             callback(f"{name} {label}", iteration, error)))
            location_scores.append(scores.T.reshape(n_train, height, width))
        return self.image_scores_of(location_scores)

    def _check_training_features(self, feature_sets: Sequence[Tensor]) -> None:
        n_train = feature_sets[0].shape[0]
        for features, expected, name in zip(feature_sets, self.feature_shapes, self.extractor.set_names):
            if tuple(features.shape[1:]) != tuple(expected) or features.shape[0] != n_train:
                raise ValueError(
                    f"training features of {name!r} have shape {tuple(features.shape)}, expected "
                    f"({n_train}, {', '.join(map(str, expected))}) for {self.image_size} images"
                )

    def image_scores_of(self, location_scores: Sequence[Tensor], batch: int = 64) -> Tensor:
        """Image scores (N,) from per-location scores, one (N, h_i, w_i) tensor per feature set
        (anomaly maps computed ``batch`` images at a time)."""
        scores = [image_scores(anomaly_maps([s[i : i + batch] for s in location_scores], self.image_size,
                                            self.config.sigma))
                  for i in range(0, location_scores[0].shape[0], batch)]
        return torch.cat(scores) if scores else torch.zeros(0, device=self.device)

    def set_thresholds(self, thresholds: dict[str, float], rule: dict) -> None:
        """Per-category decision thresholds on the image score, and how they were computed
        (``rule``, e.g. ``{"method": "quantile", "quantile": 0.99}``)."""
        self.thresholds_ = torch.tensor(list(thresholds.values()), dtype=torch.float64, device=self.device)
        self.threshold_categories = list(thresholds)
        self.threshold_rule = dict(rule)

    @property
    def thresholds(self) -> dict[str, float]:
        """Category → decision threshold (empty until :meth:`set_thresholds`)."""
        return dict(zip(self.threshold_categories, self.thresholds_.tolist()))

    def training_score_range(self) -> dict[str, tuple[float, float]]:
        """Category → (lowest, highest) training image score."""
        scores = self.train_scores_.detach().double().cpu()
        ranges = {}
        for category in dict.fromkeys(self.train_categories):
            values = scores[[i for i, name in enumerate(self.train_categories) if name == category]]
            ranges[category] = (float(values.min()), float(values.max()))
        return ranges

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The number of training scores and thresholds is known only from the state being loaded.
        for name in ("train_scores_", "thresholds_"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
                                                            self.config.max_memory, self.config.kernel)
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
            "preprocess": self.preprocess.describe(),
            "train_categories": list(self.train_categories),
            "threshold_categories": list(self.threshold_categories),
            "threshold_rule": dict(self.threshold_rule),
            "provenance": dict(self.provenance),
        }
