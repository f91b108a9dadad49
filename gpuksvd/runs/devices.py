"""Which GPU a run takes when several runs share a machine.

Sweep launchers run several jobs at once on one machine (the joblib launcher; submitit's local
executor), and they do not give each job its own GPU: every job sees every GPU. Numbering the
jobs (``job.num % n_gpus``) does not spread them either, because jobs end at different times
and the launcher hands the next one to whichever worker is free. So a run with ``device=auto``
on a machine with several GPUs claims one: it takes an exclusive, non-blocking ``flock`` on a
lock file named after the GPU's UUID (the same whatever ``CUDA_VISIBLE_DEVICES`` numbering a
job sees), keeps it while it runs and lets go at the end; the operating system releases it
if the process dies. When every GPU is claimed, the run waits for one. Lock files live in the
machine's temporary folder (``$TMPDIR``, else ``/tmp``): a claim never spans machines.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .loops import resolve_device

log = logging.getLogger("gpuksvd")

#: Seconds between two looks for a free GPU when every GPU is claimed.
POLL_SECONDS = 5.0


def lock_folder() -> Path:
    """Where the GPU claims of this machine live."""
    return Path(tempfile.gettempdir()) / "gpuksvd-gpu-claims"


@contextlib.contextmanager
def claimed_device(name: str) -> Iterator[torch.device]:
    """The device of a single-process run, held for the duration of the ``with`` block.

    ``name`` resolves as :func:`~gpuksvd.runs.loops.resolve_device` does; ``auto`` on a machine
    with several visible GPUs claims the first GPU that no other run holds (see the module
    docstring). ``cuda:<n>`` is taken as given, claimed or not.
    """
    device = resolve_device(name)
    if name != "auto" or device.type != "cuda" or torch.cuda.device_count() < 2:
        yield device
        return
    names = [str(torch.cuda.get_device_properties(index).uuid) for index in range(torch.cuda.device_count())]
    with claim(names) as index:
        torch.cuda.set_device(index)
        log.info("claimed cuda:%d (no other run on this machine holds it; device=cuda:<n> picks one)", index)
        yield torch.device(f"cuda:{index}")


@contextlib.contextmanager
def claim(names: Sequence[str], folder: Path | None = None, poll_seconds: float = POLL_SECONDS) -> Iterator[int]:
    """Hold the first of ``names`` (one per device) that no other holder has; yields its index.

    Waits, ``poll_seconds`` at a time, while all are held. The claim is an exclusive ``flock``
    on ``<folder>/<name>.lock``, released when the block ends or the process dies.
    """
    import fcntl

    folder = lock_folder() if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index, name in enumerate(names):
            path = folder / f"{name}.lock"
            # Read-only is enough for flock, and works on a lock file another user created.
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            try:
                yield index
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
                os.close(descriptor)
            return
        if not waited:
            log.warning("all %d GPUs are held by other runs on this machine (claims in %s): waiting for one; "
                        "device=cuda:<n> runs on a given GPU, shared", len(names), folder)
            waited = True
        time.sleep(poll_seconds)


__all__ = ["POLL_SECONDS", "claim", "claimed_device", "lock_folder"]
