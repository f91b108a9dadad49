"""Paper-style tables and figures from a Hydra multirun folder (``python report.py <folder>``).

A sweep (``python train.py -m experiment=<preset>``) writes one run folder per job, each with
``.hydra/`` (the job's overrides and config group choices) and either ``metrics.json`` (finished,
see :func:`gpuksvd.runs.train_run`) or ``failed.json`` (the job raised); a folder with neither
is unfinished (interrupted or still running). This module reads every run folder below the
multirun folder and lays the runs out as the paper's tables:

* **columns** are the swept values: every override key whose value differs between runs, minus
  the keys that do not change results (``hydra.job.config.override_dirname.exclude_keys``) and
  the keys that are averaged (``average``, e.g. the Rd-MVTec seeds);
* **rows** are the categories, then the groups of categories (textures / objects) and the
  mean over all categories (the paper's "total");
* **cells** hold the chosen metrics in percent with one decimal, e.g. ``98.7 / 96.1`` for image
  AUROC / pixel AUROC; ``failed`` or ``unfinished`` when no run of the column finished.

Two aggregation rules, both explicit:

* runs that differ only in ``average`` keys form one column whose every cell (category, group
  and mean alike) is the mean over the finished runs; times are averaged too;
* when ``dataset.categories`` is swept, runs trained on one category each (``[bottle]``) are
  merged into a single "one-class" column: each category row comes from its own model, groups
  and the mean are recomputed over those rows, and times are summed (training every one-class
  model). ``null`` (every category) is the "all categories" column.

Figures are matplotlib PNGs of the recorded data: the training reconstruction error per
location (paper Figs. 2 and 4), its curves over K-SVD iterations (Figs. 2 and 3), a 3-D view of
the error map (Fig. 3) and test-error histograms of normal vs anomalous patches (Fig. 5).
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .metrics import METRIC_NAMES, METRIC_TITLES, MetricsReport
from .plots import _pyplot

#: Keys never shown as columns when a run does not record its own exclude list: the preset and
#: settings that do not change results (the exclude_keys of conf/experiment/_base.yaml).
DEFAULT_IGNORED = ("experiment", "dataset.root", "device", "num_workers", "progress", "batch_size",
                   "n_overlays", "skip_existing")
DEFAULT_METRICS = ("image_auroc", "pixel_auroc")
CATEGORIES_KEY = "dataset.categories"
ONE_CLASS, ALL_CATEGORIES = "one-class", "all categories"
MEAN_ROW = "mean"

#: Cost rows of the table: (metrics.json "times" key or "peak_memory_bytes", title, scale).
COST_ROWS = (("ksvd_per_iter_s", "K-SVD s/iter", 1.0), ("fit_s", "fit s", 1.0),
             ("test_scoring_s", "test scoring s", 1.0), ("test_images_per_s", "test images/s", 1.0),
             ("peak_memory_bytes", "peak memory MiB", 2.0 ** -20))


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
    marks = [*folder.rglob(".hydra/overrides.yaml"), *folder.rglob("metrics.json"), *folder.rglob("failed.json")]
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
    ignored = DEFAULT_IGNORED
    job_number = None
    hydra_file = path / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        hydra = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {})
        choices = {key: str(value) for key, value in (hydra.get("runtime", {}).get("choices") or {}).items()
                   if not key.startswith("hydra/")}
        excluded = hydra.get("job", {}).get("config", {}).get("override_dirname", {}).get("exclude_keys")
        ignored = tuple(excluded) if excluded else DEFAULT_IGNORED
        job_number = hydra.get("job", {}).get("num")
    result = _read_json(path / "metrics.json")
    failed = _read_json(path / "failed.json") if result is None else None
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


@dataclass
class Column:
    """The runs behind one column of the table and their aggregated values.

    Attributes
    ----------
    label : str
        ``key=value`` of each swept key (``one-class`` / ``all categories`` for
        ``dataset.categories``).
    runs : list of Run
    values : dict[str, dict[str, float]]
        Row name (category, group or ``"mean"``) → metric → value in [0, 1] or NaN.
    groups : list of str
        The rows of ``values`` that are groups of categories (e.g. "textures").
    failed_rows : set of str
        Categories whose own one-class run failed.
    costs : dict[str, float]
        :data:`COST_ROWS` key → value (NaN when no run finished).
    """

    label: str
    runs: list[Run]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)
    failed_rows: set[str] = field(default_factory=set)
    costs: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Number of runs per status."""
        counts = {"finished": 0, "failed": 0, "unfinished": 0}
        for run in self.runs:
            counts[run.status] += 1
        return counts

    @property
    def status(self) -> str:
        """``"finished"`` when at least one run finished, else ``"failed"`` or ``"unfinished"``."""
        counts = self.counts
        if counts["finished"]:
            return "finished"
        return "failed" if counts["failed"] else "unfinished"


