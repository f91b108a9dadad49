"""Figures a run writes: anomaly-map overlays and the training error per location."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_overlays(paths: Sequence[str], maps: Tensor, masks: Tensor | None, scores: Tensor, labels: Tensor,
                  image_size: Sequence[int], out_dir: str | Path, *, vmax: float | None = None) -> list[Path]:
    """One PNG per image: the (resized) input, its ground truth and the anomaly map over it.

    Parameters
    ----------
    paths : image files, length B
    maps : Tensor of shape (B, H, W)
    masks : Tensor of shape (B, H, W) or None
    scores, labels : Tensor of shape (B,)
    vmax : float, optional
        Common upper end of the colour scale (default: the largest map value shown), so that
        overlays of one run are comparable.
    """
    from PIL import Image

    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vmax = float(maps.max()) if vmax is None else vmax
    written = []
    for i, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB").resize(tuple(image_size)[::-1]))
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        axes[0].imshow(image)
        axes[0].set_title("input")
        axes[1].imshow(masks[i].numpy() if masks is not None else np.zeros(image.shape[:2]), cmap="gray", vmin=0, vmax=1)
        axes[1].set_title("ground truth")
        axes[2].imshow(image)
        shown = axes[2].imshow(maps[i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=vmax)
        axes[2].set_title(f"score {float(scores[i]):.2f} ({'anomalous' if int(labels[i]) else 'normal'})")
        fig.colorbar(shown, ax=axes[2], fraction=0.046)
        for axis in axes:
            axis.axis("off")
        fig.tight_layout()
        target = out_dir / f"{i:03d}_{Path(path).parent.name}_{Path(path).stem}.png"
        fig.savefig(target, dpi=80)
        plt.close(fig)
        written.append(target)
    return written


def save_location_error(errors: Tensor, grid: tuple[int, int], path: str | Path, title: str = "") -> Path:
    """Training reconstruction error per location: a heatmap of the final iteration and the
    per-iteration curve of the mean.

    Parameters
    ----------
    errors : Tensor of shape (n_iter + 1, P)
        Relative error per location (row 0: initial dictionary), P = h·w.
    grid : (h, w)
    """
    plt = _pyplot()
    errors = errors.detach().cpu().double()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    shown = left.imshow(errors[-1].reshape(grid).numpy(), cmap="viridis")
    left.set_title("relative error per location (final)")
    fig.colorbar(shown, ax=left, fraction=0.046)
    right.plot(range(errors.shape[0]), errors.mean(1).numpy(), marker="o", label="mean over locations")
    right.fill_between(range(errors.shape[0]), errors.amin(1).numpy(), errors.amax(1).numpy(), alpha=0.2,
                       label="min–max over locations")
    right.set_xlabel("K-SVD iteration (0 = initial dictionary)")
    right.set_ylabel("relative reconstruction error")
    right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def pick_overlay_indices(labels: Tensor, categories: Sequence[str], count: int) -> list[int]:
    """Up to ``count`` images, anomalous first, spread over categories."""
    order = sorted(range(len(labels)), key=lambda i: (-int(labels[i]), categories[i], i))
    by_category: dict[str, list[int]] = {}
    for i in order:
        by_category.setdefault(categories[i], []).append(i)
    chosen: list[int] = []
    while len(chosen) < count and any(by_category.values()):
        for queue in by_category.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen

