"""Reading a sweep's folders: run status, override values, swept and fixed keys, bad folders."""
import json

import pytest

from gpuksvd.sweeps import fixed_overrides, format_value, load_runs, swept_keys
from tests.support.sweeps import GROUPS, fake_run


def test_runs_know_their_status_and_values(tmp_path):
    config = {"dataset": {"categories": ["bottle"], "root": "/data"}, "ksvd": {"n_iter": 2, "sparsity": 0.25}}
    fake_run(tmp_path / "a", {"ksvd.n_iter": 2, "dataset.root": "/data"}, config, {"bottle": (0.5, 0.5)}, GROUPS)
    fake_run(tmp_path / "b", {"ksvd.n_iter": 3, "dataset.root": "/data"},
             {**config, "ksvd": {"n_iter": 3, "sparsity": 0.25}}, status="failed")
    fake_run(tmp_path / "c", {"ksvd.n_iter": 4, "dataset.root": "/data"},
             {**config, "ksvd": {"n_iter": 4, "sparsity": 0.25}}, status="unfinished")
    runs = load_runs(tmp_path)
    assert [run.status for run in runs] == ["finished", "failed", "unfinished"]
    assert runs[1].error == "ValueError: planted failure"
    assert [run.value("ksvd.n_iter") for run in runs] == ["2", "3", "4"]
    assert runs[0].value("ksvd") == "paper" and runs[0].value("dataset.categories") == "[bottle]"
    assert swept_keys(runs) == ["ksvd.n_iter"]  # dataset.root is excluded, and the same anyway
    assert fixed_overrides(runs) == {}


def test_format_value_writes_override_text():
    assert format_value(None) == "null" and format_value(True) == "true" and format_value(0.25) == "0.25"
    assert format_value(["a", "b"]) == "[a,b]" and format_value({"k": [1, None]}) == "{k:[1,null]}"


def test_bad_folders_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_runs(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no run folders"):
        load_runs(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"metrics": {}, "config": {"a": 1}}))
    [run] = load_runs(tmp_path)  # a run folder without .hydra/ (e.g. copied around) still reads
    assert run.status == "finished" and run.config == {"a": 1}
