"""Every config option composes, and the composed values reach the library's objects."""
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gpuksvd.backbones import BACKBONES
from gpuksvd.data import DATASET_NAMES
from gpuksvd.model import PSDLConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group):
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def compose_dict(overrides, config_name="config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config_name, overrides=overrides), resolve=True)


def test_defaults_are_the_offline_ones():
    cfg = compose_dict([])
    assert cfg["backbone"]["name"] == "efficientnet_lite0" and cfg["dataset"]["name"] == "generated"
    assert cfg["ksvd"]["n_iter"] == 20 and cfg["ksvd"]["sparsity"] == 0.25 and cfg["ksvd"]["init"] == "dct"


@pytest.mark.parametrize("name", options("backbone"))
def test_every_backbone_option_composes(name):
    cfg = compose_dict([f"backbone={name}"])["backbone"]
    assert cfg["name"] == name and name in BACKBONES
    assert cfg["layers"] and cfg["fusion"] in ("concat", "separate")


@pytest.mark.parametrize("name", options("dataset"))
def test_every_dataset_option_composes(name):
    cfg = compose_dict([f"dataset={name}"])["dataset"]
    assert cfg["name"] in DATASET_NAMES


@pytest.mark.parametrize("name", options("ksvd"))
def test_every_ksvd_option_builds_a_config(name):
    cfg = compose_dict([f"ksvd={name}"])["ksvd"]
    PSDLConfig(**cfg)  # every key is a PSDLConfig field with a valid value


def test_group_folders_match_the_library():
    assert set(options("backbone")) == set(BACKBONES)
    assert {compose_dict([f"dataset={name}"])["dataset"]["name"] for name in options("dataset")} <= set(DATASET_NAMES)


def test_evaluate_config_composes_with_and_without_backbone():
    cfg = compose_dict(["model=x.safetensors"], "evaluate")
    assert cfg.get("backbone") is None and cfg["dataset"]["name"] == "generated"
    cfg = compose_dict(["model=x.safetensors", "backbone=resnet18"], "evaluate")
    assert cfg["backbone"]["name"] == "resnet18"


def test_more_nonzeros_than_channels_warns_and_names_the_fix():
    with pytest.warns(UserWarning, match=r"asks for 50 non-zeros.*32 channels.*ksvd.sparsity"):
        PSDLConfig(n_atoms=200).check_features(32, "layer1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PSDLConfig(n_atoms=128).check_features(32, "layer1")  # 32 non-zeros: allowed
