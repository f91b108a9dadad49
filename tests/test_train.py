"""End to end: train.py / evaluate.py on miniature datasets with a random-weight backbone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_trees import make_mvtec_tree
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gpuksvd.model_io import load_model, read_description
from gpuksvd.runs import evaluate_run, train_run

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

pytestmark = pytest.mark.slow

# Small and fast: 64x64 images, ResNet-18 layer2 (stride 8: an 8x8 map, 128 channels),
# 16 atoms, 2 iterations, random (seeded) backbone weights.
TINY = [
    "backbone=resnet18", "backbone.weights=random", "backbone.layers=[layer2]",
    "dataset=mvtec", "dataset.resize=64", "dataset.crop=64",
    "ksvd.n_atoms=16", "ksvd.n_iter=2", "num_workers=0", "progress=false", "n_overlays=2", "device=cpu",
]


def composed(overrides, config_name="config"):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config_name, overrides=overrides), resolve=True)


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), categories=("bottle", "grid"), n_train=12,
                           n_test_good=3, n_per_defect=2, size=64)


@pytest.fixture(scope="module")
def trained(mvtec_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = composed(TINY + [f"dataset.root={mvtec_root}", "save_patch_errors=true"])
    return run_dir, cfg, train_run(cfg, run_dir)


def test_train_writes_the_run_folder(trained):
    run_dir, _, result = trained
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["metrics"] == result["metrics"]
    assert set(written["metrics"]["per_category"]) == {"bottle", "grid"}
    assert {"textures", "objects"} <= set(written["metrics"]["groups"])
    assert written["n_train"] == 24 and written["n_test"] == 2 * (3 + 2 * 2)
    assert written["times"]["ksvd_per_iter_s"] > 0 and written["peak_memory_bytes"] > 0
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "metrics.md").is_file()
    assert len(list((run_dir / "overlays").glob("*.png"))) == 2
    assert (run_dir / "train_error_layer2.png").is_file()
    assert 0.0 <= written["main_metric"] <= 1.0
    curves = written["train_error"]["layer2"]
    assert len(curves) == 3 and len(curves[0]) == 64 and curves[-1][0] < curves[0][0]  # 2 iterations, 8x8


def test_patch_errors_split_normal_and_anomalous_cells(trained):
    import numpy as np

    run_dir, _, result = trained
    with np.load(run_dir / "patch_errors.npz") as data:
        errors, anomalous, labels = data["errors_0"], data["anomalous_0"], data["labels"]
    assert errors.shape == (result["n_test"], 8, 8) and anomalous.shape == errors.shape
    assert not anomalous[labels == 0].any() and anomalous[labels == 1].any()
    assert (errors >= 0).all()


def test_evaluate_reproduces_train_metrics(trained, mvtec_root, tmp_path):
    run_dir, cfg, result = trained
    eval_cfg = composed([f"model={run_dir / 'model.safetensors'}", "dataset=mvtec", f"dataset.root={mvtec_root}",
                         "dataset.resize=64", "dataset.crop=64", "num_workers=0", "progress=false",
                         "n_overlays=0", "device=cpu"], "evaluate")
    evaluated = evaluate_run(eval_cfg, tmp_path)
    for category, values in result["metrics"]["per_category"].items():
        for name, value in values.items():
            other = evaluated["metrics"]["per_category"][category][name]
            assert (value is None and other is None) or abs(value - other) < 1e-6, (category, name)


def test_model_file_round_trip_and_backbone_check(trained):
    run_dir, _, _ = trained
    path = run_dir / "model.safetensors"
    description = read_description(path)
    assert description["extractor"]["backbone"] == "resnet18" and description["config"]["n_atoms"] == 16
    model = load_model(path, backbone="resnet18", layers=["layer2"])
    assert model.sets[0].dictionaries_.shape == (64, 16, 128)  # 8x8 locations, 16 atoms, 128 channels
    assert torch.allclose(model.sets[0].dictionaries_.norm(dim=-1), torch.ones(64, 16), atol=1e-5)
    with pytest.raises(ValueError, match="trained with backbone 'resnet18'.*not 'efficientnet_lite0'"):
        load_model(path, backbone="efficientnet_lite0")
    with pytest.raises(ValueError, match=r"trained on layers \['layer2'\]"):
        load_model(path, backbone="resnet18", layers=["layer3"])
    with pytest.raises(ValueError, match="backbone.fusion=concat, not separate"):
        load_model(path, backbone="resnet18", fusion="separate")


def test_separate_and_concat_fusion_both_run(mvtec_root, tmp_path):
    for fusion, n_sets in (("separate", 2), ("concat", 1)):
        cfg = composed(TINY + [f"dataset.root={mvtec_root}", "backbone.layers=[layer1,layer2]",
                               f"backbone.fusion={fusion}", "n_overlays=0"])
        result = train_run(cfg, tmp_path / fusion)
        assert len(result["feature_shapes"]) == n_sets
        assert result["main_metric"] is not None


def test_fewer_images_than_atoms_says_how_many(mvtec_root, tmp_path):
    cfg = composed(TINY + [f"dataset.root={mvtec_root}", "ksvd.n_atoms=64"])
    with pytest.raises(ValueError, match="need at least 64 training images.*got 24"):
        train_run(cfg, tmp_path)


def test_missing_dataset_folder_shows_layout(tmp_path):
    cfg = composed(TINY + [f"dataset.root={tmp_path / 'nowhere'}"])
    with pytest.raises((FileNotFoundError, ValueError), match="nowhere"):
        train_run(cfg, tmp_path / "run")


def test_skip_existing_does_not_redo_a_finished_run(trained):
    run_dir, cfg, result = trained
    again = train_run({**cfg, "skip_existing": True}, run_dir)
    assert again == json.loads((run_dir / "metrics.json").read_text())


def test_scripts_run_from_the_command_line(mvtec_root, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run_dir = tmp_path / "cli"
    train = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, f"dataset.root={mvtec_root}",
                            f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run_dir / "metrics.json").is_file()
    folder = mvtec_root / "bottle" / "test" / "crack"
    # Relative paths resolve where the command is typed; the folder is preprocessed with the
    # geometry recorded in the model file (64x64), not the default dataset's 256/224.
    score = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "model=cli/model.safetensors",
                            f"images={folder}", "num_workers=0", "progress=false", "device=cpu",
                            "hydra.run.dir=scored"],
                           capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert score.returncode == 0, score.stderr[-3000:]
    rows = (tmp_path / "scored" / "scores.csv").read_text().strip().splitlines()
    assert rows[0] == "path,score" and len(rows) == 1 + 2
    assert len(list((tmp_path / "scored" / "heatmaps").glob("*.png"))) == 2
    wrong = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"model={run_dir / 'model.safetensors'}",
                            "backbone=efficientnet_lite0", "progress=false", "device=cpu",
                            f"hydra.run.dir={tmp_path / 'wrong'}"], capture_output=True, text=True, env=env, timeout=600)
    assert wrong.returncode != 0 and "trained with backbone 'resnet18'" in wrong.stderr


def test_empty_test_split_fails_before_fitting(tmp_path, monkeypatch):
    from data_trees import make_folder_tree

    import gpuksvd.runs as runs_module

    root = make_folder_tree(tmp_path / "parts", n_train=20, n_test_normal=0, n_test_anomalous=0, size=64)
    cfg = composed(TINY[:3] + TINY[6:] + ["dataset=folder", f"dataset.train_dir={root / 'train'}",
                                          "dataset.resize=64", "dataset.crop=64"])
    monkeypatch.setattr(runs_module, "fit", lambda *a, **k: pytest.fail("fitted before checking the test split"))
    with pytest.raises(ValueError, match="no test image"):
        train_run(cfg, tmp_path / "run")


def test_impossible_settings_fail_when_the_model_is_built():
    # PSDL is built before any feature is extracted, so these fail in seconds, not after a fit.
    from gpuksvd.model import PSDL, PSDLConfig
    from gpuksvd.model_io import build_extractor

    extractor = build_extractor("resnet18", ["layer2"], weights="random")  # 128 channels
    for overrides, message in ((["ksvd.init=haar", "ksvd.n_atoms=200"], "init=haar gives at most 128"),
                               (["ksvd.init=dct2d"], "init=dct2d needs square"),
                               (["ksvd.init=wavelets"], "unknown init"),
                               (["ksvd.n_iter=-2"], "n_iter must be a non-negative")):
        with pytest.raises(ValueError, match=message):
            PSDL(extractor, PSDLConfig(**composed(TINY + overrides)["ksvd"]), (64, 64))


def test_top_level_seed_reaches_random_init():
    assert composed(["ksvd=random", "seed=1"])["ksvd"]["seed"] == 1
    assert composed(["ksvd=random"])["ksvd"]["seed"] == 0
