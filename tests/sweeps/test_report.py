"""report.py end to end: a tiny real sweep through ``train.py -m``, then the report's table,
CSV and figures checked against each run's metrics.json; re-running resumes."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gpuksvd.sweeps import build_table, load_runs, train_errors, write_report
from tests.support.configs import ROOT, experiment_override
from tests.support.data_trees import make_mvtec_tree


TINY = ["backbone=resnet18", "backbone.weights=random", "backbone.layers=[layer2]", "dataset=mvtec",
        "dataset.resize=64", "dataset.crop=64", "num_workers=0", "progress=false", "n_overlays=0", "device=cpu",
        "save_patch_errors=true"]
# 2 x 2 jobs: 16 atoms train; 64 atoms fail (24 training images), so failures are exercised.
SWEEP = ["ksvd.n_atoms=16,64", "ksvd.n_iter=1,2"]


def run_sweep(root, sweep_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "train.py"), "-m", experiment_override("a2_iterations"), *TINY, *SWEEP,
               f"dataset.root={root}", f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=sweep_dir.parent)
    # The 64-atom jobs fail: the sweep finishes the others, then exits non-zero with a summary.
    assert done.returncode == 1, done.stderr[-3000:]
    summary = done.stderr[done.stderr.index("2 job(s) of the sweep failed"):]
    assert summary.count("ksvd.n_atoms=64") == 2 and "need at least 64 training images" in summary
    assert "ksvd.n_atoms=16" not in summary


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep")
    root = make_mvtec_tree(base / "mvtec", categories=("bottle", "grid"), n_train=12, n_test_good=3, n_per_defect=2,
                           size=64)
    sweep_dir = base / "multirun"
    run_sweep(root, sweep_dir)
    report = subprocess.run([sys.executable, str(ROOT / "report.py"), str(sweep_dir), "--out", str(base / "report")],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    return root, sweep_dir, base / "report", report.stdout


def run_folder(sweep_dir, n_atoms, n_iter):
    [folder] = [path for path in sweep_dir.iterdir()
                if f"ksvd.n_atoms={n_atoms}," in path.name and f"ksvd.n_iter={n_iter}," in path.name]
    return folder


def markdown_table(text):
    """The first Markdown table of text as a list of rows of cells (header first)."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in row] for row in rows]
    end = next(i for i, row in enumerate(rows) if i and row[0] == "cost")
    return rows[:end]


@pytest.mark.slow
def test_sweep_folders_are_named_by_the_result_changing_overrides(sweep):
    _, sweep_dir, _, _ = sweep
    names = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir())
    assert len(names) == 4  # the command line's ksvd.n_iter=1,2 replaced the preset's 10,20,50
    # dataset.root (a path with slashes) stays out of the names: one level of job folders
    assert all(mark.parent.parent.parent == sweep_dir for mark in sweep_dir.rglob(".hydra/config.yaml"))
    for name in names:
        assert "experiment" not in name and "dataset.root" not in name and "device" not in name
        assert "num_workers" not in name and "progress" not in name and "ksvd.n_iter=" in name
    finished = {name for name in names if (sweep_dir / name / "metrics.json").is_file()}
    failed = {name for name in names if (sweep_dir / name / "failed.json").is_file()}
    assert len(finished) == 2 and all("ksvd.n_atoms=16" in name for name in finished)
    assert len(failed) == 2 and all("ksvd.n_atoms=64" in name for name in failed)


