"""Backbones as data: layer names, channels and strides against timm's metadata and the configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf

from gpuksvd.features.backbones import BACKBONES, probe_units, split_units

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "backbone"


# --- layer names, channels and strides ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_units_agree_with_timm_feature_info_and_default_layers(name):
    """Channels/strides read from the module match timm's metadata; defaults end stride 16."""
    spec = BACKBONES[name]
    with torch.device("meta"):  # shapes only: skip the weight initialisation
        model = timm.create_model(spec.timm_name).eval()
    stem, units = split_units(model, spec.family)
    probed = probe_units(stem, units, size=64)
    for info in model.feature_info:
        if spec.family == "resnet":
            unit = info["module"]
        else:  # stage "blocks.S" ends at the last block of stage S
            stage = int(info["module"].split(".")[1])
            unit = f"block{sum(len(s) for s in model.blocks[: stage + 1]) - 1}"
        if unit in probed:
            assert probed[unit] == (info["num_chs"], info["reduction"]), unit
    stride16 = [unit for unit, (_, stride) in probed.items() if stride == 16]
    assert spec.default_layers == (stride16[-1],)


PAPER_BLOCKS = {"efficientnet_b5": ("block26", 176), "efficientnet_b6": ("block30", 200),
                "efficientnet_b7": ("block37", 224)}


@pytest.mark.parametrize("name", sorted(PAPER_BLOCKS))
def test_paper_blocks_are_last_of_the_14x14_stage(name):
    """The issue's numbers: last block at stride 16 (14x14 at 224 input) and its channels."""
    block, channels = PAPER_BLOCKS[name]
    with torch.device("meta"):
        model = timm.create_model(BACKBONES[name].timm_name).eval()
    probed = probe_units(*split_units(model, "efficientnet"), size=224)
    assert probed[block] == (channels, 16)
    following = f"block{int(block[5:]) + 1}"
    assert probed[following][1] == 32



@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_normalisation_matches_timm_pretrained_config(name):
    spec = BACKBONES[name]
    config = timm.models.get_pretrained_cfg(spec.pretrained_tag)
    assert (spec.mean, spec.std) == (tuple(config.mean), tuple(config.std))
    assert spec.timm_name == spec.pretrained_tag.split(".")[0]


def test_backbone_configs_match_the_specs():
    files = sorted(CONF_DIR.glob("*.yaml"))
    assert sorted(f.stem for f in files) == sorted(BACKBONES)
    for path in files:
        config = OmegaConf.load(path)
        assert config.name == path.stem
        assert tuple(config.layers) == BACKBONES[path.stem].default_layers
        assert (config.fusion, config.trim_to_square, config.weights) == (
            "concat", False, "pretrained")
