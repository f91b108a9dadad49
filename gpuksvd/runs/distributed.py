"""One run over several processes (``torchrun``): the process group, its checks and its faults.

A run started by ``torchrun --nproc-per-node=<n> train.py ...`` (or by anything else that sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) is one fit spread
over the processes; :mod:`.sharded` says which process does what. A plain ``python train.py``
never imports ``torch.distributed``: it gets a :class:`Solo`, whose every step is the
single-process one.

The process group is gloo (start-up checks, small objects, CPU tensors, the monitored barriers
that name a missing process) plus, when every process has a GPU, an NCCL group for the tensor
exchanges. Each process uses ``cuda:<LOCAL_RANK>`` (``device=auto`` or ``cuda``) or the CPU.

Faults. A process that raises records its error in the rendezvous store and in torchrun's
error file, then exits; torchrun stops the others within about a second (SIGTERM, which
gpuksvd turns into an exception so that no temporary file is left behind), and every process
stops with a message that names the failed rank and its error. A process that dies without a
word (killed, out of memory) is named by the others from its pid (same machine) or by the
barrier it did not reach. A process that stops answering is named after ``distributed.timeout_s``.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from .config import ConfigError
from .devices import claimed_device
from .loops import FitTimes, Predictions, peak_memory_bytes, resolve_device

log = logging.getLogger("gpuksvd")

T = TypeVar("T")


class DistributedRunError(RuntimeError):
    """A process of a distributed run failed, or lost the others; the message names the rank."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a launch of several processes (from torchrun's environment)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def launch() -> Launch | None:
    """This process's :class:`Launch`, or None for a plain run (no ``WORLD_SIZE`` above 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1 or "RANK" not in os.environ:
        return None
    rank = int(os.environ["RANK"])
    return Launch(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def log_file_suffix() -> str:
    """``""`` for a plain run and rank 0 (``train.log``), ``".rank<r>"`` for the other ranks."""
    current = launch()
    return "" if current is None or current.is_root else f".rank{current.rank}"


# -- the rendezvous store: shared by the run folder's time stamp and the process group ---------

_store: Any = None
_shared_now: datetime.datetime | None = None


#: How long a process waits for a key another sets in the store (rank 0's time stamp: the other
#: processes may start well before rank 0 has imported everything).
STORE_TIMEOUT = datetime.timedelta(minutes=10)


def _rendezvous_store():
    """The store every process of this launch reaches (torchrun's, or one rank 0 hosts), made
    once per process: the process group is built on it too."""
    global _store
    if _store is None:
        import torch.distributed as dist

        current = launch()
        store, _, _ = next(dist.rendezvous("env://", current.rank, current.world_size, timeout=STORE_TIMEOUT))
        _store = store
    return _store


def _own_keys():
    """gpuksvd's keys in the store, under a prefix of their own (per torchrun restart)."""
    import torch.distributed as dist

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"gpuksvd/{attempt}/", _rendezvous_store())


def shared_now() -> datetime.datetime:
    """The time, the same in every process of a launch (rank 0's), so that every rank names the
    same run folder; for a plain run, the time now. Fixed once per process."""
    global _shared_now
    current = launch()
    if current is None:
        return datetime.datetime.now()
    if _shared_now is None:
        keys = _own_keys()
        if current.is_root:
            keys.set("run_time", datetime.datetime.now().isoformat())
        _shared_now = datetime.datetime.fromisoformat(keys.get("run_time").decode())
    return _shared_now


# -- one process ---------------------------------------------------------------------------------


class Solo:
    """A run in one process: every step is the plain one (what :class:`Group` spreads; the fit
    and the scoring are :func:`~gpuksvd.runs.loops.fit` and :func:`~gpuksvd.runs.loops.predict`)."""

    rank, world_size, is_root = 0, 1, True

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def root_first(self, work: Callable[[], T]) -> T:
        return work()

    def from_root(self, work: Callable[[], T]) -> T:
        return work()

    def on_root(self, work: Callable[[], Any]) -> None:
        work()

    def check_model(self, model) -> None:
        pass

    def read_shared(self, path: Path, read: Callable[[Path], T]) -> T:
        return read(path)

    def run_facts(self, device: torch.device) -> dict:
        return {}


# -- several processes ---------------------------------------------------------------------------


