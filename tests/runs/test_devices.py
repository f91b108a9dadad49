"""The GPU claim of parallel sweep jobs: distinct devices while held, freed at the end, waiting
when every device is held (lock files, so it holds across processes)."""
import subprocess
import sys
import threading
import time

import torch

from gpuksvd.runs.devices import claim, claimed_device


def test_claims_held_at_once_get_distinct_devices_and_are_freed_at_the_end(tmp_path):
    names = ["GPU-a", "GPU-b", "GPU-c"]
    with claim(names, tmp_path) as first, claim(names, tmp_path) as second:
        assert (first, second) == (0, 1)
        with claim(names, tmp_path) as third:
            assert third == 2
    with claim(names, tmp_path) as again:
        assert again == 0  # released


def test_a_claim_of_another_process_is_respected_until_it_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(tmp_path / 'GPU-a.lock')!r}, os.O_RDONLY | os.O_CREAT, 0o666)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with claim(["GPU-a", "GPU-b"], tmp_path) as index:
            assert index == 1
    finally:
        holder.kill()
        holder.wait()
    with claim(["GPU-a", "GPU-b"], tmp_path) as index:
        assert index == 0  # the operating system released the dead holder's lock


def test_when_every_device_is_held_a_claim_waits_for_one(tmp_path):
    got = []
    with claim(["GPU-a"], tmp_path):
        waiter = threading.Thread(target=lambda: got.append(_claim_once(tmp_path)))
        waiter.start()
        time.sleep(0.3)
        assert got == []  # still waiting
    waiter.join(timeout=10)
    assert got == [0]


def _claim_once(folder):
    with claim(["GPU-a"], folder, poll_seconds=0.05) as index:
        return index


def test_a_plain_device_is_not_claimed():
    with claimed_device("cpu") as device:
        assert device == torch.device("cpu")
    if not torch.cuda.is_available():
        with claimed_device("auto") as device:
            assert device.type == "cpu"
