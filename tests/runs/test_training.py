"""train_run end to end (and train.py from the command line) on miniature datasets in every
published layout, with a random-weight backbone."""
import json
import os
import subprocess
import sys

import pytest
import torch

from pathlib import Path

from gpuksvd.data import UnreadableImageError
from gpuksvd.detector import load_model, read_description
from gpuksvd.runs import ConfigError, train_run
from tests.support.configs import ROOT, composed
from tests.support.data_trees import make_btad_tree, make_folder_tree, make_ksdd_tree, make_mtd_tree, make_mvtec_tree
from tests.support.runs import TINY

pytestmark = pytest.mark.slow



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
                            f"images={folder}", "category=bottle", "num_workers=0", "progress=false", "device=cpu",
                            "hydra.run.dir=scored"],
                           capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert score.returncode == 0, score.stderr[-3000:]
    rows = (tmp_path / "scored" / "scores.csv").read_text().strip().splitlines()
    assert rows[0] == "path,score,threshold,decision,normalized_score" and len(rows) == 1 + 2
    assert len(list((tmp_path / "scored" / "heatmaps").glob("*.png"))) == 2
    wrong = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"model={run_dir / 'model.safetensors'}",
                            "backbone=efficientnet_lite0", "progress=false", "device=cpu",
                            f"hydra.run.dir={tmp_path / 'wrong'}"], capture_output=True, text=True, env=env, timeout=600)
    assert wrong.returncode != 0 and "trained with backbone 'resnet18'" in wrong.stderr


def test_empty_test_split_fails_before_fitting(tmp_path, monkeypatch):
    from tests.support.data_trees import make_folder_tree

    import gpuksvd.runs.training as runs_module

    root = make_folder_tree(tmp_path / "parts", n_train=20, n_test_normal=0, n_test_anomalous=0, size=64)
    cfg = composed(TINY[:3] + TINY[6:] + ["dataset=folder", f"dataset.train_dir={root / 'train'}",
                                          "dataset.resize=64", "dataset.crop=64"])
    monkeypatch.setattr(runs_module, "fit", lambda *a, **k: pytest.fail("fitted before checking the test split"))
    with pytest.raises(ValueError, match="no test image"):
        train_run(cfg, tmp_path / "run")


# ------------------------------------------------------- never a stale result, fail before the fit

def copy_tree(root, destination):
    import shutil

    return Path(shutil.copytree(root, destination))


def test_rerun_with_another_setting_refits_and_the_config_matches_the_results(mvtec_root, tmp_path):
    run_dir = tmp_path / "run"
    first = train_run(composed(TINY + [f"dataset.root={mvtec_root}", "ksvd.n_iter=1"]), run_dir)
    again = train_run(composed(TINY + [f"dataset.root={mvtec_root}", "ksvd.n_iter=1", "device=cpu", "num_workers=0"]),
                      run_dir)
    assert again == first  # same result-changing config and data: skipped (neutral keys differ only)
    changed = train_run(composed(TINY + [f"dataset.root={mvtec_root}", "ksvd.n_iter=3"]), run_dir)
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["config"]["ksvd"]["n_iter"] == 3 and len(written["train_error"]["layer2"]) == 4  # refitted
    assert written["fingerprint"]["config"]["ksvd"]["n_iter"] == 3 and changed["metrics"] == written["metrics"]
    assert written["metrics"] != first["metrics"]


def test_a_changed_dataset_or_root_refits(mvtec_root, tmp_path):
    root = copy_tree(mvtec_root, tmp_path / "data")
    run_dir = tmp_path / "run"
    first = train_run(composed(TINY + [f"dataset.root={root}"]), run_dir)
    image = next((root / "bottle" / "train" / "good").glob("*.png"))
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)  # a "fixed" training image
    fixed = train_run(composed(TINY + [f"dataset.root={root}"]), run_dir)
    assert fixed["fingerprint"]["data"] != first["fingerprint"]["data"]
    assert fixed["fingerprint"]["config"] == first["fingerprint"]["config"]
    other = train_run(composed(TINY + [f"dataset.root={mvtec_root}"]), run_dir)
    assert other["config"]["dataset"]["root"] == str(mvtec_root)


def test_stale_results_are_removed_before_any_work(mvtec_root, tmp_path, monkeypatch):
    import gpuksvd.runs.training as training

    run_dir = tmp_path / "run"
    train_run(composed(TINY + [f"dataset.root={mvtec_root}", "ksvd.n_iter=1"]), run_dir)
    monkeypatch.setattr(training, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    (run_dir / "model.safetensors").unlink()  # force a fit
    with pytest.raises(KeyboardInterrupt):
        train_run(composed(TINY + [f"dataset.root={mvtec_root}", "ksvd.n_iter=2"]), run_dir)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "metrics.md").exists()


