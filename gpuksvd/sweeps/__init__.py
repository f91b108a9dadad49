"""Sweeps: reading a multirun folder, laying it out as the paper's tables, drawing its figures.

:mod:`.folders` reads the job folders (:class:`Run`), :mod:`.table` builds the table
(:class:`Table`: rows categories, columns swept values) and its Markdown / CSV, :mod:`.figures`
draws the error maps, curves and histograms, :mod:`.report` writes them all (``report.py``).
"""
from .figures import (
    FIGURES,
    patch_errors,
    plot_error_curves,
    plot_error_maps,
    plot_error_surfaces,
    plot_location_curves,
    plot_patch_error_histograms,
    train_errors,
)
from .folders import Run, fixed_overrides, format_value, load_runs, swept_keys
from .report import write_report
from .table import Column, Table, build_table

__all__ = ["Column", "FIGURES", "Run", "Table", "build_table", "fixed_overrides", "format_value", "load_runs",
           "patch_errors", "plot_error_curves", "plot_error_maps", "plot_error_surfaces", "plot_location_curves",
           "plot_patch_error_histograms", "swept_keys", "train_errors", "write_report"]
