"""Model files: the fitted buffers as safetensors, the description as JSON metadata.

A model file never executes code when loaded. The backbone weights are not stored: they are
rebuilt from the recorded backbone and weights source, so a file holds only the dictionaries and
Gaussians (P·K·C floats: ~31 MB for EfficientNet-B6 block 30, ~0.8 GB for Wide-ResNet-50 layer 3).
Files are written atomically (:func:`gpuksvd.files.atomic_write`), so an interrupted save never
leaves a truncated model in place of a good one.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data.transforms import Preprocess
from ..features import FeatureExtractor, build_extractor
from ..files import atomic_write
from ..sparse import NativeKernelUnavailable, resolve_kernel
from .config import PSDLConfig
from .model import PSDL

FORMAT = "gpuksvd-psdl-1"


def save_model(model: PSDL, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically; returns the path."""
    tensors = {name: value.detach().cpu().contiguous()
               for name, value in model.state_dict().items() if not name.startswith("extractor.")}
    metadata = {"format": FORMAT, "description": json.dumps(model.describe())}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_description(path: str | Path) -> dict:
    """The JSON description of a model file, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}: train one with `python train.py` (it writes model.safetensors)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable gpuksvd model file ({error})") from error
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gpuksvd model file (format {metadata.get('format')!r}, expected {FORMAT!r})")
    return json.loads(metadata["description"])


def check_compatible(description: dict, backbone: str | None, layers: list[str] | None, path: Path,
                     fusion: str | None = None, trim_to_square: bool | None = None) -> None:
    """Refuse a model file made with another backbone, other layers, fusion or trimming."""
    stored = description["extractor"]
    for key, wanted in (("fusion", fusion), ("trim_to_square", trim_to_square)):
        if wanted is not None and wanted != stored[key]:
            raise ValueError(
                f"{path} was trained with backbone.{key}={stored[key]}, not {wanted}: "
                f"pass backbone.{key}={stored[key]} or retrain"
            )
    if backbone is not None and backbone != stored["backbone"]:
        raise ValueError(
            f"{path} was trained with backbone {stored['backbone']!r} (layers {stored['layers']}), "
            f"not {backbone!r}: pass backbone={stored['backbone']} or retrain with the backbone you want"
        )
    if layers is not None and list(layers) != list(stored["layers"]):
        raise ValueError(
            f"{path} was trained on layers {stored['layers']} of {stored['backbone']!r}, not {list(layers)}: "
            f"pass backbone.layers=[{','.join(stored['layers'])}] or retrain"
        )


def stored_extractor(description: dict, weights: str | None = None) -> FeatureExtractor:
    """Rebuild the feature extractor a model file records; ``weights`` overrides its source
    (e.g. the same weights file at another path)."""
    stored = description["extractor"]
    source = weights
    if source is None:
        recorded = stored["weights"]
        source = recorded[len("file:"):] if recorded.startswith("file:") else (
            "random" if recorded == "random" else "pretrained")
    return build_extractor(stored["backbone"], stored["layers"], weights=source, fusion=stored["fusion"],
                           trim_to_square=stored["trim_to_square"])


def stored_preprocess(description: dict) -> Preprocess:
    """The preprocessing a model file records (files without it: the recorded image size, no crop)."""
    recorded = description.get("preprocess") or {}
    if "random_rotation" in recorded:
        return Preprocess.from_description(recorded)
    # Files written before the whole geometry was recorded kept resize/crop/pre_crop only.
    image_size = description["image_size"]
    return Preprocess(resize=recorded.get("resize") or image_size, crop=recorded.get("crop"),
                      pre_crop=recorded.get("pre_crop"))


def load_model(path: str | Path, *, backbone: str | None = None, layers: list[str] | None = None,
               weights: str | None = None, device: str | torch.device = "cpu", fusion: str | None = None,
               trim_to_square: bool | None = None) -> PSDL:
    """Load a model file, checking that it matches ``backbone``, ``layers``, ``fusion`` and
    ``trim_to_square`` when given."""
    path = Path(path)
    description = read_description(path)
    check_compatible(description, backbone, layers, path, fusion, trim_to_square)
    model = PSDL(stored_extractor(description, weights), PSDLConfig(**description["config"]),
                 stored_preprocess(description))
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    # Files written before thresholds (or the training MSE) existed hold none: the model then
    # has no decision rule (and no MSE curve).
    missing = [name for name in missing if not name.startswith("extractor.") and name != "thresholds_"
               and not name.endswith("train_mse_")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match its own description: missing {missing}, unexpected {unexpected}")
    model.train_categories = list(description.get("train_categories", []))
    model.threshold_categories = list(description.get("threshold_categories", []))
    model.threshold_rule = dict(description.get("threshold_rule") or {})
    model.provenance = dict(description.get("provenance") or {})
    usable_kernel(model.config, torch.device(device), path)
    return model.to(device)


def usable_kernel(config: PSDLConfig, device: torch.device, path: Path) -> None:
    """A model fitted with ``kernel="triton"`` (CUDA) or ``"native"`` (CPU) scores with
    ``"auto"`` where that kernel cannot run: the kernel changes speed, not the model."""
    if config.kernel in ("auto", "torch") or (device.type == "cuda" and not torch.cuda.is_available()):
        return  # (a missing CUDA device is model.to's error)
    try:
        resolve_kernel(config.kernel, torch.empty(0, device=device))
    except (ValueError, NativeKernelUnavailable) as error:
        warnings.warn(f"{path} was fitted with kernel={config.kernel!r}, which cannot run here ({error}); "
                      f"scoring with kernel='auto'", stacklevel=3)
        config.kernel = "auto"
