"""The typed run config: built from the composed YAML, every wrong key or type named at start-up."""
import pytest

from gpuksvd.data import Preprocess
from gpuksvd.detector import PSDLConfig
from gpuksvd.runs import ConfigError, TrainConfig, evaluate_config, train_config
from tests.support.configs import composed


def test_the_default_config_becomes_typed_objects():
    config = train_config(composed([]))
    assert isinstance(config, TrainConfig) and isinstance(config.ksvd, PSDLConfig)
    assert config.backbone.name == "efficientnet_lite0" and config.backbone.layers == ["block10"]
    assert config.dataset.name == "generated" and config.dataset.options == {"generation_seed": 0}
    assert config.dataset.preprocess() == Preprocess(resize=256, crop=224)
    assert config.num_workers == 2 and config.batch_size == 32  # from conf/config.yaml, nowhere else
    assert config.report.metrics is None and config.resolved["ksvd"]["n_iter"] == 20


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ksvd.n_atoms=abc"], r"ksvd.n_atoms must be an integer or null, got 'abc'"),
        (["batch_size=1.5"], r"batch_size must be an integer, got 1.5"),
        (["progress=maybe"], r"progress must be true/false, got 'maybe'"),
        (["dataset.resize=[256,big]"], r"dataset.resize must be an integer or a list of integers"),
        (["+ksvd.atoms=10"], r"unknown config key\(s\) ksvd.atoms"),
        (["+dataset.train_folder=/x"], r"unknown config key\(s\) dataset.train_folder for dataset 'generated'"),
        (["+nworkers=3"], r"unknown config key\(s\) nworkers"),
        (["~ksvd.sigma"], r"config key\(s\) ksvd.sigma missing"),
        (["normalize=foo"], "normalize must be one of none, minmax, train, got 'foo'"),
        (["threshold.method=median"], "threshold.method='median'.*crossfit.*quantile"),
        (["threshold.folds=1"], "threshold.folds must be null .* or at least 2"),
        (["ksvd.kernel=cuda"], "unknown kernel 'cuda'"),
        (["num_workers=-1"], "num_workers must be ≥ 0"),
        (["backbone.fusion=sum"], "backbone.fusion='sum'"),
        (["dataset.crop=300"], "crop .* is larger than the resized image"),
        (["ksvd.init=wavelets"], "unknown init"),
    ],
)
def test_wrong_keys_and_types_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        train_config(composed(overrides))


def test_folder_dataset_keys_are_its_own():
    config = train_config(composed(["dataset=folder", "dataset.train_dir=/data/good"]))
    assert config.dataset.options["train_dir"] == "/data/good"
    assert config.dataset.as_dict()["train_dir"] == "/data/good" and config.dataset.as_dict()["resize"] == 256


def test_evaluate_config_with_and_without_a_backbone():
    config = evaluate_config(composed(["model=x.safetensors"], "evaluate"))
    assert config.backbone is None and config.model == "x.safetensors" and config.images is None
    config = evaluate_config(composed(["model=x.safetensors", "backbone=resnet18"], "evaluate"))
    assert config.backbone.name == "resnet18"
