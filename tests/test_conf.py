"""The config tree under conf/: every option composes, the composed values reach the library's
objects, and every paper preset composes with every value of its sweep."""
import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from gpuksvd.data import DATASET_NAMES, MVTEC_OBJECTS, MVTEC_TEXTURES
from gpuksvd.detector import PSDLConfig
from gpuksvd.features import BACKBONES
from gpuksvd.runs import SWEEP_DIRNAME_EXCLUDED, train_config
from gpuksvd.runs.hydra_support import plugin_missing
from tests.support.configs import (
    composed,
    composed_with_hydra,
    experiment_override,
    options,
    sweep_values,
)

def needing_plugins(group: str) -> list:
    """The options of a config group; those whose Hydra plugin is not installed are skipped."""
    params = []
    for name in options(group):
        missing = plugin_missing(f"{group}/{name}")
        params.append(pytest.param(name, marks=pytest.mark.skipif(
            missing is not None, reason=f"{group}={name} needs a Hydra plugin that is not installed: {missing}")))
    return params


PRESETS = needing_plugins("experiment")
LITE = ["backbone=efficientnet_lite0", "dataset=generated"]


def compose_dict(overrides, config_name="config"):
    return composed(overrides, config_name)


def lookup(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


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
    train_config(compose_dict([f"ksvd={name}"]))  # and the whole run config is well typed


def test_the_default_is_full_and_best_adds_the_measured_improvements():
    default, best = compose_dict([]), compose_dict(["ksvd=best"])
    assert default["ksvd"] == compose_dict(["ksvd=full"])["ksvd"]
    assert (default["ksvd"]["init"], default["ksvd"]["dead_atoms"], default["backbone"]["trim_to_square"]) == (
        "dct", "replace", False)
    assert {key: value for key, value in best["ksvd"].items() if value != default["ksvd"][key]} == dict(
        atom_update="exact", stats_codes="omp")
    assert best["backbone"] == default["backbone"] and best["dataset"] == default["dataset"]


def test_group_folders_match_the_library():
    assert set(options("backbone")) == set(BACKBONES)
    assert {compose_dict([f"dataset={name}"])["dataset"]["name"] for name in options("dataset")} <= set(DATASET_NAMES)


def test_evaluate_config_composes_with_and_without_backbone():
    cfg = compose_dict(["model=x.safetensors"], "evaluate")
    assert cfg.get("backbone") is None and "dataset" not in cfg  # by default, the model's own dataset
    assert compose_dict(["model=x.safetensors", "dataset=mvtec"], "evaluate")["dataset"]["name"] == "mvtec"
    cfg = compose_dict(["model=x.safetensors", "backbone=resnet18"], "evaluate")
    assert cfg["backbone"]["name"] == "resnet18"


# -------------------------------------------------------------------------- the paper's presets

@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("extra", [[], LITE], ids=["paper", "lite"])
def test_every_preset_composes_with_every_sweep_value(name, extra):
    hydra, cfg = composed_with_hydra([experiment_override(name), *extra])
    assert hydra.sweep.dir == f"multirun/{name}/{cfg['dataset']['name']}"
    assert OmegaConf.to_container(hydra.sweep)["subdir"] == "${gpuksvd.job_dirname:${hydra:overrides.task}}"
    assert {"experiment", "dataset.root", "device"} <= set(hydra.job.config.override_dirname.exclude_keys)
    assert list(hydra.job.config.override_dirname.exclude_keys) == list(SWEEP_DIRNAME_EXCLUDED)
    params = sweep_values(hydra.sweeper.params)
    assert params and all(values for values in params.values())
    if extra:
        assert cfg["backbone"]["name"] == "efficientnet_lite0" and cfg["dataset"]["name"] == "generated"
    else:
        # paper tables need the paper's data; the improvements preset runs offline by default
        assert cfg["dataset"]["name"] in ({"generated"} if name == "improvements" else
                                          {"mvtec", "rd_mvtec", "btad", "mtd", "ksdd"})
    for key, values in params.items():
        # Paper: the first four values and the last (one_class has 16 alike); lite: the first.
        for value in (values[:4] + values[4:][-1:]) if not extra else values[:1]:
            _, job = composed_with_hydra([experiment_override(name), *extra, f"{key}={value}"])
            PSDLConfig(**job["ksvd"])
            train_config(job)
            assert job["backbone"]["layers"] and job["backbone"]["fusion"] in ("concat", "separate")
            if key in ("backbone", "ksvd"):  # a config group: its option was picked
                assert job[key].get("name", value) == value
            else:
                assert lookup(job, key) == yaml.safe_load(value), (key, value)


def test_a1_sweeps_fixed_dct_against_three_initialisations_without_a_cross_product():
    hydra, _ = composed_with_hydra([experiment_override("a1_dictionary")])
    assert sweep_values(hydra.sweeper.params) == {"ksvd": ["paper_fixed", "paper", "paper_haar", "paper_random"]}
    settings = {option: composed_with_hydra([experiment_override("a1_dictionary"), f"ksvd={option}"])[1]
                for option in ("paper_fixed", "paper", "paper_haar", "paper_random")}
    assert {option: (s["ksvd"]["n_iter"], s["ksvd"]["init"]) for option, s in settings.items()} == {
        "paper_fixed": (0, "dct2d"), "paper": (20, "dct2d"), "paper_haar": (20, "haar2d"),
        "paper_random": (20, "random")}
    assert all(s["backbone"]["trim_to_square"] and s["ksvd"]["dead_atoms"] == "keep" for s in settings.values())
    full = {option: composed([f"ksvd={option}"])["ksvd"] for option in ("fixed_dct", "dct", "haar", "random")}
    assert {option: (s["n_iter"], s["init"]) for option, s in full.items()} == {
        "fixed_dct": (0, "dct"), "dct": (20, "dct"), "haar": (20, "haar"), "random": (20, "random")}


def test_layer_sets_pick_layers_and_fusion_and_follow_layer_names():
    expected = {"layer1": (["layer1"], "concat"), "layer4": (["layer4"], "concat"),
                "concat123": (["layer3", "layer2", "layer1"], "concat"),  # "1,2,3", stacked as the authors do
                "separate123": (["layer1", "layer2", "layer3"], "separate")}  # "1+2+3"
    for layer_set, (layers, fusion) in expected.items():
        _, cfg = composed_with_hydra([experiment_override("t1_layers"), f"preset.layer_set={layer_set}"])
        assert (cfg["backbone"]["layers"], cfg["backbone"]["fusion"]) == (layers, fusion)
    _, cfg = composed_with_hydra([experiment_override("t1_layers"), *LITE,
                                  "preset.layer_names=[block2,block4,block10,block15]", "preset.layer_set=separate123"])
    assert cfg["backbone"]["layers"] == ["block2", "block4", "block10"] and cfg["backbone"]["fusion"] == "separate"


def test_presets_match_the_paper_setups():
    def sweep(name):
        return sweep_values(composed_with_hydra([experiment_override(name)])[0].sweeper.params)

    assert sweep("a2_iterations") == {"ksvd.n_iter": ["10", "20", "50"]}
    assert sweep("a3_sparsity") == {"ksvd.sparsity": ["0.25", "0.5", "0.75"]}
    assert composed_with_hydra([experiment_override("a3_sparsity")])[1]["save_patch_errors"] is True
    assert sweep("t2_architectures")["backbone"] == ["resnet18", "wide_resnet50_2", "efficientnet_b5",
                                                     "efficientnet_b6", "efficientnet_b7"]
    assert sweep("t3_best_mvtec") == {"backbone.layers": ["[block30,block22,block15]"]}
    seeds = ["0", "1", "2", "3"]
    assert sweep("t4_rd_mvtec") == {"dataset.train_seed": seeds, "dataset.test_seed": seeds}
    assert composed_with_hydra([experiment_override("t4_rd_mvtec")])[1]["report"]["average"] == [
        "dataset.train_seed", "dataset.test_seed"]
    assert composed_with_hydra([experiment_override("t5_btad")])[1]["report"]["metrics"] == [
        "image_auroc", "image_ap", "pixel_auroc", "pixel_ap"]
    assert sweep("t6_mtd") == {"backbone": ["efficientnet_b6", "efficientnet_b7"]}
    one_class = sweep("one_class")["dataset.categories"]
    assert sorted(one_class[:-1]) == sorted(f"[{name}]" for name in (*MVTEC_TEXTURES, *MVTEC_OBJECTS))
    assert one_class[-1] == "null"


#: What the paper ran (and the authors' code runs), preset by preset: backbone, layers, fusion.
PAPER_MODELS = {
    "a1_dictionary": ("resnet18", ["layer3"], "concat"),
    "a2_iterations": ("resnet18", ["layer3"], "concat"),
    "a3_sparsity": ("resnet18", ["layer3"], "concat"),
    "t1_layers": ("resnet18", ["layer3"], "concat"),
    "t2_architectures": ("resnet18", ["layer3"], "concat"),
    "t3_best_mvtec": ("efficientnet_b6", ["block30", "block22", "block15"], "concat"),
    "t4_rd_mvtec": ("efficientnet_b6", ["block30", "block22", "block15"], "concat"),
    "t5_btad": ("efficientnet_b6", ["block30", "block22", "block15"], "concat"),
    "t6_mtd": ("efficientnet_b6", ["block30"], "concat"),
    "t7_ksdd": ("efficientnet_b7", ["block37"], "concat"),
}


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_paper_presets_run_the_papers_model_in_the_authors_code(name):
    """Each paper preset, as composed, builds the model the paper describes: the backbone and
    layers (the best model of Tables 3-5 is B6 blocks 15, 22, 30 combined in the dictionary
    learning), the first d² channels, the 2-D DCT start, round(d²/4) non-zeros, dead atoms kept,
    the authors' resize filter."""
    from gpuksvd.detector import PSDL
    from gpuksvd.features import build_extractor

    _, cfg = composed_with_hydra([experiment_override(name)])
    backbone, layers, fusion = PAPER_MODELS[name]
    config = train_config(cfg)
    assert (config.backbone.name, config.backbone.layers, config.backbone.fusion) == (backbone, layers, fusion)
    assert config.backbone.trim_to_square and config.ksvd.init == "dct2d" and config.ksvd.dead_atoms == "keep"
    assert config.ksvd.stats_codes == "ksvd" and config.ksvd.n_iter == 20 and config.ksvd.n_atoms is None
    assert config.dataset.interpolation == "authors"
    with torch.device("meta"):  # shapes only
        extractor = build_extractor(backbone, layers, weights="random", fusion=fusion, trim_to_square=True)
    model = PSDL(extractor, config.ksvd, config.dataset.preprocess())
    channels = [sum(extractor.layer_channels)] if fusion == "concat" else extractor.layer_channels
    for index, total in enumerate(channels):
        d = math.isqrt(total)
        assert model.feature_shapes[index][0] == d * d  # the first d² channels
        assert model.sets[index].dictionaries_.shape[1:] == (d * d, d * d)  # d² atoms
        assert model.n_nonzero(index) == round(d * d / 4)
    if name.startswith("t3"):
        assert model.feature_shapes[0] == (484, 14, 14)  # 144 + 144 + 200 = 488 channels → 22²


@pytest.mark.parametrize("name", needing_plugins("hydra/launcher"))
def test_launcher_presets_extend_the_plugins_with_one_gpu_per_run(name):
    hydra, _ = composed_with_hydra([f"hydra/launcher={name}"])
    launcher = OmegaConf.to_container(hydra.launcher, resolve=True)
    assert launcher["_target_"].startswith("hydra_plugins.")
    if name == "slurm":  # the SLURM keys a cluster needs, one GPU per job
        assert {"partition", "timeout_min", "cpus_per_task", "mem_gb"} <= set(launcher)
        assert launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1
    if name == "joblib_gpus":
        assert launcher["n_jobs"] >= 1
    if name == "ray_gpus":
        assert launcher["ray"]["remote"]["num_gpus"] in (0, 1)


def test_tune_searches_layers_sparsity_and_iterations():
    if plugin_missing("experiment/tune"):
        pytest.skip(f"experiment=tune needs a Hydra plugin that is not installed: {plugin_missing('experiment/tune')}")
    hydra, cfg = composed_with_hydra([experiment_override("tune")])
    assert hydra.sweeper._target_.endswith("OptunaSweeper") and hydra.sweeper.direction == "maximize"
    assert sweep_values(hydra.sweeper.params) == {"preset.layer_set": ["layer2", "layer3", "concat23", "separate23"],
                                                  "ksvd.sparsity": ["0.125", "0.25", "0.5"],
                                                  "ksvd.n_iter": ["5", "10", "20"]}
    _, job = composed_with_hydra([experiment_override("tune"), "preset.layer_set=separate23"])
    assert job["backbone"]["layers"] == ["layer2", "layer3"] and job["backbone"]["fusion"] == "separate"


def test_top_level_seed_reaches_random_init():
    assert compose_dict(["ksvd=random", "seed=1"])["ksvd"]["seed"] == 1
    assert compose_dict(["ksvd=random"])["ksvd"]["seed"] == 0


def test_help_lists_the_presets_only():
    import subprocess
    import sys

    from tests.support.configs import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "experiment: " in done.stdout
    presets = done.stdout.split("experiment: ")[1].splitlines()[0]
    assert "_base" not in presets and "a1_dictionary" in presets


def test_the_improvements_preset_changes_one_thing_at_a_time():
    hydra, _ = composed_with_hydra([experiment_override("improvements")])
    variants = sweep_values(hydra.sweeper.params)["preset.variant"]
    settings = {}
    for variant in variants:
        cfg = composed_with_hydra([experiment_override("improvements"), f"preset.variant={variant}"])[1]
        settings[variant] = {"trim": cfg["backbone"]["trim_to_square"], "init": cfg["ksvd"]["init"],
                             "dead": cfg["ksvd"]["dead_atoms"], "stats": cfg["ksvd"]["stats_codes"],
                             "update": cfg["ksvd"]["atom_update"], "resize": cfg["dataset"]["interpolation"]}
    paper = composed(["ksvd=paper"])
    assert settings["paper"] == {"trim": paper["backbone"]["trim_to_square"], "init": paper["ksvd"]["init"],
                                 "dead": paper["ksvd"]["dead_atoms"], "stats": paper["ksvd"]["stats_codes"],
                                 "update": paper["ksvd"]["atom_update"], "resize": paper["dataset"]["interpolation"]}
    for variant in ("exact", "omp_stats", "replace_dead", "bilinear"):
        changed = {key for key in settings["paper"] if settings[variant][key] != settings["paper"][key]}
        assert len(changed) == 1, (variant, changed)
    assert {k for k in settings["paper"] if settings["all_channels"][k] != settings["paper"][k]} == {"trim", "init"}