@dataclass
class Table:
    """A sweep laid out as the paper's table; see the module docstring for the rules.

    Attributes
    ----------
    keys : list of str
        Swept keys that make the columns.
    averaged : list of str
        Swept keys averaged within a column.
    fixed : dict[str, str]
        Overrides shared by every run.
    metrics : list of str
        Metric names shown in each cell (:data:`gpuksvd.metrics.METRIC_NAMES`).
    rows : list of str
        Categories, then groups, then ``"mean"``.
    columns : list of Column
    """

    keys: list[str]
    averaged: list[str]
    fixed: dict[str, str]
    metrics: list[str]
    rows: list[str]
    columns: list[Column]

    def cell(self, row: str, column: Column) -> str:
        """Text of one cell: ``"98.7 / 96.1"``, ``"n/a"`` for NaN, ``"failed"``, ``"unfinished"``
        or ``"–"`` (row absent from the column)."""
        if column.status != "finished":
            return column.status
        if row in column.failed_rows:
            return "failed"
        if row not in column.values:
            return "–"
        return " / ".join(percent(column.values[row].get(metric, math.nan)) for metric in self.metrics)

    def cost_cell(self, key: str, column: Column) -> str:
        """Text of one cost cell: about 3 significant digits, never in exponent notation."""
        if column.status != "finished":
            return column.status
        value = column.costs.get(key, math.nan)
        if math.isnan(value):
            return "n/a"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"

    def header(self, column: Column) -> str:
        """Column title: its label, and how many runs it holds when not exactly one finished."""
        counts = column.counts
        n_runs = len(column.runs)
        if n_runs == 1 or (counts["finished"] == n_runs and not self.averaged and column.label != ONE_CLASS):
            return column.label
        if counts["finished"] == n_runs and column.label == ONE_CLASS:
            return f"{column.label} ({n_runs} models)"
        parts = [f"{counts['finished']} of {n_runs} runs"]
        parts += [f"{counts[name]} {name}" for name in ("failed", "unfinished") if counts[name]]
        return f"{column.label} ({', '.join(parts)})"

    def to_markdown(self, title: str = "") -> str:
        """The table (and a cost table) in Markdown, with a caption that states the sweep."""
        metric_titles = " / ".join(METRIC_TITLES[name] for name in self.metrics)
        caption = [f"Columns: {', '.join(self.keys) or '(one run)'}."]
        if self.averaged:
            caption.append(f"Each cell is the mean over {' × '.join(self.averaged)}.")
        if self.fixed:
            caption.append("Same in every run: " + ", ".join(f"{k}={v}" for k, v in self.fixed.items()) + ".")
        caption.append(f"Cells: {metric_titles} (%).")
        headers = [self.header(column) for column in self.columns]
        lines = [f"## {title}", ""] if title else []
        lines += [" ".join(caption), "", "| category | " + " | ".join(headers) + " |",
                  "|---|" + "---:|" * len(self.columns)]
        lines += [f"| {row} | " + " | ".join(self.cell(row, column) for column in self.columns) + " |"
                  for row in self.rows]
        lines += ["", "| cost | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(self.columns)]
        lines += [f"| {name} | " + " | ".join(self.cost_cell(key, column) for column in self.columns) + " |"
                  for key, name, _ in COST_ROWS]
        failed = [(column.label, run) for column in self.columns for run in column.runs if run.status == "failed"]
        if failed:
            lines += ["", "Failed runs:", ""]
            lines += [f"- {', '.join([label, *(f'{key}={run.value(key)}' for key in self.averaged)])}: "
                      f"{_one_line(run.error)}" for label, run in failed]
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path) -> Path:
        """Long-form CSV, one line per (row, column, metric): ``row, column, <swept keys>,
        metric, value, status, n_finished, n_failed, n_unfinished``. ``value`` is the metric in
        [0, 1] (full precision; empty for NaN or no value) or the cost in its unit."""
        path = Path(path)
        with open(path, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["row", "column", *self.keys, "metric", "value", "status",
                             "n_finished", "n_failed", "n_unfinished"])
            for column in self.columns:
                counts = column.counts
                key_values = [_column_key_value(column, key) for key in self.keys]
                tail = [counts["finished"], counts["failed"], counts["unfinished"]]
                for row in self.rows:
                    status = "failed" if row in column.failed_rows else column.status
                    for metric in self.metrics:
                        value = column.values.get(row, {}).get(metric, math.nan)
                        writer.writerow([row, column.label, *key_values, metric,
                                         "" if math.isnan(value) else repr(value), status, *tail])
                for key, _, _ in COST_ROWS:
                    value = column.costs.get(key, math.nan)
                    writer.writerow(["cost", column.label, *key_values, key, "" if math.isnan(value) else repr(value),
                                     column.status, *tail])
        return path


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _column_key_value(column: Column, key: str) -> str:
    values = {_display_value(run, key) for run in column.runs}
    return values.pop() if len(values) == 1 else ""


