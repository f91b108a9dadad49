"""Figures of a sweep, drawn from what its runs recorded (matplotlib PNGs).

The training reconstruction error per location (paper Figs. 2 and 4), its curves over K-SVD
iterations (Figs. 2 and 3), a 3-D view of the error map (Fig. 3) and test-error histograms of
normal vs anomalous patches (Fig. 5). The training error is drawn as one of two quantities
(:data:`QUANTITIES`): the relative error ``‖X − ΓD‖_F / ‖X‖_F`` of each location (default), or
the paper's mean squared error ``‖X − ΓD‖²_F / (N·C)`` (``quantity="mse"``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runs.plots import pyplot
from .table import Column, Table

#: Training-error quantities the figures can draw: metrics.json key and axis label.
QUANTITIES = {"relative": ("train_error", "relative error"), "mse": ("train_mse", "mean squared error")}


def train_errors(column: Column, quantity: str = "relative") -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """The column's training reconstruction error per feature set, averaged over its finished
    runs (runs whose shape differs from the first one's are left out).

    Parameters
    ----------
    quantity : {"relative", "mse"}
        The relative error per location, or the mean squared error (runs from before it was
        recorded have none).

    Returns
    -------
    dict[str, (ndarray of shape (n_iter + 1, P), (h, w))]
        Feature set name → error per K-SVD iteration (row 0: initial dictionary) and location,
        and the feature map grid with h·w = P.
    """
    key = _quantity(quantity)[0]
    stacks: dict[str, list[np.ndarray]] = {}
    grids: dict[str, tuple[int, int]] = {}
    for run in column.runs:
        if run.status != "finished":
            continue
        shapes = run.result.get("feature_shapes", [])
        for (name, errors), shape in zip(run.result.get(key, {}).items(), shapes):
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


def _quantity(quantity: str) -> tuple[str, str]:
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown training-error quantity {quantity!r}: choose one of {', '.join(QUANTITIES)}")
    return QUANTITIES[quantity]


def _columns_with_errors(table: Table, quantity: str) -> list:
    """(column, training errors) for the columns whose runs recorded training errors."""
    data = [(column, train_errors(column, quantity)) for column in table.columns]
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


def plot_error_maps(table: Table, path: str | Path, quantity: str = "relative") -> Path | None:
    """Paper Figs. 2 and 4: the final training reconstruction error per location, one heatmap per
    column (and feature set), on one colour scale per feature set."""
    data = _columns_with_errors(table, quantity)
    label = _quantity(quantity)[1]
    if not data:
        return None
    plt = pyplot()
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
            fig.colorbar(shown, ax=axis, fraction=0.046, label=label)
    fig.suptitle("Training reconstruction error per location after the last K-SVD iteration")
    return _save(fig, Path(path), plt)


def plot_error_curves(table: Table, path: str | Path, quantity: str = "relative") -> Path | None:
    """Paper Figs. 2 and 3: the training reconstruction error averaged over locations against
    the K-SVD iteration, one line per column (one panel per feature set)."""
    data = _columns_with_errors(table, quantity)
    label = _quantity(quantity)[1]
    if not data:
        return None
    plt = pyplot()
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
        axis.set_ylabel(f"{label}, mean over locations")
        axis.set_title(f"training reconstruction error, {name}", fontsize=10)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    return _save(fig, Path(path), plt)


def plot_location_curves(table: Table, path: str | Path, quantity: str = "relative",
                         set_name: str | None = None) -> Path | None:
    """Paper Fig. 3: the training error curve of every location (thin lines, coloured by
    location) and their mean (black), one panel per column, for one feature set (default: the
    first)."""
    data = _columns_with_errors(table, quantity)
    label = _quantity(quantity)[1]
    if not data:
        return None
    set_name = set_name or next(iter(data[0][1]))
    data = [(column, errors[set_name][0]) for column, errors in data if set_name in errors]
    plt = pyplot()
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
    axes[0, 0].set_ylabel(f"{label} per location, {set_name}")
    return _save(fig, Path(path), plt)


def plot_error_surfaces(table: Table, path: str | Path, quantity: str = "relative",
                        set_name: str | None = None) -> Path | None:
    """Paper Fig. 3: the final training error map as a 3-D surface over the feature map grid,
    one panel per column, for one feature set (default: the first)."""
    data = _columns_with_errors(table, quantity)
    label = _quantity(quantity)[1]
    if not data:
        return None
    set_name = set_name or next(iter(data[0][1]))
    data = [(column, errors[set_name]) for column, errors in data if set_name in errors]
    plt = pyplot()
    fig, axes = _panels(plt, 1, len(data), width=3.8, height=3.6, subplot_kw={"projection": "3d"})
    high = max(float(values[-1].max()) for _, (values, _) in data)
    for axis, (column, (values, grid)) in zip(axes[0], data):
        rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
        axis.plot_surface(cols, rows, values[-1].reshape(grid), cmap="viridis", vmin=0, vmax=high)
        axis.set_zlim(0, high)
        axis.set_title(column.label, fontsize=9)
        axis.set_xlabel("column")
        axis.set_ylabel("row")
        axis.set_zlabel(label)
    fig.suptitle(f"Final training error map, {set_name}")
    return _save(fig, Path(path), plt)


def plot_patch_error_histograms(table: Table, path: str | Path, quantity: str = "relative") -> Path | None:
    """Paper Fig. 5: histograms of the test reconstruction error of normal and of anomalous
    patches (feature-map cells with an anomalous pixel), each normalised to sum to 1, on
    log-spaced bins (values beyond the 0.1st / 99.9th percentiles go to the end bins); one panel
    per column; None when no run wrote ``patch_errors.npz``."""
    data = [(column, patch_errors(column)) for column in table.columns]
    data = [(column, errors) for column, errors in data if errors is not None]
    if not data:
        return None
    plt = pyplot()
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
