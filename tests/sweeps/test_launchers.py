"""A paper preset swept through Hydra launchers (the joblib launcher, two jobs at once; submitit's
local executor): the same job folders as the basic launcher, the failure summary, report.py.
Skipped when the launcher plugin is not installed (pip install -e ".[test]" installs both)."""
import json
import os
import runpy
import subprocess
import sys

import pytest

from gpuksvd.runs.hydra_support import plugin_missing
from tests.support.configs import ROOT, experiment_override
from tests.support.data_trees import make_mvtec_tree

pytestmark = pytest.mark.slow

TINY = ["backbone=resnet18", "backbone.weights=random", "backbone.layers=[layer2]", "dataset=mvtec",
        "dataset.resize=64", "dataset.crop=64", "ksvd.n_atoms=16", "num_workers=0", "progress=false",
        "n_overlays=0", "device=cpu"]


def needs(preset):
    missing = plugin_missing(preset)
    return pytest.mark.skipif(missing is not None, reason=f"{preset} needs a Hydra plugin that is not installed: "
                                                          f"{missing}")


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), categories=("bottle", "grid"), n_train=12,
                           n_test_good=3, n_per_defect=2, size=64)


def sweep(launcher, sweep_values, root, sweep_dir, *extra):
    command = [sys.executable, str(ROOT / "train.py"), "-m", experiment_override("a2_iterations"), *TINY,
               *sweep_values, f"dataset.root={root}", f"hydra.sweep.dir={sweep_dir}", f"hydra/launcher={launcher}",
               *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=sweep_dir.parent)


def report(sweep_dir):
    """report.py on the sweep folder (in this process: its command line, without the start-up)."""
    report_main = runpy.run_path(str(ROOT / "report.py"))["main"]
    assert report_main([str(sweep_dir), "--no-figures"]) == 0
    return (sweep_dir / "table.md").read_text()


def job_folder(sweep_dir, *settings):
    """The job folder whose name holds every ``key=value`` of ``settings`` (names hold all the
    result-changing overrides, TINY's too)."""
    [folder] = [path for path in sweep_dir.iterdir()
                if path.is_dir() and all(f"{setting}," in path.name + "," for setting in settings)]
    return folder


@needs("hydra/launcher/joblib_gpus")
def test_joblib_runs_two_jobs_at_once_in_the_usual_folders_and_reports_failures(mvtec_root, tmp_path):
    sweep_dir = tmp_path / "multirun"
    # 64 atoms fail (24 training images): the other job finishes, the summary names the failed one
    done = sweep("joblib_gpus", ["ksvd.n_iter=1", "ksvd.n_atoms=16,64"], mvtec_root, sweep_dir,
                 "hydra.launcher.n_jobs=2")
    assert done.returncode == 1, done.stderr[-3000:]
    summary = done.stderr[done.stderr.index("1 job(s) of the sweep failed"):]
    assert "ksvd.n_atoms=64" in summary and "need at least 64 training images" in summary
    assert "ksvd.n_atoms=16" not in summary
    finished, failed = (job_folder(sweep_dir, f"ksvd.n_atoms={n_atoms}") for n_atoms in (16, 64))
    assert len([path for path in sweep_dir.iterdir() if path.is_dir()]) == 2
    assert json.loads((finished / "metrics.json").read_text())["main_metric"] is not None
    assert (failed / "failed.json").is_file() and not (failed / "metrics.json").exists()
    table = report(sweep_dir)
    assert "ksvd.n_atoms=16" in table and "failed" in table
    # The launcher ran both jobs at once, each in a worker process of its own
    assert "Joblib.Parallel(n_jobs=2," in done.stdout + done.stderr and "is launching 2 jobs" in done.stdout


@needs("hydra/launcher/submitit_local")
def test_submitit_runs_the_jobs_as_processes_in_the_usual_folders(mvtec_root, tmp_path):
    sweep_dir = tmp_path / "multirun"
    done = sweep("submitit_local", ["ksvd.n_iter=1,2"], mvtec_root, sweep_dir, "hydra.launcher.timeout_min=10")
    assert done.returncode == 0, done.stderr[-3000:]
    for n_iter in (1, 2):
        folder = job_folder(sweep_dir, f"ksvd.n_iter={n_iter}")
        assert (folder / "metrics.json").is_file() and (folder / ".hydra" / "overrides.yaml").is_file()
    assert (sweep_dir / ".submitit").is_dir()  # submitit's own records, which report.py skips
    table = report(sweep_dir)
    assert "ksvd.n_iter=1" in table and "ksvd.n_iter=2" in table and "failed" not in table


@needs("experiment/tune")
def test_the_optuna_search_records_failed_trials_and_goes_on(mvtec_root, tmp_path):
    import yaml

    sweep_dir = tmp_path / "multirun"
    # 64 atoms cannot be learnt from 24 images: those trials fail (None, not NaN, reaches Optuna)
    settings = [item for item in TINY if item.split("=")[0] not in ("backbone", "backbone.layers", "ksvd.n_atoms")]
    command = [sys.executable, str(ROOT / "train.py"), "-m", experiment_override("tune"), *settings,
               "ksvd.n_atoms=choice(16,64)", f"dataset.root={mvtec_root}", f"hydra.sweep.dir={sweep_dir}",
               "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    trials = [path for path in sweep_dir.iterdir() if path.is_dir()]
    finished = [path for path in trials if (path / "metrics.json").is_file()]
    failed = [path for path in trials if (path / "failed.json").is_file()]
    assert finished and len(finished) + len(failed) == len(trials), done.stderr[-3000:]
    assert all("ksvd.n_atoms=64" in path.name for path in failed)
    assert done.returncode == (1 if failed else 0), done.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(json.loads((path / "metrics.json").read_text())["main_metric"]
                                     for path in finished)
