"""What a run's results depend on, as data: when a finished run (or a saved model) may be reused.

A run folder can be re-run with other settings (a sweep resumed with another ``ksvd.n_iter``,
another ``dataset.root``, a fixed dataset). Its ``metrics.json`` may be reused only when
everything that affects the results is the same: the resolved config minus the keys that do
not change results (:data:`~gpuksvd.runs.config.RESULT_NEUTRAL_KEYS` and the bookkeeping keys
below), plus the fingerprint of the data listing (every file's path, size and modification
time, :func:`gpuksvd.data.records.records_fingerprint`). The model file is reused on the same
rule, restricted to what the fit depends on.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..data import DataSplits
from ..data.records import records_fingerprint
from .config import RESULT_NEUTRAL_KEYS

#: Top-level keys that shape the run folder or the report but not a number in it.
BOOKKEEPING_KEYS = ("report", "preset", "cache", "debug", "model_file")

#: Top-level keys the fitted model depends on (the rest only affects the evaluation).
MODEL_KEYS = ("backbone", "dataset", "ksvd", "seed", "threshold")


def result_config(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that the results depend on."""
    ignored = set(RESULT_NEUTRAL_KEYS) | set(BOOKKEEPING_KEYS)
    return {key: value for key, value in resolved.items() if key not in ignored}


def run_fingerprint(resolved: Mapping[str, Any], splits: DataSplits) -> dict[str, Any]:
    """What ``metrics.json`` records as the identity of its results.

    Returns
    -------
    dict
        ``config`` (the result-changing config), ``config_hash`` and ``model_hash`` (digests of
        it, and of the part the fitted model depends on), ``data`` (the digest of the train and
        test listings), ``n_train`` and ``n_test``.
    """
    config = result_config(resolved)
    model_config = {key: config[key] for key in MODEL_KEYS if key in config}
    return {
        "config": config,
        "config_hash": _digest(config),
        "model_hash": _digest(model_config),
        "data": {"train": records_fingerprint(splits.train.records), "test": records_fingerprint(splits.test.records)},
        "n_train": len(splits.train),
        "n_test": len(splits.test),
    }


def same_results(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether results with the ``recorded`` fingerprint hold for the ``current`` one."""
    return (recorded is not None and recorded.get("config_hash") == current["config_hash"]
            and recorded.get("data") == current["data"])


def same_model(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether a model fitted under the ``recorded`` fingerprint is the one ``current`` would fit."""
    return (recorded is not None and recorded.get("model_hash") == current["model_hash"]
            and recorded.get("data", {}).get("train") == current["data"]["train"])


def differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any], limit: int = 6) -> str:
    """What changed between two fingerprints, for a log line: ``ksvd.n_iter: 20 → 3; data``."""
    if recorded is None:
        return "no fingerprint recorded (an older run)"
    old, new = _flat(recorded.get("config", {})), _flat(current["config"])
    changed = [f"{key}: {_short(old.get(key, '(absent)'))} → {_short(new.get(key, '(absent)'))}"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if recorded.get("data") != current["data"]:
        changed.append("the data (files added, removed or changed)")
    shown = changed[:limit] + ([f"… {len(changed) - limit} more"] if len(changed) > limit else [])
    return "; ".join(shown) or "nothing"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat = {}
    for key, value in node.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return {key.rstrip("."): value for key, value in flat.items()}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "…"
