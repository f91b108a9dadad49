"""Reading a sweep's folder: one :class:`Run` per job folder, finished, failed or unfinished.

A sweep (``python train.py -m experiment=<preset>``) writes one run folder per job, each with
``.hydra/`` (the job's overrides and config group choices) and either ``metrics.json`` (finished,
see :func:`gpuksvd.runs.train_run`) or ``failed.json`` (the job raised); a folder with neither
is unfinished (interrupted or still running).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..runs import FAILED_FILE, METRICS_FILE, SWEEP_DIRNAME_EXCLUDED


@dataclass
class Run:
    """One job of a sweep, as found on disk.

    Attributes
    ----------
    folder : Path
    overrides : dict[str, str]
        The job's task overrides (``.hydra/overrides.yaml``), key → value as typed, with the
        ``+``/``++``/``~`` prefixes dropped.
    choices : dict[str, str]
        Config group choices (``hydra.runtime.choices``), e.g. ``{"ksvd": "haar"}``.
    ignored : tuple of str
        Override keys that do not name a result (the job's ``override_dirname.exclude_keys``).
    config : dict
        The resolved config (from ``metrics.json`` / ``failed.json``, else ``.hydra/config.yaml``).
    result : dict or None
        ``metrics.json`` when the run finished.
    error : str or None
        The message of ``failed.json`` when the run failed.
    job_number : int or None
        The job's place in the sweep (``hydra.job.num``).
    """

    folder: Path
    overrides: dict[str, str]
    choices: dict[str, str]
    ignored: tuple[str, ...]
    config: dict
    result: dict | None = None
    error: str | None = None
    job_number: int | None = None

    @property
    def status(self) -> str:
        """``"finished"``, ``"failed"`` or ``"unfinished"``."""
        if self.result is not None:
            return "finished"
        return "failed" if self.error is not None else "unfinished"

    def value(self, key: str) -> str:
        """The run's value of an override key, as text: the group choice for a config group
        (``ksvd`` → ``haar``), else the config value at the dotted path (``[layer1]``,
        ``0.25``, ``null``), else the override as typed."""
        if key in self.choices:
            return str(self.choices[key])
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return self.overrides.get(key, "null")
            node = node[part]
        return format_value(node)


def format_value(value: Any) -> str:
    """Config value as Hydra override text: ``[a,b]``, ``null``, ``true``, ``0.25``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def load_runs(folder: str | Path) -> list[Run]:
    """Every run folder below ``folder`` (any depth), sorted by path.

    A run folder holds ``.hydra/overrides.yaml``, ``metrics.json`` or ``failed.json``.

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist or holds no run folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: pass the multirun folder of a sweep, "
                                "e.g. multirun/a2_iterations/generated")
    marks = [*folder.rglob(".hydra/overrides.yaml"), *folder.rglob(METRICS_FILE), *folder.rglob(FAILED_FILE)]
    run_dirs = sorted({mark.parent.parent if mark.parent.name == ".hydra" else mark.parent for mark in marks})
    if not run_dirs:
        raise FileNotFoundError(f"no run folders under {folder} (looked for .hydra/overrides.yaml, metrics.json, "
                                "failed.json): is this the folder a `python train.py -m ...` sweep wrote?")
    return [_read_run(path) for path in run_dirs]


def _read_run(path: Path) -> Run:
    overrides: dict[str, str] = {}
    overrides_file = path / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        for line in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(line).partition("=")
            overrides[key.lstrip("+~")] = value
    choices: dict[str, str] = {}
    ignored = SWEEP_DIRNAME_EXCLUDED
    job_number = None
    hydra_file = path / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        hydra = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {})
        choices = {key: str(value) for key, value in (hydra.get("runtime", {}).get("choices") or {}).items()
                   if not key.startswith("hydra/")}
        excluded = hydra.get("job", {}).get("config", {}).get("override_dirname", {}).get("exclude_keys")
        ignored = tuple(excluded) if excluded else SWEEP_DIRNAME_EXCLUDED
        job_number = hydra.get("job", {}).get("num")
    result = _read_json(path / METRICS_FILE)
    failed = _read_json(path / FAILED_FILE) if result is None else None
    config = (result or failed or {}).get("config")
    if config is None and (path / ".hydra" / "config.yaml").is_file():
        config = yaml.safe_load((path / ".hydra" / "config.yaml").read_text())
    error = None if failed is None else str(failed.get("error", "failed"))
    return Run(path, overrides, choices, ignored, config or {}, result, error, job_number)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs, in sorted order (ignored keys left out)."""
    ignored = {key for run in runs for key in run.ignored}
    keys = sorted({key for run in runs for key in run.overrides} - ignored)
    return [key for key in keys if len({run.value(key) for run in runs}) > 1]


def fixed_overrides(runs: Sequence[Run]) -> dict[str, str]:
    """Overrides every run has with the same value (ignored keys left out): the sweep's setting."""
    ignored = {key for run in runs for key in run.ignored}
    common = set.intersection(*(set(run.overrides) for run in runs)) - ignored if runs else set()
    return {key: runs[0].value(key) for key in sorted(common) if len({run.value(key) for run in runs}) == 1}
