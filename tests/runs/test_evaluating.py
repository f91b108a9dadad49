"""evaluate_run: the model's own test split by default, its own preprocessing always, another
dataset only when named, thresholds re-fitted on labelled images, a folder of new images decided."""
import csv
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from gpuksvd.detector import load_model
from gpuksvd.runs import evaluate_run, train_run
from gpuksvd.runs.evaluating import UnseenCategoryWarning
from tests.support.configs import ROOT, composed
from tests.support.runs import TINY

pytestmark = pytest.mark.slow
QUIET = ["num_workers=0", "progress=false", "n_overlays=0", "device=cpu"]


def same_metrics(expected, evaluated):
    for category, values in expected["metrics"]["per_category"].items():
        for name, value in values.items():
            other = evaluated["metrics"]["per_category"][category][name]
            assert (value is None and other is None) or abs(value - other) < 1e-6, (category, name)


def test_evaluate_reproduces_train_metrics(trained, mvtec_root, tmp_path):
    run_dir, cfg, result = trained
    eval_cfg = composed([f"model={run_dir / 'model.safetensors'}", "dataset=mvtec", f"dataset.root={mvtec_root}",
                         "dataset.resize=64", "dataset.crop=64", *QUIET], "evaluate")
    same_metrics(result, evaluate_run(eval_cfg, tmp_path))


@pytest.fixture(scope="module")
def cropped(mvtec_root, tmp_path_factory):
    """A model trained at resize 80 / crop 64 on one category."""
    run_dir = tmp_path_factory.mktemp("cropped")
    cfg = composed(TINY + [f"dataset.root={mvtec_root}", "dataset.resize=80", "dataset.crop=64",
                           "dataset.categories=[bottle]", "ksvd.n_atoms=8"])
    return run_dir, train_run(cfg, run_dir)


def test_by_default_the_models_own_dataset_and_preprocessing(cropped, tmp_path):
    run_dir, result = cropped
    evaluated = evaluate_run(composed([f"model={run_dir / 'model.safetensors'}", *QUIET], "evaluate"), tmp_path)
    assert list(evaluated["metrics"]["per_category"]) == ["bottle"]  # not the generated dataset's five
    assert evaluated["n_test"] == result["n_test"]
    same_metrics(result, evaluated)


def test_another_dataset_only_when_named_with_the_models_preprocessing(cropped, mvtec_root, tmp_path):
    run_dir, _ = cropped
    cfg = composed([f"model={run_dir / 'model.safetensors'}", "dataset=mvtec", f"dataset.root={mvtec_root}",
                    *QUIET], "evaluate")  # the dataset's own config says resize 256, crop 224
    with pytest.warns(UnseenCategoryWarning, match=r"not on \['grid'\]"):
        evaluated = evaluate_run(cfg, tmp_path)
    assert set(evaluated["metrics"]["per_category"]) == {"bottle", "grid"}
    assert evaluated["dataset"]["resize"] == [80, 80] and evaluated["dataset"]["crop"] == [64, 64]


def test_thresholds_refit_on_a_labelled_folder(cropped, mvtec_root, tmp_path):
    run_dir, _ = cropped
    validation = tmp_path / "validation"
    shutil.copytree(mvtec_root / "bottle" / "test", validation)  # good/, crack/, scratch/: one category
    before = load_model(run_dir / "model.safetensors").thresholds
    cfg = composed([f"model={run_dir / 'model.safetensors'}", f"threshold.validation_root={validation}", *QUIET],
                   "evaluate")
    evaluated = evaluate_run(cfg, tmp_path / "run")
    refit = load_model(tmp_path / "run" / "model.safetensors")
    assert refit.threshold_rule["method"] == "f1" and set(refit.thresholds) == {"bottle"}
    assert evaluated["thresholds"] == pytest.approx(refit.thresholds)
    assert refit.thresholds != before
    # The planted defects are bright squares: on its own validation images the F1-optimal threshold is perfect.
    assert evaluated["metrics"]["per_category"]["bottle"]["image_f1"] == pytest.approx(1.0)


def test_a_folder_of_new_images_is_decided_with_the_threshold(cropped, mvtec_root, tmp_path):
    run_dir, _ = cropped
    folder = tmp_path / "new"
    folder.mkdir()
    for source in [*(mvtec_root / "bottle" / "test" / "good").glob("*.png"),
                   *(mvtec_root / "bottle" / "test" / "crack").glob("*.png")]:
        shutil.copy(source, folder / f"{source.parent.name}_{source.name}")
    model = load_model(run_dir / "model.safetensors")
    result = evaluate_run(composed([f"model={run_dir / 'model.safetensors'}", f"images={folder}", *QUIET],
                                   "evaluate"), tmp_path / "run")
    assert result["category"] == "bottle" and result["threshold"] == pytest.approx(model.thresholds["bottle"])
    with open(tmp_path / "run" / "scores.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 5 and result["n_anomalous"] == sum(row["decision"] == "anomalous" for row in rows)
    for row in rows:
        score, threshold = float(row["score"]), float(row["threshold"])
        assert row["decision"] == ("anomalous" if score >= threshold else "normal")
        assert (float(row["normalized_score"]) >= 0.5) == (score >= threshold)
    assert any(row["decision"] == "anomalous" for row in rows if "crack" in row["path"])  # bright squares
    heatmaps = sorted((tmp_path / "run" / "heatmaps").glob("*.png"))
    with Image.open(heatmaps[0]) as heatmap:
        assert len(heatmaps) == 5 and heatmap.width < 600  # input and map: no empty truth panel


def test_evaluate_without_a_model_says_what_to_pass(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith("error: evaluate.py needs a model file: pass model=")
    assert "Traceback" not in done.stderr
