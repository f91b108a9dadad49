"""``report.py``: read a sweep folder, write ``table.md``, ``table.csv`` and the figures."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from .figures import FIGURES
from .folders import load_runs
from .table import build_table


def write_report(folder: str | Path, out: str | Path | None = None, *, metrics: Sequence[str] | None = None,
                 average: Iterable[str] | None = None, figures: bool = True, error: str = "relative") -> dict[str, Path]:
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
    error : {"relative", "mse"}
        The training-error quantity of the figures (:data:`~gpuksvd.sweeps.figures.QUANTITIES`):
        the relative error, or the paper's mean squared error.

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
            path = plot(table, out / name, error)
            if path is not None:
                written[name] = path
    return written
