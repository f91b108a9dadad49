"""Runs: what ``train.py`` and ``evaluate.py`` do, from a config to a run folder.

:mod:`.config` turns the composed config into typed dataclasses, :mod:`.loops` feeds datasets
to the detector (progress bars, timings), :mod:`.training` and :mod:`.evaluating` are the two
runs, :mod:`.run_folder` and :mod:`.plots` write what a run folder holds. A run over several
processes (torchrun) goes through :mod:`.distributed` (the process group, its checks and faults)
and :mod:`.sharded` (which process does what); :mod:`.devices` gives parallel sweep jobs distinct
GPUs. This layer (and the entry scripts) is where Hydra's config arrives; it reads plain dicts,
so it runs without Hydra.
"""
from .config import (
    PATH_KEYS,
    RESULT_NEUTRAL_KEYS,
    SWEEP_DIRNAME_EXCLUDED,
    BackboneConfig,
    ConfigError,
    DatasetConfig,
    EvaluateConfig,
    TrainConfig,
    evaluate_config,
    train_config,
)
from .evaluating import evaluate_run
from .loops import FitTimes, Predictions, fit, predict, resolve_device
from .run_folder import FAILED_FILE, METRICS_FILE
from .training import train_run

__all__ = [
    "BackboneConfig", "ConfigError", "DatasetConfig", "EvaluateConfig", "FAILED_FILE", "FitTimes", "METRICS_FILE",
    "PATH_KEYS", "Predictions", "RESULT_NEUTRAL_KEYS", "SWEEP_DIRNAME_EXCLUDED", "TrainConfig", "evaluate_config", "evaluate_run", "fit",
    "predict", "resolve_device", "train_config", "train_run",
]
