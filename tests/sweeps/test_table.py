"""The table rules of a sweep report on hand-written run folders: averaging, one-class merge,
failed and unfinished runs, costs."""
import numpy as np
import pytest

from gpuksvd.sweeps import build_table, load_runs
from tests.support.sweeps import GROUPS, fake_run


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
    assert table.rows == ["bottle", "grid", "textures", "objects", "total", "mean"]
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
    assert table.rows == ["bottle", "cable", "grid", "zipper", "objects", "textures", "total", "mean"]
    assert one_class.values["bottle"]["image_auroc"] == 0.6 and one_class.values["grid"]["pixel_auroc"] == 0.6
    assert one_class.values["objects"]["image_auroc"] == pytest.approx(0.7)  # (0.6 + 0.8) / 2
    assert one_class.values["mean"]["image_auroc"] == pytest.approx((0.6 + 0.8 + 0.5) / 3)
    assert one_class.values["total"]["image_auroc"] == pytest.approx((0.7 + 0.5) / 2)  # paper: mean of groups
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
