"""One fit over several processes (gloo on the CPU): the same result as one process with 1, 2
or 3 processes and uneven shares; a process that fails or is killed stops the others within
seconds, naming it, and leaves no model file; start-up refusals."""
import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gpuksvd.runs import ConfigError, train_run
from gpuksvd.runs.distributed import Launch, check_devices, launch, process_device
from tests.support.configs import ROOT, composed
from tests.support.distributed import finish, spawn_train_runs, torchrun
from tests.support.runs import TINY

# Uneven shares: 24 training images in batches of 5 (10, 10, 4 images on 3 processes; 15, 9
# on 2), 8x8 = 64 locations (22, 21, 21 or 32, 32), 14 test images (10, 4 / 10, 4, 0).
DISTRIBUTED = [*TINY, "batch_size=5", "cache=false", "save_patch_errors=true", "n_overlays=0"]


def test_launch_comes_from_torchruns_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert launch() is None  # one process: a plain run
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert launch() == Launch(rank=2, world_size=3, local_rank=0)


def test_a_process_without_a_gpu_among_processes_with_one_is_refused():
    check_devices(["cuda", "cuda"], "auto")
    check_devices(["cpu", "cpu", "cpu"], "auto")
    with pytest.raises(ConfigError, match=r"ranks \[1\] have no GPU while ranks \[0, 2\] do.*device=cpu"):
        check_devices(["cuda", "cpu", "cuda"], "auto")


def test_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    assert process_device("cpu", Launch(1, 2, 1)) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device=cuda:1 under torchrun.*device=auto or device=cuda"):
        process_device("cuda:1", Launch(1, 2, 1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert process_device("auto", Launch(3, 4, 1)) == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="LOCAL_RANK 2 but this machine shows 2 GPU.*--nproc-per-node=2"):
        process_device("cuda", Launch(2, 4, 2))


def fitted_state(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_run(single, other):
    """Same dictionaries, Gaussians, training and test scores, codes (through the test
    descriptors: code L1 norm and reconstruction error) and metrics, to float32 rounding."""
    expected, got = fitted_state(single), fitted_state(other)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        if value.dtype.is_floating_point:
            assert torch.allclose(got[name], value, rtol=1e-4, atol=1e-5), (name, (got[name] - value).abs().max())
    with np.load(single / "patch_errors.npz") as a, np.load(other / "patch_errors.npz") as b:
        for name in a.files:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (single, other))
    for category, table in a["metrics"]["per_category"].items():
        for metric, value in table.items():
            assert b["metrics"]["per_category"][category][metric] == pytest.approx(value, abs=1e-6), (category, metric)
    assert b["main_metric"] == pytest.approx(a["main_metric"], abs=1e-6)
    # the thresholds: out-of-fold scores (threshold.method=crossfit), each process fitting the
    # folds of its locations
    assert a["threshold_rule"]["method"] == "crossfit" and b["threshold_rule"] == a["threshold_rule"]
    assert b["thresholds"] == pytest.approx(a["thresholds"], rel=1e-4)
    np.testing.assert_allclose(b["train_error"]["layer2"], a["train_error"]["layer2"], rtol=1e-4, atol=1e-6)
    return b


@pytest.mark.slow
def test_two_and_three_processes_give_the_single_process_result(mvtec_root, tmp_path):
    overrides = [*DISTRIBUTED, f"dataset.root={mvtec_root}"]
    # 2 processes: torchrun on train.py (one run folder, each rank its own log), started first
    # so that it runs while the others do
    two = tmp_path / "two"
    launched = torchrun(2, ROOT / "train.py", [*overrides, f"hydra.run.dir={two}"], cwd=tmp_path)
    single = tmp_path / "single"
    train_run(composed(overrides), single)
    # 3 processes: torch.multiprocessing on train_run, the last process without a test image
    three = tmp_path / "three"
    spawn_train_runs(3, composed(overrides), three)
    assert assert_same_run(single, three)["processes"] == 3

    done = finish(launched)
    assert done.returncode == 0, done.stderr[-3000:]
    result = assert_same_run(single, two)
    assert result["processes"] == 2 and len(result["peak_memory_bytes_per_process"]) == 2
    assert (two / "train.log").is_file() and (two / "train.rank1.log").is_file()
    assert "rank 0 of 2 on cpu" in (two / "train.log").read_text()
    assert not list(tmp_path.rglob("*.tmp"))


def start_with_a_fault(mode, mvtec_root, folder):
    folder.mkdir()
    return torchrun(2, ROOT / "tests" / "support" / "distributed_fault.py",
                    [mode, "1", *DISTRIBUTED, f"dataset.root={mvtec_root}", f"hydra.run.dir={folder / 'run'}"],
                    cwd=folder, env={"FAULT_TIME_FILE": str(folder / "fault_time")})


def ended_with_a_fault(launched, folder):
    """The run's output and failure record, after checking that the survivor stopped within
    seconds of the fault and that no model file (not even a temporary one) is left."""
    done = finish(launched, timeout=240)
    ended, mark, run_dir = time.time(), folder / "fault_time", folder / "run"
    assert done.returncode != 0
    assert mark.is_file(), done.stderr[-3000:]  # the fault happened, mid-fit
    assert ended - float(mark.read_text()) < 30, f"the others took {ended - float(mark.read_text()):.0f} s to stop"
    assert not (run_dir / "model.safetensors").exists() and not list(run_dir.glob(".model.safetensors*"))
    return done, json.loads((run_dir / "failed.json").read_text())["error"]


@pytest.mark.slow
def test_a_process_that_is_killed_or_raises_stops_the_others_naming_it(mvtec_root, tmp_path):
    killed = start_with_a_fault("kill", mvtec_root, tmp_path / "kill")  # both launches run at once
    raising = start_with_a_fault("raise", mvtec_root, tmp_path / "raise")

    # SIGKILL (as the out-of-memory killer): rank 0 names the process that vanished; torchrun agrees
    done, recorded = ended_with_a_fault(killed, tmp_path / "kill")
    assert "rank 0 of 2 stopped because rank 1 (pid" in done.stderr and "exited without an error message" in done.stderr
    assert "rank 1 (pid" in recorded and "SIGKILL" in done.stderr

    # An exception: rank 0 names the rank and its error
    done, recorded = ended_with_a_fault(raising, tmp_path / "raise")
    assert "rank 0 of 2 stopped because rank 1: ValueError: planted failure in the fit of rank 1" in done.stderr
    assert "planted failure in the fit of rank 1" in recorded
