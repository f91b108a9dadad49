"""evaluate_run: re-evaluating a saved model on a dataset, scoring a folder of images."""
import pytest

from gpuksvd.runs import evaluate_run
from tests.support.configs import composed

pytestmark = pytest.mark.slow


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