@pytest.mark.slow
def test_table_cells_match_each_runs_metrics(sweep):
    _, sweep_dir, report_dir, stdout = sweep
    text = (report_dir / "table.md").read_text()
    assert text in stdout
    rows = markdown_table(text)
    header, body = rows[0], rows[1:]
    assert [row[0] for row in body] == ["bottle", "grid", "textures", "objects", "total", "mean"]
    assert header[1:] == [f"ksvd.n_atoms={a}, ksvd.n_iter={i}" for a in (16, 64) for i in (1, 2)]
    for column, label in enumerate(header[1:], start=1):
        n_atoms, n_iter = (part.split("=")[1] for part in label.split(", "))
        folder = run_folder(sweep_dir, n_atoms, n_iter)
        if n_atoms == "64":
            assert all(row[column] == "failed" for row in body)
            continue
        metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
        tables = {**metrics["per_category"], **metrics["groups"], "total": metrics["total"], "mean": metrics["mean"]}
        for row in body:
            expected = " / ".join(f"{100 * tables[row[0]][m]:.1f}" for m in ("image_auroc", "pixel_auroc"))
            assert row[column] == expected, (row[0], label)
    assert "ksvd.n_atoms=64, ksvd.n_iter=1: ValueError: need at least 64 training images" in text


@pytest.mark.slow
def test_csv_holds_the_exact_values(sweep):
    _, sweep_dir, report_dir, _ = sweep
    with open(report_dir / "table.csv") as stream:
        lines = list(csv.DictReader(stream))
    assert len(lines) == 4 * (6 * 2 + 5)  # columns x (rows x metrics + cost rows)
    for line in lines:
        folder = run_folder(sweep_dir, line["ksvd.n_atoms"], line["ksvd.n_iter"])
        if line["ksvd.n_atoms"] == "64":
            assert line["status"] == "failed" and line["value"] == "" and line["n_failed"] == "1"
            continue
        result = json.loads((folder / "metrics.json").read_text())
        if line["row"] == "cost":
            expected = (result["peak_memory_bytes"] / 2 ** 20 if line["metric"] == "peak_memory_bytes"
                        else result["times"][line["metric"]])
        else:
            metrics = result["metrics"]
            tables = {**metrics["per_category"], **metrics["groups"], "total": metrics["total"], "mean": metrics["mean"]}
            expected = tables[line["row"]][line["metric"]]
        assert math.isclose(float(line["value"]), expected, rel_tol=1e-12), line


@pytest.mark.slow
def test_figures_are_drawn_from_the_recorded_errors(sweep):
    _, sweep_dir, report_dir, _ = sweep
    for name in ("error_maps.png", "error_curves.png", "location_curves.png", "error_surfaces.png",
                 "patch_error_histograms.png"):
        pixels = np.asarray(Image.open(report_dir / name).convert("L"), dtype=float)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.std() > 10, name  # not blank
    table = build_table(load_runs(sweep_dir))
    column = next(column for column in table.columns if column.label == "ksvd.n_atoms=16, ksvd.n_iter=2")
    errors, grid = train_errors(column)["layer2"]
    recorded = json.loads((run_folder(sweep_dir, 16, 2) / "metrics.json").read_text())["train_error"]["layer2"]
    assert grid == (8, 8) and np.array_equal(errors, np.asarray(recorded))
    assert errors.shape == (3, 64) and errors[-1].mean() < errors[0].mean()


@pytest.mark.slow
def test_rerunning_the_sweep_skips_finished_jobs(sweep, tmp_path):
    root, sweep_dir, _, _ = sweep
    finished = {path: path.stat().st_mtime_ns for path in sweep_dir.glob("*/metrics.json")}
    models = {path: path.stat().st_mtime_ns for path in sweep_dir.glob("*/model.safetensors")}
    assert len(finished) == 2
    run_sweep(root, sweep_dir)
    assert {path: path.stat().st_mtime_ns for path in sweep_dir.glob("*/metrics.json")} == finished
    assert {path: path.stat().st_mtime_ns for path in sweep_dir.glob("*/model.safetensors")} == models
    assert len(list(sweep_dir.glob("*/failed.json"))) == 2  # failed jobs are retried, and fail again
    written = write_report(sweep_dir, tmp_path, figures=False)
    assert set(written) == {"table.md", "table.csv"}
