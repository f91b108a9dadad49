"""The paper's presets compose, and report.py turns a sweep into the right table and figures.

Three parts: every conf/experiment preset composes (paper defaults and the offline Lite /
generated overrides) with every value of its sweep; the table rules (averaging, one-class
merge, failed and unfinished runs) on hand-written run folders; and a tiny real sweep through
``train.py -m`` and ``report.py`` end to end.
"""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_trees import make_mvtec_tree
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from gpuksvd.data import MVTEC_OBJECTS, MVTEC_TEXTURES
from gpuksvd.model import PSDLConfig
from gpuksvd.report import build_table, load_runs, train_errors, write_report

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PRESETS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml") if not path.stem.startswith("_"))
LITE = ["backbone=efficientnet_lite0", "dataset=generated"]


def experiment_override(name):
    """``experiment=<name>`` once conf/config.yaml lists the experiment group in its defaults,
    ``+experiment=<name>`` (append) while it does not."""
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    listed = any(isinstance(entry, dict) and any(key.split()[-1] == "experiment" for key in entry)
                 for entry in defaults)
    return f"experiment={name}" if listed else f"+experiment={name}"


def composed(overrides):
    """The composed config with its ``hydra`` node (unresolved) and the task config (resolved)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    hydra = cfg.hydra
    task = OmegaConf.to_container(cfg, resolve=False)
    task.pop("hydra")
    return hydra, OmegaConf.to_container(OmegaConf.create(task), resolve=True)


def sweep_values(params):
    """{key: [value text, ...]} of hydra.sweeper.params, parsed as Hydra parses them."""
    parser = OverridesParser.create()
    overrides = {key: parser.parse_override(f"{key}={value}") for key, value in params.items()}
    return {key: list(override.sweep_string_iterator()) if override.is_sweep_override()
            else [override.get_value_element_as_str()] for key, override in overrides.items()}


def lookup(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


# --------------------------------------------------------------------------------------------
# Presets


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("extra", [[], LITE], ids=["paper", "lite"])
def test_every_preset_composes_with_every_sweep_value(name, extra):
    hydra, cfg = composed([experiment_override(name), *extra])
    assert hydra.sweep.dir == f"multirun/{name}/{cfg['dataset']['name']}"
    assert OmegaConf.to_container(hydra.sweep)["subdir"] == "${hydra:job.override_dirname}"
    assert {"experiment", "dataset.root", "device"} <= set(hydra.job.config.override_dirname.exclude_keys)
    params = sweep_values(hydra.sweeper.params)
    assert params and all(values for values in params.values())
    if extra:
        assert cfg["backbone"]["name"] == "efficientnet_lite0" and cfg["dataset"]["name"] == "generated"
    else:
        assert cfg["dataset"]["name"] in {"mvtec", "rd_mvtec", "btad", "mtd", "ksdd"}
    for key, values in params.items():
        # Paper: the first four values and the last (one_class has 16 alike); lite: the first.
        for value in (values[:4] + values[4:][-1:]) if not extra else values[:1]:
            _, job = composed([experiment_override(name), *extra, f"{key}={value}"])
            PSDLConfig(**job["ksvd"])
            assert job["backbone"]["layers"] and job["backbone"]["fusion"] in ("concat", "separate")
            if key in ("backbone", "ksvd"):  # a config group: its option was picked
                assert job[key].get("name", value) == value
            else:
                assert lookup(job, key) == yaml.safe_load(value), (key, value)


def test_a1_sweeps_fixed_dct_against_three_initialisations_without_a_cross_product():
    hydra, _ = composed([experiment_override("a1_dictionary")])
    assert sweep_values(hydra.sweeper.params) == {"ksvd": ["fixed_dct", "dct", "haar", "random"]}
    settings = {option: composed([experiment_override("a1_dictionary"), f"ksvd={option}"])[1]["ksvd"]
                for option in ("fixed_dct", "dct", "haar", "random")}
    assert {option: (s["n_iter"], s["init"]) for option, s in settings.items()} == {
        "fixed_dct": (0, "dct"), "dct": (20, "dct"), "haar": (20, "haar"), "random": (20, "random")}


def test_layer_sets_pick_layers_and_fusion_and_follow_layer_names():
    expected = {"layer1": (["layer1"], "concat"), "layer4": (["layer4"], "concat"),
                "concat123": (["layer1", "layer2", "layer3"], "concat"),
                "separate123": (["layer1", "layer2", "layer3"], "separate")}
    for layer_set, (layers, fusion) in expected.items():
        _, cfg = composed([experiment_override("t1_layers"), f"layer_set={layer_set}"])
        assert (cfg["backbone"]["layers"], cfg["backbone"]["fusion"]) == (layers, fusion)
    _, cfg = composed([experiment_override("t1_layers"), *LITE, "layer_names=[block2,block4,block10,block15]",
                       "layer_set=separate123"])
    assert cfg["backbone"]["layers"] == ["block2", "block4", "block10"] and cfg["backbone"]["fusion"] == "separate"


def test_presets_match_the_paper_setups():
    def sweep(name):
        return sweep_values(composed([experiment_override(name)])[0].sweeper.params)

    assert sweep("a2_iterations") == {"ksvd.n_iter": ["10", "20", "50"]}
    assert sweep("a3_sparsity") == {"ksvd.sparsity": ["0.25", "0.5", "0.75"]}
    assert composed([experiment_override("a3_sparsity")])[1]["save_patch_errors"] is True
    assert sweep("t2_architectures")["backbone"] == ["resnet18", "wide_resnet50_2", "efficientnet_b5",
                                                     "efficientnet_b6", "efficientnet_b7"]
    assert sweep("t3_best_mvtec") == {"backbone.layers": ["[block15]", "[block22]", "[block30]"]}
    seeds = ["0", "1", "2", "3"]
    assert sweep("t4_rd_mvtec") == {"dataset.train_seed": seeds, "dataset.test_seed": seeds}
    assert composed([experiment_override("t4_rd_mvtec")])[1]["report"]["average"] == ["dataset.train_seed",
                                                                                      "dataset.test_seed"]
    assert "image_ap" in composed([experiment_override("t5_btad")])[1]["report"]["metrics"]
    assert sweep("t6_mtd") == {"backbone": ["efficientnet_b6", "efficientnet_b7"]}
    one_class = sweep("one_class")["dataset.categories"]
    assert sorted(one_class[:-1]) == sorted(f"[{name}]" for name in (*MVTEC_TEXTURES, *MVTEC_OBJECTS))
    assert one_class[-1] == "null"


# --------------------------------------------------------------------------------------------
# Table rules on hand-written run folders

TIMES = {"features_s": 1.0, "ksvd_s": 2.0, "ksvd_per_iter_s": 0.5, "fit_s": 3.0, "test_scoring_s": 1.0,
         "test_images_per_s": 10.0}


def metrics_of(per_category, groups):
    """A metrics.json "metrics" dict from {category: (image AUROC, pixel AUROC)}; groups and the
    mean are the means of their categories (image AP = image AUROC, AUPRO = pixel AUROC)."""
    full = {name: {"image_auroc": image, "image_ap": image, "pixel_auroc": pixel, "aupro": pixel}
            for name, (image, pixel) in per_category.items()}

    def mean_of(names):
        return {metric: float(np.mean([full[name][metric] for name in names])) for metric in full[names[0]]}

    present = {group: [name for name in members if name in full] for group, members in groups.items()}
    mean = mean_of(list(full))
    return {"per_category": full, "groups": {group: mean_of(names) for group, names in present.items() if names},
            "mean": mean, "main_metric": mean["image_auroc"]}


def fake_run(folder, overrides, config, per_category=None, groups=None, status="finished", fit_s=3.0, job=0):
    """A run folder as train.py writes it: .hydra/ plus metrics.json, failed.json or nothing."""
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {
        "runtime": {"choices": {"backbone": "resnet18", "dataset": "mvtec", "ksvd": "paper"}},
        "job": {"num": job, "config": {"override_dirname": {"exclude_keys": ["experiment", "dataset.root"]}}}}}))
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if status == "finished":
        result = {"metrics": metrics_of(per_category, groups or {}), "times": {**TIMES, "fit_s": fit_s},
                  "peak_memory_bytes": 2 ** 20, "train_error": {"layer3": [[0.9, 0.8], [0.5, 0.4]]},
                  "feature_shapes": [[256, 1, 2]], "config": config}
        (folder / "metrics.json").write_text(json.dumps(result))
    elif status == "failed":
        (folder / "failed.json").write_text(json.dumps({"error": "ValueError: planted failure", "config": config}))


GROUPS = {"textures": ["grid"], "objects": ["bottle", "cable"]}


def test_seeds_are_averaged_in_every_cell(tmp_path):
    values = {}
    for train_seed in (0, 1):
        for test_seed in (0, 1):
            per_category = {"bottle": (0.5 + 0.1 * train_seed + 0.01 * test_seed, 0.9),
                            "grid": (0.7, 0.8 + 0.05 * test_seed)}
            values[train_seed, test_seed] = per_category
            config = {"dataset": {"categories": None, "train_seed": train_seed, "test_seed": test_seed},
                      "report": {"average": ["dataset.train_seed", "dataset.test_seed"]}}
            overrides = {"dataset.train_seed": train_seed, "dataset.test_seed": test_seed,
                         "dataset.root": f"/data/{train_seed}"}  # excluded key: never a column
            fake_run(tmp_path / f"s{train_seed}{test_seed}", overrides, config, per_category, GROUPS,
                     fit_s=1.0 + train_seed)
    table = build_table(load_runs(tmp_path))
    assert table.keys == [] and table.averaged == ["dataset.test_seed", "dataset.train_seed"]
    [column] = table.columns
    assert table.rows == ["bottle", "grid", "textures", "objects", "mean"]
    bottle = np.mean([v["bottle"][0] for v in values.values()])
    assert column.values["bottle"]["image_auroc"] == pytest.approx(bottle)
    assert column.values["objects"]["image_auroc"] == pytest.approx(bottle)
    mean_pixel = np.mean([(0.9 + v["grid"][1]) / 2 for v in values.values()])
    assert column.values["mean"]["pixel_auroc"] == pytest.approx(mean_pixel)
    assert column.costs["fit_s"] == pytest.approx(1.5)
    assert table.cell("bottle", column) == f"{100 * bottle:.1f} / 90.0"
    assert "mean over dataset.test_seed × dataset.train_seed" in table.to_markdown()
    # --average with no key: every seed pair is its own column
    assert len(build_table(load_runs(tmp_path), average=[]).columns) == 4


def test_one_class_runs_merge_into_one_column_and_failures_show(tmp_path):
    for job, (name, scores) in enumerate({"bottle": (0.6, 0.7), "cable": (0.8, 0.9), "grid": (0.5, 0.6)}.items()):
        fake_run(tmp_path / name, {"dataset.categories": f"[{name}]"}, {"dataset": {"categories": [name]}},
                 {name: scores}, GROUPS, fit_s=2.0, job=job)
    fake_run(tmp_path / "zipper", {"dataset.categories": "[zipper]"}, {"dataset": {"categories": ["zipper"]}},
             status="failed", job=3)
    # "all" sorts first by folder name; the sweep's job order puts it last, as the paper would
    fake_run(tmp_path / "all", {"dataset.categories": "null"}, {"dataset": {"categories": None}},
             {"bottle": (0.9, 0.95), "cable": (0.7, 0.9), "grid": (1.0, 0.99)}, GROUPS, fit_s=5.0, job=4)
    table = build_table(load_runs(tmp_path))
    one_class, every = table.columns
    assert (one_class.label, every.label) == ("one-class", "all categories")
    assert table.rows == ["bottle", "cable", "grid", "zipper", "objects", "textures", "mean"]
    assert one_class.values["bottle"]["image_auroc"] == 0.6 and one_class.values["grid"]["pixel_auroc"] == 0.6
    assert one_class.values["objects"]["image_auroc"] == pytest.approx(0.7)  # (0.6 + 0.8) / 2
    assert one_class.values["mean"]["image_auroc"] == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert one_class.costs["fit_s"] == pytest.approx(6.0)  # three one-class models trained
    assert one_class.costs["test_images_per_s"] == pytest.approx(10.0)  # 3 x 10 images in 3 x 1 s
    assert table.cell("zipper", one_class) == "failed" and table.cell("zipper", every) == "–"
    assert table.cell("mean", every) == f"{100 * (0.9 + 0.7 + 1.0) / 3:.1f} / {100 * (0.95 + 0.9 + 0.99) / 3:.1f}"
    assert "4 runs" in table.header(one_class) and "1 failed" in table.header(one_class)


def test_failed_and_unfinished_columns(tmp_path):
    config = {"dataset": {"categories": None}, "ksvd": {"n_iter": 1}}
    fake_run(tmp_path / "a", {"ksvd.n_iter": 1}, config, {"bottle": (0.5, 0.5)})
    fake_run(tmp_path / "b", {"ksvd.n_iter": 2}, {**config, "ksvd": {"n_iter": 2}}, status="failed")
    fake_run(tmp_path / "c", {"ksvd.n_iter": 3}, {**config, "ksvd": {"n_iter": 3}}, status="unfinished")
    table = build_table(load_runs(tmp_path), metrics=["image_auroc"])
    assert [column.label for column in table.columns] == ["ksvd.n_iter=1", "ksvd.n_iter=2", "ksvd.n_iter=3"]
    assert [table.cell("mean", column) for column in table.columns] == ["50.0", "failed", "unfinished"]
    markdown = table.to_markdown()
    assert "| K-SVD s/iter | 0.5 | failed | unfinished |" in markdown
    assert "ksvd.n_iter=2: ValueError: planted failure" in markdown


def test_bad_inputs_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_runs(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no run folders"):
        load_runs(tmp_path)
    fake_run(tmp_path / "a", {"ksvd.n_iter": 1}, {"dataset": {"categories": None}}, {"bottle": (0.5, 0.5)})
    with pytest.raises(ValueError, match="unknown metrics.*'auc'"):
        build_table(load_runs(tmp_path), metrics=["auc"])


# --------------------------------------------------------------------------------------------
# End to end: a tiny sweep through train.py -m and report.py

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
    assert done.returncode == 0, done.stderr[-3000:]


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
    assert [row[0] for row in body] == ["bottle", "grid", "textures", "objects", "mean"]
    assert header[1:] == [f"ksvd.n_atoms={a}, ksvd.n_iter={i}" for a in (16, 64) for i in (1, 2)]
    for column, label in enumerate(header[1:], start=1):
        n_atoms, n_iter = (part.split("=")[1] for part in label.split(", "))
        folder = run_folder(sweep_dir, n_atoms, n_iter)
        if n_atoms == "64":
            assert all(row[column] == "failed" for row in body)
            continue
        metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
        tables = {**metrics["per_category"], **metrics["groups"], "mean": metrics["mean"]}
        for row in body:
            expected = " / ".join(f"{100 * tables[row[0]][m]:.1f}" for m in ("image_auroc", "pixel_auroc"))
            assert row[column] == expected, (row[0], label)
    assert "ksvd.n_atoms=64, ksvd.n_iter=1: ValueError: need at least 64 training images" in text


@pytest.mark.slow
def test_csv_holds_the_exact_values(sweep):
    _, sweep_dir, report_dir, _ = sweep
    with open(report_dir / "table.csv") as stream:
        lines = list(csv.DictReader(stream))
    assert len(lines) == 4 * (5 * 2 + 5)  # columns x (rows x metrics + cost rows)
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
            tables = {**metrics["per_category"], **metrics["groups"], "mean": metrics["mean"]}
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
