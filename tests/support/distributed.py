"""Runs over several processes in tests: torchrun on the entry script, or torch.multiprocessing
on ``train_run``, with the gloo backend on the CPU."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.configs import ROOT

#: One thread per process (tests run on 2 cores; torchrun would set it too, with a banner).
QUIET = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(n_processes: int, script: Path, arguments, *, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``torchrun --nproc-per-node=<n> <script> <arguments>`` (through ``python -m``), its
    output captured; ``finish`` waits for it."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n_processes}",
               "--monitor-interval=0.2", str(script), *arguments]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, **QUIET, "PYTHONPATH": path, **(env or {})}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=environment)


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for a process started by :func:`torchrun`; its exit code and output."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"torchrun did not end within {timeout} s:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn_train_runs(n_processes: int, config: dict, run_dir: Path) -> None:
    """``train_run(config, run_dir)`` in ``n_processes`` processes started by
    torch.multiprocessing, as torchrun would start them (the environment it sets)."""
    import torch.multiprocessing as mp

    mp.start_processes(_train_worker, args=(n_processes, free_port(), config, str(run_dir)), nprocs=n_processes,
                       start_method="spawn", join=True)


def _train_worker(rank: int, n_processes: int, port: int, config: dict, run_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n_processes),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    import torch

    torch.set_num_threads(1)
    from gpuksvd.runs import train_run

    train_run(config, run_dir)