class Group:
    """The processes of one distributed run, and the collectives the run needs.

    Objects and CPU tensors go through gloo; CUDA tensors through NCCL. Every step that waits for
    the others starts with a monitored barrier, so that a process that does not arrive is named.
    """

    def __init__(self, current: Launch, device: torch.device, timeout: datetime.timedelta,
                 tensor_group: Any = None) -> None:
        self.launch, self.device, self.timeout, self.tensor_group = current, device, timeout, tensor_group
        self.rank, self.world_size, self.is_root = current.rank, current.world_size, current.is_root

    # steps of the run -----------------------------------------------------------------------------

    def root_first(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, then on the others (e.g. listing and verifying the data: the
        others then find it verified, or generated)."""
        if self.is_root:
            result = work()
            self.barrier("after rank 0 prepared the data")
            return result
        self.barrier("after rank 0 prepared the data")
        return work()

    def from_root(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0 only; every rank returns its result."""
        value = work() if self.is_root else None
        return self.broadcast_object(value, "rank 0's decision")

    def on_root(self, work: Callable[[], Any]) -> None:
        """``work()`` on rank 0 only (writing a file), then everyone goes on together."""
        if self.is_root:
            work()
        self.barrier("after rank 0 wrote its file")

    def check_model(self, model) -> None:
        from .sharded import check_locations

        check_locations(model.feature_shapes, model.extractor.set_names, self.world_size)

    def fit(self, model, dataset, **options) -> FitTimes:
        from .sharded import fit_sharded

        return fit_sharded(model, dataset, self, **options)

    def predict(self, model, dataset, **options) -> Predictions | None:
        from .sharded import predict_sharded

        return predict_sharded(model, dataset, self, **options)

    def read_shared(self, path: Path, read: Callable[[Path], T]) -> T:
        """``read(path)`` of rank 0's file ``path`` in every process: the others read a temporary
        copy of rank 0's bytes (the run folder need not be on a file system they all see)."""
        data = path.read_bytes() if self.is_root else None
        data = self.broadcast_object(data, "rank 0's file")
        if self.is_root:
            return read(path)
        handle, name = tempfile.mkstemp(suffix=path.suffix)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            return read(Path(name))
        finally:
            os.remove(name)

    def run_facts(self, device: torch.device) -> dict:
        """What metrics.json adds for a distributed run: the processes, the peak memory of each
        and the largest (``peak_memory_bytes``)."""
        peaks = self.all_gather_objects(peak_memory_bytes(device), "peak memory")
        return {"peak_memory_bytes": max(peaks), "processes": self.world_size, "peak_memory_bytes_per_process": peaks}

    # collectives -----------------------------------------------------------------------------------

    def barrier(self, where: str) -> None:
        """Wait for every process; one that does not come within the timeout is named."""
        import torch.distributed as dist

        try:
            dist.monitored_barrier(timeout=self.timeout, wait_all_ranks=True)
        except Exception as error:
            raise DistributedRunError(f"{self.launch}: waiting for the other processes ({where}) failed: "
                                      f"{' '.join(str(error).split())[:500]}") from error

    def broadcast_object(self, value: T, what: str) -> T:
        import torch.distributed as dist

        self.barrier(what)
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_objects(self, value: T, what: str) -> list[T]:
        import torch.distributed as dist

        self.barrier(what)
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def _group_of(self, tensor: Tensor):
        return self.tensor_group if tensor.is_cuda else None

    def all_to_all(self, tensor: Tensor, send_sizes: Sequence[int], receive_sizes: Sequence[int], what: str) -> Tensor:
        """Send ``tensor.flatten()``'s consecutive pieces of ``send_sizes`` elements to ranks 0, 1 …;
        returns the pieces received from ranks 0, 1 … (``receive_sizes`` elements), concatenated."""
        import torch.distributed as dist

        self.barrier(what)
        received = tensor.new_empty(sum(receive_sizes))
        dist.all_to_all_single(received, tensor.contiguous().reshape(-1), list(receive_sizes), list(send_sizes),
                               group=self._group_of(tensor))
        return received

    def all_gather_along(self, tensor: Tensor, counts: Sequence[int], dim: int, what: str) -> Tensor:
        """Every rank's ``tensor`` (``counts[r]`` long along ``dim``) concatenated along ``dim`` in
        rank order, on every rank (pieces padded to the longest: gloo needs equal sizes)."""
        import torch.distributed as dist

        self.barrier(what)
        moved = tensor.movedim(dim, 0)
        padded = moved.new_zeros((max(counts), *moved.shape[1:]))
        padded[: moved.shape[0]] = moved
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded, group=self._group_of(tensor))
        return torch.cat([piece[:count] for piece, count in zip(pieces, counts)]).movedim(0, dim)

    def gather_to_root(self, tensor: Tensor | None, what: str) -> Tensor | None:
        """Every rank's CPU ``tensor`` (None: nothing from this rank) concatenated along dim 0 in
        rank order, on rank 0 (None on the others). Point-to-point: rank 0 alone holds the whole."""
        import torch.distributed as dist

        described = None if tensor is None else (tuple(tensor.shape), tensor.dtype)
        shapes = self.all_gather_objects(described, what)
        if not self.is_root:
            if tensor is not None and tensor.numel():
                dist.send(tensor.contiguous(), dst=0)
            return None
        pieces = []
        for rank, shape in enumerate(shapes):
            if shape is None:
                continue
            if rank == 0:
                pieces.append(tensor)
                continue
            piece = torch.empty(shape[0], dtype=shape[1])
            if piece.numel():
                dist.recv(piece, src=rank)
            pieces.append(piece)
        return torch.cat(pieces) if pieces else None


