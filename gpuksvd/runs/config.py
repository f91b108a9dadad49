"""The run configuration: typed dataclasses built once from the composed config.

``train.py`` and ``evaluate.py`` turn Hydra's composed config into a :class:`TrainConfig` or an
:class:`EvaluateConfig` before any work starts; the run code reads typed attributes, never
``cfg.get(key, default)``. The YAML under ``conf/`` is the single source of defaults: these
dataclasses have none, so a key missing from the YAML, an unknown key or a value of the wrong
type fails at start-up with the key's dotted name. No Hydra here: the input is a plain dict (what
``OmegaConf.to_container(cfg, resolve=True)`` gives), so the run code works without Hydra too.
"""
from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Union

from ..data import DATASET_NAMES, Preprocess, dataset_option_keys, resolve_interpolation
from ..detector import PSDLConfig
from ..evaluation import METRIC_NAMES, TRAINING_THRESHOLDS, check_normalization
from ..features import BACKBONES, FUSIONS

#: Top-level keys that never change a run's results (where it runs, how fast, what it shows).
#: They are left out of sweep folder names, of report columns and of the comparison that decides
#: whether a finished run can be reused.
RESULT_NEUTRAL_KEYS = ("experiment", "device", "num_workers", "progress", "batch_size", "n_overlays",
                       "skip_existing", "cache", "debug", "distributed")

#: Keys whose values are paths: left out of sweep folder names (slashes would nest folders), as
#: is any other override whose value holds a slash; the run's config keeps them.
PATH_KEYS = ("dataset.root", "dataset.train_dir", "dataset.test_normal_dir", "dataset.test_anomalous_dir",
             "dataset.mask_dir")

#: Override keys left out of a sweep job's folder name, so that re-running a sweep lands in the
#: same folders; the Hydra config reads them through the ``gpuksvd.sweep_excluded_keys``
#: resolver (:mod:`gpuksvd.runs.hydra_support`).
SWEEP_DIRNAME_EXCLUDED = RESULT_NEUTRAL_KEYS[:1] + PATH_KEYS + RESULT_NEUTRAL_KEYS[1:] + ("distributed.timeout_s",)