def test_an_interrupted_run_reuses_its_saved_model(mvtec_root, tmp_path, monkeypatch):
    import gpuksvd.runs.training as training

    run_dir = tmp_path / "run"
    cfg = composed(TINY + [f"dataset.root={mvtec_root}"])
    original = training.evaluate_and_write
    monkeypatch.setattr(training, "evaluate_and_write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # interrupted after the model was saved
        train_run(cfg, run_dir)
    assert (run_dir / "model.safetensors").is_file() and not (run_dir / "metrics.json").exists()
    saved = (run_dir / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(training, "evaluate_and_write", original)
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("fitted again"))
    result = train_run(cfg, run_dir)
    assert result["main_metric"] is not None and (run_dir / "model.safetensors").stat().st_mtime_ns == saved
    monkeypatch.undo()
    refit = train_run({**cfg, "ksvd": {**cfg["ksvd"], "n_iter": 1}}, run_dir)  # other settings: fitted again
    assert (run_dir / "model.safetensors").stat().st_mtime_ns != saved and len(refit["train_error"]["layer2"]) == 2


def test_a_failure_after_the_fit_keeps_the_model_and_says_how_to_finish(mvtec_root, tmp_path, monkeypatch):
    import gpuksvd.runs.training as training

    monkeypatch.setattr(training, "predict", lambda *a, **k: (_ for _ in ()).throw(MemoryError("out of memory")))
    with pytest.raises(training.FailedAfterFitError, match=r"MemoryError: out of memory.*saved at .*model"
                                                            r"\.safetensors: finish with `python evaluate.py model="):
        train_run(composed(TINY + [f"dataset.root={mvtec_root}"]), tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_a_truncated_test_image_fails_before_the_features(mvtec_root, tmp_path, monkeypatch):
    import gpuksvd.runs.loops as loops
    from tests.support.data_trees import write_truncated

    root = copy_tree(mvtec_root, tmp_path / "data")
    bad = write_truncated(root / "grid" / "test" / "good" / "001.png", (64, 64))
    monkeypatch.setattr(loops, "extract_training_features", lambda *a, **k: pytest.fail("extracted features"))
    with pytest.raises(UnreadableImageError, match=f"{bad.name}.*skip_unreadable=true"):
        train_run(composed(TINY + [f"dataset.root={root}"]), tmp_path / "run")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=f"skipped 1 unreadable.*{bad.name}"):
        result = train_run(composed(TINY + [f"dataset.root={root}", "dataset.skip_unreadable=true"]),
                           tmp_path / "skipping")
        assert result["n_test"] == 2 * (3 + 2 * 2) - 1


@pytest.mark.parametrize("override, message", [
    ("normalize=foo", "normalize must be one of none, minmax, train, got 'foo'"),
    ("ksvd.n_atoms=abc", "ksvd.n_atoms must be an integer or null, got 'abc'"),
    ("device=gpu", "device='gpu' is not a device here"),
    ("device=mps", "device='mps' is not a device here"),
    ("threshold.quantile=2", r"threshold.quantile must be in \(0, 1\]"),
])
def test_every_config_value_is_checked_before_any_work(override, message, mvtec_root, tmp_path, monkeypatch):
    import gpuksvd.runs.training as training

    monkeypatch.setattr(training, "load_data", lambda *a, **k: pytest.fail("listed the data"))
    with pytest.raises(ConfigError, match=message):
        train_run(composed(TINY + [f"dataset.root={mvtec_root}", override]), tmp_path / "run")


def test_more_folds_than_training_images_fail_before_the_features(mvtec_root, tmp_path, monkeypatch):
    import gpuksvd.runs.loops as loops

    monkeypatch.setattr(loops, "extract_training_features", lambda *a, **k: pytest.fail("extracted features"))
    with pytest.raises(ConfigError, match=r"threshold.folds=100 but there are only \d+ training images"):
        train_run(composed(TINY + [f"dataset.root={mvtec_root}", "threshold.folds=100"]), tmp_path / "run")


def test_run_files_get_the_umasks_mode(trained):
    run_dir, _, _ = trained
    mask = os.umask(0)
    os.umask(mask)
    for name in ("metrics.json", "metrics.md", "model.safetensors"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_thresholds_are_stored_reported_and_give_an_f1(trained):
    run_dir, _, result = trained
    model = load_model(run_dir / "model.safetensors")
    assert set(model.thresholds) == {"bottle", "grid"}
    assert {key: model.threshold_rule[key] for key in ("method", "quantile", "folds")} == dict(
        method="crossfit", quantile=0.99, folds=5)
    for category, threshold in model.thresholds.items():
        # out-of-fold scores (the default) run above the in-sample ones the thresholds are not from
        scores = model.train_scores_[[c == category for c in model.train_categories]]
        assert threshold > float(torch.quantile(scores.double(), 0.99))
    assert result["thresholds"] == pytest.approx(model.thresholds)
    assert result["times"]["crossfit_s"] > 0
    assert all(0 <= table["image_f1"] <= 1 for table in result["metrics"]["per_category"].values())
    assert "Image F1" in (run_dir / "metrics.md").read_text()


@pytest.mark.parametrize("method", ["crossfit", "quantile"])
def test_the_threshold_rule_takes_the_scores_it_names(method):
    from types import SimpleNamespace

    from gpuksvd.runs.config import ThresholdConfig
    from gpuksvd.runs.training import training_thresholds

    model = SimpleNamespace(train_scores_=torch.arange(10.0), out_of_fold_scores_=torch.arange(10.0) + 100,
                            train_categories=["a"] * 5 + ["b"] * 5)
    thresholds, rule = training_thresholds(model, ThresholdConfig(method=method, quantile=1.0, folds=None), seed=0,
                                           folds=3 if method == "crossfit" else None)
    assert thresholds == ({"a": 104.0, "b": 109.0} if method == "crossfit" else {"a": 4.0, "b": 9.0})
    assert rule["method"] == method and ("folds" in rule) == (method == "crossfit")


def test_user_mistakes_print_one_message_and_the_trace_goes_to_the_log(mvtec_root, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, f"dataset.root={mvtec_root}",
                           "ksvd.n_atoms=abc", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1
    assert done.stderr.startswith("error: config key ksvd.n_atoms must be an integer or null, got 'abc'")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3
    assert "Traceback" in (tmp_path / "run" / "train.log").read_text()
    assert "ConfigError" in json.loads((tmp_path / "run" / "failed.json").read_text())["error"]
    debug = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, f"dataset.root={mvtec_root}",
                            "ksvd.n_atoms=abc", "debug=true", f"hydra.run.dir={tmp_path / 'debug'}"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


# ----------------------------------------------------------- one tiny run per dataset option

FAST = ["backbone=resnet18", "backbone.weights=random", "backbone.layers=[layer2]", "ksvd.n_atoms=8",
        "ksvd.n_iter=1", "num_workers=0", "progress=false", "n_overlays=0", "device=cpu"]


def run(tmp_path, overrides):
    result = train_run(composed(FAST + overrides), tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").is_file()
    return result


def test_rd_mvtec(tmp_path):
    root = make_mvtec_tree(tmp_path / "mvtec", categories=("bottle",), n_train=10, size=80)
    result = run(tmp_path, ["dataset=rd_mvtec", f"dataset.root={root}", "dataset.resize=80", "dataset.crop=64",
                            "dataset.train_seed=1", "dataset.test_seed=2"])
    assert result["image_size"] == [64, 64] and result["config"]["dataset"]["random_rotation"] == 10


def test_btad(tmp_path):
    root = make_btad_tree(tmp_path / "btad", products=("01", "02"), n_train=6, size=64)
    result = run(tmp_path, ["dataset=btad", f"dataset.root={root}", "dataset.resize=64"])
    assert set(result["metrics"]["per_category"]) == {"01", "02"} and result["image_size"] == [64, 64]
    assert result["metrics"]["per_category"]["01"]["image_ap"] is not None


def test_mtd(tmp_path):
    root = make_mtd_tree(tmp_path / "mtd", n_free=20)
    result = run(tmp_path, ["dataset=mtd", f"dataset.root={root}", "dataset.resize=64"])
    assert result["n_train"] == 16  # 80 % of MT_Free


def test_ksdd(tmp_path):
    root = make_ksdd_tree(tmp_path / "ksdd", n_folders=8, n_parts=4, shape=(96, 48))
    result = run(tmp_path, ["dataset=ksdd", f"dataset.root={root}", "dataset.pre_crop=[80,40]",
                            "dataset.resize=[64,32]"])
    assert result["image_size"] == [64, 32] and result["n_train"] >= 8


def test_folder(tmp_path):
    root = make_folder_tree(tmp_path / "parts", n_train=10, size=64)
    with pytest.warns(UserWarning) as caught:
        result = run(tmp_path, ["dataset=folder", f"dataset.train_dir={root / 'train'}",
                                f"dataset.test_normal_dir={root / 'test_normal'}",
                                f"dataset.test_anomalous_dir={root / 'test_anomalous'}",
                                f"dataset.mask_dir={root / 'masks'}", "dataset.resize=64", "dataset.crop=64"])
    about_masks = [str(w.message) for w in caught if "mask" in str(w.message)]
    assert len(about_masks) == 1 and "1 of 3 anomalous test images have no mask" in about_masks[0]
    assert result["n_test"] == 5
    assert result["metrics"]["per_category"]["folder"]["pixel_auroc"] is not None  # from the masked images