# -- start-up checks ---------------------------------------------------------------------------------


def check_devices(device_types: Sequence[str], device_name: str) -> None:
    """Every process on a GPU, or every process on the CPU: a mix stops the run at start-up."""
    on_gpu = [rank for rank, kind in enumerate(device_types) if kind == "cuda"]
    on_cpu = [rank for rank, kind in enumerate(device_types) if kind != "cuda"]
    if on_gpu and on_cpu:
        raise ConfigError(
            f"device={device_name}: ranks {on_cpu} have no GPU while ranks {on_gpu} do; one fit needs every "
            "process on a GPU, or every process on the CPU: start the processes on machines with GPUs "
            "(one per process, --nproc-per-node ≤ the GPUs of each node), or pass device=cpu"
        )


def process_device(device_name: str, current: Launch) -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` for ``auto`` (when CUDA is available) and
    ``cuda``; ``cpu`` for ``cpu``; a numbered GPU is refused (torchrun gives each its own)."""
    if device_name.startswith("cuda:"):
        raise ConfigError(f"device={device_name} under torchrun: each process uses the GPU of its LOCAL_RANK; "
                          "pass device=auto or device=cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")
    device = resolve_device(device_name)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if current.local_rank >= count:
        raise ConfigError(f"{current} has LOCAL_RANK {current.local_rank} but this machine shows {count} GPU(s): "
                          f"start at most {count} processes per machine (--nproc-per-node={count}), or pass device=cpu")
    return torch.device(f"cuda:{current.local_rank}")


# -- the group's life and its faults ------------------------------------------------------------------


@contextlib.contextmanager
def process_group(device_name: str, timeout_s: float) -> Iterator[Solo | Group]:
    """The processes of this run: a :class:`Solo` on the device of ``device_name`` for a plain run
    (see :func:`~gpuksvd.runs.devices.claimed_device`), else the :class:`Group` of a torchrun
    launch, joined, checked and, at the end or on an error, left."""
    current = launch()
    if current is None:
        with claimed_device(device_name) as device:
            yield Solo(device)
        return
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    quiet_console_logs(current)
    try:
        dist.init_process_group("gloo", store=_rendezvous_store(), rank=current.rank,
                                world_size=current.world_size, timeout=timeout)
        _own_keys().set(f"pid/{current.rank}", f"{socket.gethostname()}:{os.getpid()}")
        device = process_device(device_name, current)
        kinds: list[Any] = [None] * current.world_size
        dist.all_gather_object(kinds, device.type)
        check_devices(kinds, device_name)
        tensor_group = None
        if device.type == "cuda":
            torch.cuda.set_device(device)
            tensor_group = dist.new_group(backend="nccl", timeout=timeout)
        log.info("%s on %s (%s), %d process(es) in all", current, device, socket.gethostname(), current.world_size)
        yield Group(current, device, timeout, tensor_group)
    except BaseException as error:
        if previous_handler is not None:
            # Stopping already: the launcher's SIGTERM must not cut the explanation short (it
            # sends SIGKILL after 30 s if this process does not exit by then).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            previous_handler = None
        explained = _explained(error, current)
        if explained is error:
            raise
        raise explained from error
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


class _Terminated(Exception):
    """torchrun (or srun) asked this process to stop: another process failed."""


def _stop_on_sigterm(signum, frame) -> None:
    raise _Terminated("stopped by SIGTERM from the launcher")


def quiet_console_logs(current: Launch) -> None:
    """Ranks other than 0 show warnings and errors only on the console (their full log is in
    their own ``train.rank<r>.log``), so that the terminal reads as one run."""
    if current.is_root:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def _explained(error: BaseException, current: Launch) -> BaseException:
    """The error to stop this rank with: its own (recorded for the others), or, when it only
    follows another rank's failure, one that names that rank and its error."""
    if isinstance(error, (SystemExit, KeyboardInterrupt)) and not isinstance(error, _Terminated):
        return error
    own = f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"
    chain = _causes(error)
    follows = any(isinstance(link, (_Terminated, DistributedRunError)) or _is_peer_failure(link) for link in chain)
    keys = _reachable_keys()
    if not follows:
        if keys is not None:
            with contextlib.suppress(Exception):
                keys.compare_set("failed", "", f"rank {current.rank}: {own}")
        return error
    first = None
    if keys is not None:
        with contextlib.suppress(Exception):
            first = keys.get("failed").decode() if keys.check(["failed"]) else None
    if first and not first.startswith(f"rank {current.rank}:"):
        return DistributedRunError(f"{current} stopped because {first} (here: {own})")
    gone = _vanished_ranks(keys, current)
    if gone:
        return DistributedRunError(f"{current} stopped because {gone} exited without an error message (killed: out of "
                                   f"memory, or a signal?) (here: {own})")
    if isinstance(error, DistributedRunError):
        return error
    return DistributedRunError(f"{current} lost contact with the other processes ({own}); the launcher's summary "
                               "(torchrun: 'Root Cause') names the process that failed first")


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def _is_peer_failure(error: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        mark in text for mark in ("Connection closed", "Connection reset", "Broken pipe", "gloo", "NCCL", "Timed out"))


def _reachable_keys():
    """gpuksvd's keys in the rendezvous store, or None when the store is gone (its host died)."""
    if _store is None:
        return None
    try:
        keys = _own_keys()
        keys.check(["run_time"])
        return keys
    except Exception:
        return None


def _vanished_ranks(keys, current: Launch, patience_s: float = 3.0) -> str:
    """``"rank 1 (pid 123)"`` for the ranks on this machine whose process no longer exists. A
    killed process closes its connections while it is still being torn down, so look again for a
    few seconds before concluding that no process on this machine vanished."""
    if keys is None:
        return ""
    host, pids = socket.gethostname(), {}
    for rank in range(current.world_size):
        try:
            where = keys.get(f"pid/{rank}").decode() if keys.check([f"pid/{rank}"]) else ""
        except Exception:
            continue
        name, _, pid = where.rpartition(":")
        if name == host and pid.isdigit() and rank != current.rank:
            pids[rank] = int(pid)
    deadline = time.monotonic() + patience_s
    while pids:
        gone = [f"rank {rank} (pid {pid})" for rank, pid in pids.items() if not _alive(pid)]
        if gone or time.monotonic() > deadline:
            return ", ".join(gone)
        time.sleep(0.1)
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by torchrun) is gone too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def record_for_launcher(error: BaseException) -> None:
    """Write ``error`` where torchrun's summary reads it (``TORCHELASTIC_ERROR_FILE``), so that
    its 'Root Cause' shows the message, not only an exit code. Call it while handling ``error``."""
    if launch() is None or not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    with contextlib.suppress(Exception):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(error)


def rank_prefix() -> str:
    """``"rank 1 of 2: "`` in a distributed run, else ``""`` (for one-line error messages)."""
    current = launch()
    return "" if current is None else f"{current}: "


__all__ = ["DistributedRunError", "Group", "Launch", "Solo", "check_devices", "launch", "log_file_suffix",
           "process_device", "process_group", "rank_prefix", "record_for_launcher", "shared_now"]