#: Devices a config may name (``cuda:<index>`` too).
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A config key is missing, unknown or of the wrong type; the message names the key."""


@dataclass(frozen=True)
class BackboneConfig:
    """``conf/backbone/*.yaml``: the feature extractor."""

    name: str
    layers: list[str]
    fusion: str
    trim_to_square: bool
    weights: str

    def __post_init__(self) -> None:
        if self.name not in BACKBONES:
            raise ConfigError(f"backbone={self.name!r} is not a backbone: choose one of {', '.join(sorted(BACKBONES))}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"backbone.fusion={self.fusion!r}: choose one of {', '.join(FUSIONS)}")
        if not self.layers:
            raise ConfigError("backbone.layers is empty: name at least one layer, e.g. backbone.layers=[layer3]")


@dataclass(frozen=True)
class DatasetConfig:
    """``conf/dataset/*.yaml``: the common keys, plus ``options``, the dataset's own keys
    (``generation_seed``, ``train_dir`` …; see :func:`gpuksvd.data.dataset_option_keys`)."""

    name: str
    root: str | None
    categories: list[str] | None
    resize: int | list[int]
    crop: int | list[int] | None
    pre_crop: int | list[int] | None
    random_rotation: float
    random_crop: bool
    interpolation: str
    train_seed: int
    test_seed: int
    split_seed: int
    test_fraction: float | None
    skip_unreadable: bool
    options: dict[str, Any]

    def __post_init__(self) -> None:
        if self.name not in DATASET_NAMES:
            raise ConfigError(f"dataset.name={self.name!r} is not a dataset: choose one of {', '.join(DATASET_NAMES)}")
        common = {field.name for field in fields(self)}
        allowed = [key for key in dataset_option_keys(self.name) if key not in common]
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join('dataset.' + key for key in unknown)} for dataset "
                              f"{self.name!r}: its own keys are {', '.join(allowed) or 'none'}")
        try:
            self.preprocess()
        except ValueError as error:
            raise ConfigError(f"dataset geometry: {error}") from error

    def preprocess(self, seed: int | None = None) -> Preprocess:
        """The geometry of the images (training seed unless ``seed`` is given)."""
        return Preprocess(resize=self.resize, crop=self.crop, pre_crop=self.pre_crop,
                          random_rotation=float(self.random_rotation), random_crop=self.random_crop,
                          seed=self.train_seed if seed is None else seed,
                          interpolation=resolve_interpolation(self.name, self.interpolation))

    def as_dict(self) -> dict[str, Any]:
        """The keys as the YAML has them (what :func:`gpuksvd.data.build_splits` reads)."""
        plain = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "options"}
        return {**plain, **self.options}


@dataclass(frozen=True)
class ReportConfig:
    """How ``report.py`` lays out a sweep of this config (a preset sets these)."""

    metrics: list[str] | None
    average: list[str]

    def __post_init__(self) -> None:
        unknown = [name for name in self.metrics or () if name not in METRIC_NAMES]
        if unknown:
            raise ConfigError(f"report.metrics has unknown metrics {unknown}: choose from {list(METRIC_NAMES)}")


@dataclass(frozen=True)
class ThresholdConfig:
    """``threshold``: how train.py fixes each category's decision threshold (no test label)."""

    method: str
    quantile: float
    folds: int | None

    def __post_init__(self) -> None:
        if self.method not in TRAINING_THRESHOLDS:
            raise ConfigError(f"threshold.method={self.method!r}: train.py fixes thresholds as a quantile of the "
                              "out-of-fold training scores (crossfit) or of the in-sample ones (quantile); re-fit "
                              "them F1-optimally with evaluate.py threshold.validation_root=<labelled folder>")
        if not 0 < self.quantile <= 1:
            raise ConfigError(f"threshold.quantile must be in (0, 1], got {self.quantile}: e.g. 0.99")
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"threshold.folds must be null (the fewest folds whose fits keep enough images for the "
                              f"atoms, from 2) or at least 2 (crossfit: each fold is scored by a model fitted on the "
                              f"others), got {self.folds}")


@dataclass(frozen=True)
class DistributedConfig:
    """``distributed``: read only by a run over several processes (torchrun)."""

    timeout_s: float

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"distributed.timeout_s must be > 0 seconds, got {self.timeout_s}: e.g. 1800")


@dataclass(frozen=True)
class ValidationConfig:
    """``threshold`` of evaluate.py: re-fit the thresholds on a labelled folder."""

    validation_root: str | None


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys both runs share: where they run, how fast, what they show."""

    device: str
    batch_size: int
    num_workers: int
    normalize: str
    progress: bool
    n_overlays: int
    debug: bool

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be ≥ 0 (0: load in the main process), got {self.num_workers}")
        if self.n_overlays < 0:
            raise ConfigError(f"n_overlays must be ≥ 0, got {self.n_overlays}")
        try:
            check_normalization(self.normalize)
        except ValueError as error:
            raise ConfigError(str(error)) from error


@dataclass(frozen=True)
class TrainConfig(RunSettings):
    """``conf/config.yaml``: what ``train.py`` runs.

    ``resolved`` keeps the whole composed config as a plain dict (written to ``metrics.json``);
    ``preset`` holds helper keys of the experiment presets (e.g. ``t1_layers``' layer sets).
    """

    backbone: BackboneConfig
    dataset: DatasetConfig
    ksvd: PSDLConfig
    threshold: ThresholdConfig
    model_file: str
    skip_existing: bool
    cache: bool
    seed: int
    save_patch_errors: bool
    report: ReportConfig
    preset: dict[str, Any]
    distributed: DistributedConfig
    resolved: dict[str, Any]


@dataclass(frozen=True)
class EvaluateConfig(RunSettings):
    """``conf/evaluate.yaml``: what ``evaluate.py`` runs.

    ``backbone`` (optional) is checked against the model file; ``dataset`` is the test split to
    evaluate unless ``images`` names a folder to score.
    """

    model: str
    images: str | None
    category: str | None
    dataset: DatasetConfig | None
    backbone: BackboneConfig | None
    threshold: ValidationConfig
    resolved: dict[str, Any]

    def __post_init__(self) -> None:
        if self.model in ("???", ""):
            raise ConfigError("evaluate.py needs a model file: pass model=<run folder>/model.safetensors "
                              "(train.py writes one in every run folder)")
        super().__post_init__()


def train_config(resolved: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of a composed, resolved config (a plain dict)."""
    return build(TrainConfig, {**resolved, "resolved": dict(resolved)})


def evaluate_config(resolved: Mapping[str, Any]) -> EvaluateConfig:
    """The :class:`EvaluateConfig` of a composed, resolved ``evaluate.yaml`` (a plain dict)."""
    data = {"backbone": None, "dataset": None, **resolved, "resolved": dict(resolved)}
    return build(EvaluateConfig, data)


def check_device(name: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:<index>``, and CUDA only where there is one."""
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"device={name!r} is not a device here: use device=auto (CUDA when available), cpu, "
                          "cuda or cuda:<index>")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} asked for, but CUDA is not available here: use device=cpu or "
                              "device=auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0")


def build(cls: type, data: Mapping[str, Any], prefix: str = ""):
    """An instance of dataclass ``cls`` from ``data``, every field converted to its annotated
    type; a missing, unknown or ill-typed key raises :class:`ConfigError` naming it.

    A ``dict`` field named ``options`` collects the keys that are not fields (the dataset's own
    keys); other ``dict`` fields take their value as it is.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key {prefix.rstrip('.') or '(top level)'} must be a mapping of keys to values, "
                          f"got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [field.name for field in fields(cls)]
    collects = "options" in names and "options" not in data
    known = [name for name in names if not (collects and name == "options")]
    missing = [name for name in known if name not in data]
    if missing:
        raise ConfigError(f"config key(s) {', '.join(prefix + name for name in missing)} missing: every key needs a "
                          "value in conf/ (the YAML holds the defaults)")
    extra = {key: value for key, value in data.items() if key not in names}
    if extra and not collects:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + str(key) for key in sorted(extra))}: "
                          f"the keys here are {', '.join(prefix + name for name in known)}")
    values = {name: _convert(data[name], hints[name], prefix + name) for name in known}
    if collects:
        values["options"] = dict(extra)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config group {prefix.rstrip('.') or '(top level)'}: {error}") from error


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as ``annotation`` (int, float, str, bool, None, list[...], dict, dataclasses and
    unions of these), or a :class:`ConfigError` naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise _type_error(key, annotation, value)
    if annotation is type(None):
        if value is None:
            return None
        raise _type_error(key, annotation, value)
    if annotation is Any:
        return value
    if is_dataclass(annotation):
        return build(annotation, value, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, annotation, value)
        (item,) = typing.get_args(annotation)
        return [_convert(entry, item, f"{key}[{index}]") for index, entry in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, annotation, value)
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise _type_error(key, annotation, value)


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is list:
        item = typing.get_args(annotation)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}.get(
            item, _describe(item))
    if origin is dict or annotation is dict or is_dataclass(annotation):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))


def _type_error(key: str, annotation: Any, value: Any) -> ConfigError:
    return ConfigError(f"config key {key} must be {_describe(annotation)}, got {value!r}: fix it on the command "
                       f"line ({key}=...) or in conf/")
