"""What a run folder holds besides the model file: metrics, figures, patch errors.

``metrics.json`` is written last and atomically: its presence marks the run as finished, so an
interrupted run never leaves one that a resumed sweep would take for a finished run.
"""
from __future__ import annotations

import math
import platform
from pathlib import Path

import torch

from ..data import ImageDataset
from ..detector import PSDL
from ..evaluation import per_image
from .loops import Predictions
from .plots import denormalize, pick_overlay_indices, save_location_error, save_overlays

METRICS_FILE = "metrics.json"
FAILED_FILE = "failed.json"


def write_figures(model: PSDL, predictions: Predictions, dataset: ImageDataset, run_dir: Path, n_overlays: int,
                  with_error_plot: bool = True) -> None:
    """Anomaly-map overlays of up to ``n_overlays`` test images and the training error per location."""
    if n_overlays > 0:
        chosen = pick_overlay_indices(predictions.labels, predictions.categories, n_overlays)
        write_overlays(model, predictions, dataset, chosen, run_dir / "overlays")
    if with_error_plot:
        for name, location_model, (_, height, width) in zip(model.extractor.set_names, model.sets, model.feature_shapes):
            save_location_error(location_model.train_error_, (height, width),
                                run_dir / f"train_error_{name.replace('+', '_')}.png", title=f"training error, {name}")


def write_overlays(model: PSDL, predictions: Predictions, dataset: ImageDataset, indices: list[int],
                   out_dir: Path, *, labelled: bool = True) -> None:
    """One overlay PNG per chosen image, all on the colour scale of the largest map value,
    captioned with the decision at the model's thresholds (and the truth when ``labelled``)."""
    vmax = float(predictions.maps.max())
    thresholds = per_image(predictions.categories, model.thresholds)
    for start in range(0, len(indices), 32):  # a folder may hold many images: a batch at a time
        part = indices[start : start + 32]
        images = denormalize(torch.stack([dataset[i]["image"] for i in part]), model.extractor.mean, model.extractor.std)
        names = [f"{start + j:04d}_{predictions.categories[i]}_{predictions.defect_types[i]}_{Path(predictions.paths[i]).stem}"
                 for j, i in enumerate(part)]
        masks = None
        if predictions.masks is not None and labelled:  # new images have no ground truth to show
            masks = [predictions.masks[i] if bool(predictions.has_mask[i]) else None for i in part]
        save_overlays(images, names, predictions.maps[part], masks, predictions.image_scores[part], out_dir,
                      labels=predictions.labels[part] if labelled else None, thresholds=thresholds[part], vmax=vmax)


def save_patch_errors(predictions: Predictions, path: Path) -> Path:
    """Test reconstruction errors per location, split by whether the location's cell of the
    image holds an anomalous pixel (the paper's Fig. 5 histograms).

    Writes ``errors_<i>`` (M, h, w) squared reconstruction errors, ``l1_<i>`` (M, h, w) code L1
    norms and ``anomalous_<i>`` (M, h, w) bool for each feature set i, plus ``labels`` (M,).
    """
    import numpy as np
    import torch.nn.functional as F

    arrays = {"labels": predictions.labels.numpy()}
    for i, values in enumerate(predictions.descriptors):
        grid = values.shape[1:3]
        if predictions.masks is not None:
            cells = F.adaptive_max_pool2d(predictions.masks[:, None].float(), grid)[:, 0] > 0
            cells &= predictions.has_mask[:, None, None]
        else:
            cells = torch.zeros(values.shape[:3], dtype=torch.bool)
        arrays[f"errors_{i}"] = values[..., 1].numpy()
        arrays[f"l1_{i}"] = values[..., 0].numpy()
        arrays[f"anomalous_{i}"] = cells.numpy()
    np.savez_compressed(path, **arrays)
    return path


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU and the number of torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def finite_or_none(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite (JSON has no NaN)."""
    return value if math.isfinite(value) else None