def percent(value: float) -> str:
    """0.9871 → ``"98.7"`` (the paper's one decimal); NaN → ``"n/a"``."""
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _display_value(run: Run, key: str) -> str:
    value = run.value(key)
    if key == CATEGORIES_KEY:
        categories = run.config.get("dataset", {}).get("categories")
        if categories is None:
            return ALL_CATEGORIES
        if isinstance(categories, (list, tuple)) and len(categories) == 1:
            return ONE_CLASS
    return value


def build_table(runs: Sequence[Run], *, metrics: Sequence[str] | None = None,
                average: Iterable[str] | None = None) -> Table:
    """Lay out runs as the paper's table.

    Parameters
    ----------
    runs : sequence of Run
        From :func:`load_runs`.
    metrics : sequence of str, optional
        Metrics in each cell; default: the runs' ``report.metrics`` config (a preset's
        choice), else image AUROC and pixel AUROC.
    average : iterable of str, optional
        Swept keys to average over within a column; default: the runs' ``report.average``
        config, else none. Naming a key that is not swept is allowed (nothing to average).

    Returns
    -------
    Table

    Raises
    ------
    ValueError
        No runs, or an unknown metric name.
    """
    if not runs:
        raise ValueError("no runs to tabulate: the folder holds no run folders")
    preset = _preset_report(runs)
    metrics = list(metrics if metrics is not None else preset.get("metrics", DEFAULT_METRICS))
    unknown = [name for name in metrics if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {list(METRIC_NAMES)}")
    average = list(average if average is not None else preset.get("average", ()))
    swept = swept_keys(runs)
    keys = [key for key in swept if key not in average]
    averaged = [key for key in swept if key in average]

    grouped: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        grouped.setdefault(tuple(_display_value(run, key) for key in keys), []).append(run)
    columns = []
    for label_values in sorted(grouped, key=lambda values: _sort_key(keys, values, grouped)):
        label = ", ".join(value if key == CATEGORIES_KEY else f"{key}={value}"
                          for key, value in zip(keys, label_values))
        column = Column(label or "run", grouped[label_values])
        columns.append(_aggregate(column, swept_categories=CATEGORIES_KEY in keys))
    return Table(keys, averaged, fixed_overrides(runs), metrics, _row_order(columns), columns)


def _preset_report(runs: Sequence[Run]) -> dict:
    for run in runs:
        report = run.config.get("report")
        if isinstance(report, Mapping):
            return dict(report)
    return {}


def _sort_key(keys: Sequence[str], values: Sequence[str], grouped: Mapping[tuple[str, ...], list[Run]]):
    """Columns numerically when every swept value is a number, else in the sweep's job order."""
    def number(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None
    numbers = [number(value) for value in values]
    runs = grouped[tuple(values)]
    first_job = min((run.job_number for run in runs if run.job_number is not None), default=math.inf)
    first_folder = str(min(run.folder for run in runs))
    if None not in numbers:
        return (0, tuple(numbers), first_job, first_folder)
    return (1, (), first_job, first_folder)


def _aggregate(column: Column, swept_categories: bool) -> Column:
    """Fill ``values``, ``groups``, ``failed_rows`` and ``costs`` of a column from its runs."""
    parts: dict[str, list[Run]] = {}
    for run in column.runs:
        categories = run.config.get("dataset", {}).get("categories") if swept_categories else None
        parts.setdefault(format_value(categories), []).append(run)
    averaged = []
    for part_runs in parts.values():
        finished = [run for run in part_runs if run.status == "finished"]
        if finished:
            averaged.append(_average_runs(finished))
        elif any(run.status == "failed" for run in part_runs):
            categories = part_runs[0].config.get("dataset", {}).get("categories") or []
            if swept_categories and len(categories) == 1:
                column.failed_rows.add(str(categories[0]))
    if not averaged:
        column.costs = {key: math.nan for key, _, _ in COST_ROWS}
    else:
        part = averaged[0] if len(averaged) == 1 else _merge_one_class(averaged)
        column.values, column.groups, column.costs = part.values, part.groups, part.costs
    return column


@dataclass
class _Part:
    """Aggregated values of some runs: row → metric → value, the group rows, costs."""

    values: dict[str, dict[str, float]]
    groups: list[str]
    costs: dict[str, float]


def _average_runs(runs: Sequence[Run]) -> _Part:
    """Row → metric → mean over runs (NaN skipped), the group rows, and the mean costs."""
    tables, groups = [], []
    for run in runs:
        report = MetricsReport.from_dict(run.result["metrics"])
        tables.append({**report.per_category, **report.groups, MEAN_ROW: report.mean})
        groups += [name for name in report.groups if name not in groups]
    rows = list(dict.fromkeys(row for table in tables for row in table))
    values = {row: {metric: _nanmean([table[row].get(metric, math.nan) for table in tables if row in table])
                    for metric in METRIC_NAMES} for row in rows}
    costs = {key: _nanmean([_cost(run, key) for run in runs]) for key, _, _ in COST_ROWS}
    return _Part(values, groups, costs)


def _merge_one_class(parts: Sequence[_Part]) -> _Part:
    """One-class models side by side: each category's row from its own model; each group and
    the mean recomputed over its categories; costs summed (peak memory: the largest)."""
    values: dict[str, dict[str, float]] = {}
    membership: dict[str, list[str]] = {}
    for part in parts:
        categories = [row for row in part.values if row != MEAN_ROW and row not in part.groups]
        values.update((category, part.values[category]) for category in categories)
        for group in part.groups:
            membership.setdefault(group, []).extend(categories)
    merged = dict(values)
    for group, members in membership.items():
        merged[group] = {metric: _nanmean([values[name][metric] for name in members]) for metric in METRIC_NAMES}
    merged[MEAN_ROW] = {metric: _nanmean([row[metric] for row in values.values()]) for metric in METRIC_NAMES}
    costs = {key: sum(part.costs[key] for part in parts) for key, _, _ in COST_ROWS}
    costs["peak_memory_bytes"] = max(part.costs["peak_memory_bytes"] for part in parts)
    n_images = sum(part.costs["test_images_per_s"] * part.costs["test_scoring_s"] for part in parts)
    costs["test_images_per_s"] = n_images / costs["test_scoring_s"] if costs["test_scoring_s"] > 0 else math.nan
    return _Part(merged, list(membership), costs)


def _cost(run: Run, key: str) -> float:
    source = run.result if key == "peak_memory_bytes" else run.result.get("times", {})
    value = source.get(key)
    scale = next(scale for name, _, scale in COST_ROWS if name == key)
    return math.nan if value is None else float(value) * scale


def _nanmean(values: Sequence[float]) -> float:
    kept = [value for value in values if not math.isnan(value)]
    return sum(kept) / len(kept) if kept else math.nan


def _row_order(columns: Sequence[Column]) -> list[str]:
    """Categories in order of first appearance, then groups, then the mean."""
    groups = list(dict.fromkeys(group for column in columns for group in column.groups))
    categories = []
    for column in columns:
        for row in [*column.values, *sorted(column.failed_rows)]:
            if row != MEAN_ROW and row not in groups and row not in categories:
                categories.append(row)
    return [*categories, *groups, MEAN_ROW]


# ---------------------------------------------------------------------------------------------
# Figures


def train_errors(column: Column) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """The column's training reconstruction error per feature set, averaged over its finished
    runs (runs whose shape differs from the first one's are left out).

    Returns
    -------
    dict[str, (ndarray of shape (n_iter + 1, P), (h, w))]
        Feature set name → relative error per K-SVD iteration (row 0: initial dictionary) and
        location, and the feature map grid with h·w = P.
    """
    stacks: dict[str, list[np.ndarray]] = {}
    grids: dict[str, tuple[int, int]] = {}
    for run in column.runs:
        if run.status != "finished":
            continue
        shapes = run.result.get("feature_shapes", [])
        for (name, errors), shape in zip(run.result.get("train_error", {}).items(), shapes):
            errors = np.asarray(errors, dtype=np.float64)
            if name not in stacks or errors.shape == stacks[name][0].shape:
                stacks.setdefault(name, []).append(errors)
                grids[name] = (int(shape[1]), int(shape[2]))
    return {name: (np.mean(stack, axis=0), grids[name]) for name, stack in stacks.items()}


def patch_errors(column: Column, set_index: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Test reconstruction errors of normal and of anomalous patches (feature-map cells), pooled
    over the column's runs that wrote ``patch_errors.npz``; None when none did.

    Returns
    -------
    (ndarray of shape (n_normal,), ndarray of shape (n_anomalous,))
    """
    normal, anomalous = [], []
    for run in column.runs:
        path = run.folder / "patch_errors.npz"
        if run.status != "finished" or not path.is_file():
            continue
        with np.load(path) as data:
            if f"errors_{set_index}" not in data:
                continue
            errors, cells = data[f"errors_{set_index}"], data[f"anomalous_{set_index}"].astype(bool)
        normal.append(errors[~cells])
        anomalous.append(errors[cells])
    if not normal:
        return None
    return np.concatenate(normal), np.concatenate(anomalous)


def _columns_with_errors(table: Table) -> list:
    """(column, training errors) for the columns whose runs recorded training errors."""
    data = [(column, train_errors(column)) for column in table.columns]
    return [(column, errors) for column, errors in data if errors]


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _panels(plt, n_rows: int, n_cols: int, width: float = 3.4, height: float = 3.0, **kwargs):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.6 + width * n_cols, 0.9 + height * n_rows), squeeze=False,
                             **kwargs)
    return fig, axes


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_error_maps(table: Table, path: str | Path) -> Path | None:
    """Paper Figs. 2 and 4: the final training reconstruction error per location, one heatmap per
    column (and feature set), on one colour scale per feature set."""
    data = _columns_with_errors(table)
    if not data:
        return None
    plt = _pyplot()
    set_names = list(dict.fromkeys(name for _, errors in data for name in errors))
    fig, axes = _panels(plt, len(set_names), len(data))
    for row, name in enumerate(set_names):
        finals = [errors[name][0][-1] for _, errors in data if name in errors]
        low, high = min(map(np.min, finals)), max(map(np.max, finals))
        for col, (column, errors) in enumerate(data):
            axis = axes[row, col]
            if name not in errors:
                axis.axis("off")
                continue
            values, grid = errors[name]
            shown = axis.imshow(values[-1].reshape(grid), cmap="viridis", vmin=low, vmax=high)
            axis.set_title(f"{column.label}\n{name}, mean {values[-1].mean():.3f}", fontsize=9)
            axis.set_xlabel("feature map column")
            axis.set_ylabel("feature map row")
            fig.colorbar(shown, ax=axis, fraction=0.046, label="relative error")
    fig.suptitle("Training reconstruction error per location after the last K-SVD iteration")
    return _save(fig, Path(path), plt)


def plot_error_curves(table: Table, path: str | Path) -> Path | None:
    """Paper Figs. 2 and 3: the training reconstruction error averaged over locations against
    the K-SVD iteration, one line per column (one panel per feature set)."""
    data = _columns_with_errors(table)
    if not data:
        return None
    plt = _pyplot()
    set_names = list(dict.fromkeys(name for _, errors in data for name in errors))
    fig, axes = _panels(plt, 1, len(set_names), width=5.0, height=3.6)
    styles = ("-", "--", "-.", ":")  # curves that coincide (e.g. the same initial dictionary) stay visible
    for axis, name in zip(axes[0], set_names):
        for index, (column, errors) in enumerate(data):
            if name in errors:
                mean = errors[name][0].mean(axis=1)
                axis.plot(range(len(mean)), mean, linestyle=styles[index % len(styles)], marker="o",
                          markersize=8 if len(mean) == 1 else 3, label=column.label)
        axis.set_xlabel("K-SVD iteration (0 = initial dictionary)")
        _integer_ticks(axis)
        axis.set_ylabel("mean relative error over locations")
        axis.set_title(f"training reconstruction error, {name}", fontsize=10)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return _save(fig, Path(path), plt)


def plot_location_curves(table: Table, path: str | Path, set_name: str | None = None) -> Path | None:
    """Paper Fig. 3: the training error curve of every location (thin lines, coloured by
    location) and their mean (black), one panel per column, for one feature set (default: the
    first)."""
    data = _columns_with_errors(table)
    if not data:
        return None
    set_name = set_name or next(iter(data[0][1]))
    data = [(column, errors[set_name][0]) for column, errors in data if set_name in errors]
    plt = _pyplot()
    fig, axes = _panels(plt, 1, len(data), sharey=True)
    colours = plt.cm.viridis(np.linspace(0, 1, data[0][1].shape[1]))
    for axis, (column, errors) in zip(axes[0], data):
        for location in range(errors.shape[1]):
            axis.plot(errors[:, location], color=colours[location % len(colours)], linewidth=0.6, alpha=0.5)
        axis.plot(errors.mean(axis=1), color="black", linewidth=2, label="mean")
        axis.set_title(f"{column.label} ({errors.shape[1]} locations)", fontsize=9)
        axis.set_xlabel("K-SVD iteration")
        _integer_ticks(axis)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0, 0].set_ylabel(f"relative error per location, {set_name}")
    return _save(fig, Path(path), plt)


def plot_error_surfaces(table: Table, path: str | Path, set_name: str | None = None) -> Path | None:
    """Paper Fig. 3: the final training error map as a 3-D surface over the feature map grid,
    one panel per column, for one feature set (default: the first)."""
    data = _columns_with_errors(table)
    if not data:
        return None
    set_name = set_name or next(iter(data[0][1]))
    data = [(column, errors[set_name]) for column, errors in data if set_name in errors]
    plt = _pyplot()
    fig, axes = _panels(plt, 1, len(data), width=3.8, height=3.6, subplot_kw={"projection": "3d"})
    high = max(float(values[-1].max()) for _, (values, _) in data)
    for axis, (column, (values, grid)) in zip(axes[0], data):
        rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
        axis.plot_surface(cols, rows, values[-1].reshape(grid), cmap="viridis", vmin=0, vmax=high)
        axis.set_zlim(0, high)
        axis.set_title(column.label, fontsize=9)
        axis.set_xlabel("column")
        axis.set_ylabel("row")
        axis.set_zlabel("relative error")
    fig.suptitle(f"Final training error map, {set_name}")
    return _save(fig, Path(path), plt)


def plot_patch_error_histograms(table: Table, path: str | Path) -> Path | None:
    """Paper Fig. 5: histograms of the test reconstruction error of normal and of anomalous
    patches (feature-map cells with an anomalous pixel), each normalised to sum to 1, on
    log-spaced bins (values beyond the 0.1st / 99.9th percentiles go to the end bins); one panel
    per column; None when no run wrote ``patch_errors.npz``."""
    data = [(column, patch_errors(column)) for column in table.columns]
    data = [(column, errors) for column, errors in data if errors is not None]
    if not data:
        return None
    plt = _pyplot()
    every = np.concatenate([np.concatenate(errors) for _, errors in data])
    positive = every[every > 0]
    # Log-spaced bins: the errors of normal and anomalous patches differ by orders of magnitude.
    low, high = (np.quantile(positive, [0.001, 0.999]) if len(positive) else (1e-6, 1.0))
    bins = np.geomspace(low, max(high, low * 10), 60)
    fig, axes = _panels(plt, 1, len(data), sharex=True)
    for axis, (column, (normal, anomalous)) in zip(axes[0], data):
        for values, name in ((normal, "normal"), (anomalous, "anomalous")):
            if len(values):
                axis.hist(np.clip(values, bins[0], bins[-1]), bins=bins, weights=np.full(len(values), 1 / len(values)),
                          alpha=0.6, label=f"{name} patches ({len(values)})")
        axis.set_xscale("log")
        axis.set_title(column.label, fontsize=9)
        axis.set_xlabel("test reconstruction error (log scale)")
        axis.set_ylabel("fraction of patches")
        axis.legend(fontsize=8)
    fig.suptitle("Test reconstruction error of normal vs anomalous patches")
    return _save(fig, Path(path), plt)


FIGURES = {
    "error_maps.png": plot_error_maps,
    "error_curves.png": plot_error_curves,
    "location_curves.png": plot_location_curves,
    "error_surfaces.png": plot_error_surfaces,
    "patch_error_histograms.png": plot_patch_error_histograms,
}


def write_report(folder: str | Path, out: str | Path | None = None, *, metrics: Sequence[str] | None = None,
                 average: Iterable[str] | None = None, figures: bool = True) -> dict[str, Path]:
    """Read a multirun folder and write ``table.md``, ``table.csv`` and the figures.

    Parameters
    ----------
    folder : path
        The sweep's folder (``multirun/<preset>/<dataset>``).
    out : path, optional
        Where to write (created); default: ``folder``.
    metrics, average
        See :func:`build_table`.
    figures : bool
        Also write the PNG figures of :data:`FIGURES` (those the runs have data for).

    Returns
    -------
    dict[str, Path]
        File name → path of everything written.
    """
    folder = Path(folder)
    out = Path(out) if out is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(load_runs(folder), metrics=metrics, average=average)
    title = " / ".join(folder.resolve().parts[-2:])
    written = {"table.md": out / "table.md", "table.csv": table.to_csv(out / "table.csv")}
    written["table.md"].write_text(table.to_markdown(title))
    if figures:
        for name, plot in FIGURES.items():
            path = plot(table, out / name)
            if path is not None:
                written[name] = path
    return written


__all__ = ["Column", "FIGURES", "Run", "Table", "build_table", "fixed_overrides", "format_value", "load_runs",
           "patch_errors", "percent", "plot_error_curves", "plot_error_maps", "plot_error_surfaces",
           "plot_location_curves", "plot_patch_error_histograms", "swept_keys", "train_errors", "write_report"]
