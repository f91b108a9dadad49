"""The Hydra glue: sweep folder names, the failure record, one-line messages for user mistakes."""
import json
import os

import pytest

from gpuksvd.runs import ConfigError
from gpuksvd.runs.hydra_support import job_dirname, run_and_report


def test_job_folders_leave_out_paths_and_settings_that_do_not_change_results():
    name = job_dirname(["ksvd.n_iter=10", "dataset.root=/data/my parts/v2", "device=cuda", "num_workers=4",
                        "backbone.weights=/models/w.pth", "+dataset.train_dir=good", "ksvd.sparsity=0.5",
                        "dataset.categories=[bottle,grid]"])
    assert name == "dataset.categories=[bottle,grid],ksvd.n_iter=10,ksvd.sparsity=0.5"
    assert "/" not in name and "\\\\" not in name
    assert job_dirname(["dataset.root=/a/b"]) == "default"  # one level, whatever the value
    assert job_dirname(["preset.note=a b"]) == "preset.note=a_b"
    long = job_dirname([f"key{i}=value{i}" for i in range(40)])
    assert len(long) <= 200 and long != job_dirname([f"key{i}=value{i}" for i in range(41)])


def test_a_user_mistake_prints_one_line_and_is_recorded(tmp_path, capsys):
    def work():
        raise ConfigError("config key ksvd.n_atoms must be an integer or null, got 'abc'")

    with pytest.raises(SystemExit) as exit_info:
        run_and_report(work, run_dir=tmp_path, resolved={"a": 1}, log_name="train.log", multirun=False, debug=False)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: config key ksvd.n_atoms") and "Traceback" not in err
    assert json.loads((tmp_path / "failed.json").read_text()) == {
        "error": "ConfigError: config key ksvd.n_atoms must be an integer or null, got 'abc'", "config": {"a": 1}}
    assert "Traceback" in (tmp_path / "train.log").read_text()


def test_bugs_and_debug_keep_the_traceback_and_sweeps_go_on(tmp_path):
    def bug():
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        run_and_report(bug, run_dir=tmp_path, resolved={}, log_name="x.log", multirun=False, debug=False)
    with pytest.raises(ValueError):
        run_and_report(lambda: (_ for _ in ()).throw(ValueError("v")), run_dir=tmp_path, resolved={},
                       log_name="x.log", multirun=False, debug=True)
    result = run_and_report(bug, run_dir=tmp_path / "job", resolved={}, log_name="x.log", multirun=True, debug=False)
    assert result is None  # the sweep goes on (and Optuna records a failed trial; a NaN would abort it)
    assert (tmp_path / "job" / "failed.json").is_file()
    assert run_and_report(lambda: 42, run_dir=tmp_path, resolved={}, log_name="x.log", multirun=False,
                          debug=False) == 42


def test_the_sweep_summary_lists_the_failures_of_this_sweep_whatever_the_clocks(tmp_path, capsys):
    from omegaconf import OmegaConf

    from gpuksvd.files import write_json
    from gpuksvd.runs.hydra_support import FailedJobsSummary

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    write_json({"error": "ValueError: from an earlier sweep"}, tmp_path / "old" / "failed.json")
    write_json({"error": "ValueError: failed again"}, tmp_path / "again" / "failed.json")
    summary = FailedJobsSummary()
    summary.on_multirun_start(config)
    write_json({"error": "ValueError: failed again"}, tmp_path / "again" / "failed.json")  # rewritten
    write_json({"error": "ValueError: new failure"}, tmp_path / "new" / "failed.json")
    os.utime(tmp_path / "new" / "failed.json", (0, 0))  # a compute node whose clock is far behind
    with pytest.raises(SystemExit) as exit_info:
        summary.on_multirun_end(config)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "2 job(s) of the sweep failed" in err and "again: ValueError: failed again" in err
    assert "new: ValueError: new failure" in err and "earlier sweep" not in err
    FailedJobsSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "none")}}}))


def test_a_preset_whose_plugin_is_missing_says_what_to_install(monkeypatch, capsys):
    from gpuksvd.runs import hydra_support

    monkeypatch.setitem(hydra_support.PLUGINS, "hydra/launcher/slurm",
                        ("hydra_plugins.not_installed_launcher", 'pip install "gpuksvd[cluster]"'))
    assert hydra_support.plugin_missing("hydra/launcher/basic") is None  # Hydra's own
    assert hydra_support.plugin_missing("experiment/a2_iterations") is None
    assert "gpuksvd[cluster]" in hydra_support.plugin_missing("hydra/launcher/slurm")
    hydra_support.check_plugins(["ksvd.n_iter=1,2", "hydra/launcher=basic"])
    with pytest.raises(SystemExit) as exit_info:
        hydra_support.check_plugins(["-m", "hydra/launcher=slurm"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith('error: hydra/launcher=slurm needs a Hydra plugin that is not installed: '
                                              'pip install "gpuksvd[cluster]"')
