"""Figures a run writes: anomaly-map overlays and the training error per location."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures are written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_overlays(images: Tensor, names: Sequence[str], maps: Tensor, masks: Tensor | None, scores: Tensor,
                  out_dir: str | Path, *, labels: Tensor | None = None, thresholds: Tensor | None = None,
                  vmax: float | None = None) -> list[Path]:
    """One PNG per image: the model's input, its ground truth (only when it has a mask) and the
    anomaly map over it, captioned with the score and the decision.

    Parameters
    ----------
    images : Tensor of shape (B, 3, H, W)
        The preprocessed images in [0, 1] (as the model saw them, crop included), so that
        maps and masks line up with them.
    names : B file-name stems (unique)
    maps : Tensor of shape (B, H, W)
    masks : Tensor of shape (B, H, W) or None
        Ground truth; rows of images without one are None-like (pass ``None`` for all).
    scores : Tensor of shape (B,)
    labels : Tensor of shape (B,), optional
        The true label (1 anomalous), when known: captioned as the truth.
    thresholds : Tensor of shape (B,), optional
        Each image's decision threshold (NaN where none): the caption says the decision.
    vmax : float, optional
        Common upper end of the colour scale (default: the largest map value shown), so that
        overlays of one run are comparable.
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vmax = float(maps.max()) if vmax is None else vmax
    written = []
    for i, name in enumerate(names):
        image = images[i].permute(1, 2, 0).clamp(0, 1).numpy()
        has_truth = masks is not None and masks[i] is not None
        fig, axes = plt.subplots(1, 3 if has_truth else 2, figsize=(9 if has_truth else 6.4, 3.4))
        axes[0].imshow(image)
        axes[0].set_title("input")
        if has_truth:
            axes[1].imshow(masks[i].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[1].set_title("ground truth")
        axes[-1].imshow(image)
        shown = axes[-1].imshow(maps[i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=vmax)
        axes[-1].set_title(caption(float(scores[i]), None if thresholds is None else float(thresholds[i]),
                                   None if labels is None else int(labels[i])), fontsize=9)
        fig.colorbar(shown, ax=axes[-1], fraction=0.046)
        for axis in axes:
            axis.axis("off")
        fig.tight_layout()
        target = out_dir / f"{name}.png"
        fig.savefig(target, dpi=80)
        plt.close(fig)
        written.append(target)
    return written


def caption(score: float, threshold: float | None, label: int | None) -> str:
    """``score 3.21 ≥ threshold 2.90: anomalous`` (and the truth when the label is known)."""
    text = f"score {score:.2f}"
    if threshold is not None and threshold == threshold:  # not NaN
        anomalous = score >= threshold
        text += f" {'≥' if anomalous else '<'} threshold {threshold:.2f}: {'anomalous' if anomalous else 'normal'}"
    if label is not None:
        text += f"\n(truth: {'anomalous' if label else 'normal'})"
    return text


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo the input normalisation of (B, 3, H, W) images → values in [0, 1]."""
    mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
    std_t = images.new_tensor(std).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def save_location_error(errors: Tensor, grid: tuple[int, int], path: str | Path, title: str = "") -> Path:
    """Training reconstruction error per location: a heatmap of the final iteration and the
    per-iteration curve of the mean.

    Parameters
    ----------
    errors : Tensor of shape (n_iter + 1, P)
        Relative error per location (row 0: initial dictionary), P = h·w.
    grid : (h, w)
    """
    plt = pyplot()
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
    """Up to ``count`` images: anomalous ones spread over categories, and one normal image
    (when ``count`` ≥ 3) to show what a defect-free map looks like."""
    normal = [i for i in range(len(labels)) if not int(labels[i])]
    keep_normal = 1 if count >= 3 and normal else 0
    order = sorted(range(len(labels)), key=lambda i: (-int(labels[i]), categories[i], i))
    by_category: dict[str, list[int]] = {}
    for i in order:
        if int(labels[i]) or not keep_normal:
            by_category.setdefault(categories[i], []).append(i)
    chosen: list[int] = []
    while len(chosen) < count - keep_normal and any(by_category.values()):
        for queue in by_category.values():
            if queue and len(chosen) < count - keep_normal:
                chosen.append(queue.pop(0))
    return chosen + normal[:keep_normal]
