"""A sweep laid out as the paper's tables: rows are categories, columns the swept values.

* **columns** are the swept values: every override key whose value differs between runs, minus
  the keys that do not change results (:data:`gpuksvd.runs.RESULT_NEUTRAL_KEYS` and the path
  keys, as recorded in each job's ``override_dirname.exclude_keys``) and the keys that are
  averaged (``average``, e.g. the Rd-MVTec seeds);
* **rows** are the categories, then the groups of categories (textures / objects), the paper's
  ``total`` (the mean of the group means, when there are groups) and the ``mean`` over all
  categories;
* **cells** hold the chosen metrics in percent with one decimal, e.g. ``98.7 / 96.1`` for image
  AUROC / pixel AUROC; ``failed`` or ``unfinished`` when no run of the column finished.

Two aggregation rules, both explicit:

* runs that differ only in ``average`` keys form one column whose every cell (category, group
  and mean alike) is the mean over the finished runs; times are averaged too;
* when ``dataset.categories`` is swept, runs trained on one category each (``[bottle]``) are
  merged into a single "one-class" column: each category row comes from its own model, groups
  and the mean are recomputed over those rows, and times are summed (training every one-class
  model). ``null`` (every category) is the "all categories" column.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation import METRIC_NAMES, METRIC_TITLES, MetricsReport, nanmean, percent
from .folders import Run, fixed_overrides, format_value, swept_keys

DEFAULT_METRICS = ("image_auroc", "pixel_auroc")
CATEGORIES_KEY = "dataset.categories"
ONE_CLASS, ALL_CATEGORIES = "one-class", "all categories"
MEAN_ROW = "mean"
#: The paper's Total: the mean of the group means (MVTec AD: textures and objects count equally).
TOTAL_ROW = "total"

#: Cost rows of the table: (metrics.json "times" key or "peak_memory_bytes", title, scale).
COST_ROWS = (("ksvd_per_iter_s", "K-SVD s/iter", 1.0), ("fit_s", "fit s", 1.0),
             ("test_scoring_s", "test scoring s", 1.0), ("test_images_per_s", "test images/s", 1.0),
             ("peak_memory_bytes", "peak memory MiB", 2.0 ** -20))


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
        Row name (category, group, ``"total"`` or ``"mean"``) → metric → value in [0, 1] or NaN.
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
        Metric names shown in each cell (:data:`gpuksvd.evaluation.METRIC_NAMES`).
    rows : list of str
        Categories, then groups, ``"total"`` (the paper's, with groups), then ``"mean"``.
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
        if TOTAL_ROW in self.rows:
            caption.append("total: the paper's Total, the mean of the group means; mean: the mean over categories.")
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
    metrics = list(metrics if metrics is not None else preset.get("metrics") or DEFAULT_METRICS)
    unknown = [name for name in metrics if name not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: choose from {list(METRIC_NAMES)}")
    average = list(average if average is not None else preset.get("average") or ())
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
        tables.append({**report.per_category, **report.groups, **({TOTAL_ROW: report.total} if report.groups else {}),
                       MEAN_ROW: report.mean})
        groups += [name for name in report.groups if name not in groups]
    rows = list(dict.fromkeys(row for table in tables for row in table))
    values = {row: {metric: nanmean([table[row].get(metric, math.nan) for table in tables if row in table])
                    for metric in METRIC_NAMES} for row in rows}
    costs = {key: nanmean([_cost(run, key) for run in runs]) for key, _, _ in COST_ROWS}
    return _Part(values, groups, costs)


def _merge_one_class(parts: Sequence[_Part]) -> _Part:
    """One-class models side by side: each category's row from its own model; each group and
    the mean recomputed over its categories; costs summed (peak memory: the largest)."""
    values: dict[str, dict[str, float]] = {}
    membership: dict[str, list[str]] = {}
    for part in parts:
        categories = [row for row in part.values if row not in (MEAN_ROW, TOTAL_ROW) and row not in part.groups]
        values.update((category, part.values[category]) for category in categories)
        for group in part.groups:
            membership.setdefault(group, []).extend(categories)
    merged = dict(values)
    for group, members in membership.items():
        merged[group] = {metric: nanmean([values[name][metric] for name in members]) for metric in METRIC_NAMES}
    if membership:
        merged[TOTAL_ROW] = {metric: nanmean([merged[group][metric] for group in membership]) for metric in METRIC_NAMES}
    merged[MEAN_ROW] = {metric: nanmean([row[metric] for row in values.values()]) for metric in METRIC_NAMES}
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


def _row_order(columns: Sequence[Column]) -> list[str]:
    """Categories in order of first appearance, then groups, then the mean."""
    groups = list(dict.fromkeys(group for column in columns for group in column.groups))
    categories = []
    for column in columns:
        for row in [*column.values, *sorted(column.failed_rows)]:
            if row not in (MEAN_ROW, TOTAL_ROW) and row not in groups and row not in categories:
                categories.append(row)
    total = [TOTAL_ROW] if any(TOTAL_ROW in column.values for column in columns) else []
    return [*categories, *groups, *total, MEAN_ROW]
