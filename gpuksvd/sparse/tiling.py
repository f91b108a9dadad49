"""Split the work into tiles that fit a memory budget, and run them.

A *tile* is a slice of the work: some locations with all their signals, or some signals of one
location. Locations are independent problems, and so are the signals of one location in sparse
coding: processing them tile by tile gives the same result as processing them together (up to
rounding order); only peak memory and speed change.

On the CPU the tiles run concurrently, one per core, each with single-threaded operations: the
torch kernels are sequences of many small operations, and splitting each one across cores costs
a fork/join per operation that one tile per core does not pay (measured in
``benchmarks/RESULTS.md``, "Design measurements"). The native kernels (:mod:`.native`) release
the GIL, so the same threads run them; their tiles are sized for balance between the cores.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch

_Result = TypeVar("_Result")
_Tile = TypeVar("_Tile")

#: Default working-memory budget on the CPU, in bytes, per tile in flight (one per core), when
#: the caller sets none: tiles of this size amortise the per-operation overhead over several
#: locations while staying far below the memory of small machines.
CPU_DEFAULT_BUDGET = 256 * 1024**2

#: Upper bound of the default CUDA budget: the working set is estimated, not measured, and
#: the WRN-50 scale must stay within 60 GB of peak memory on one GPU.
CUDA_MAX_DEFAULT_BUDGET = 40 * 1024**3

#: Smallest default CPU budget per tile, however little memory is available.
CPU_MIN_DEFAULT_BUDGET = 32 * 1024**2

#: Cache budget used when the last-level cache size cannot be read (a common L3 size).
FALLBACK_CACHE_BYTES = 32 * 1024**2


def default_budget(device: torch.device) -> int:
    """The working-memory budget of one tile when the caller sets none.

    CUDA: half the device's free memory, at most 40 GiB. CPU: :data:`CPU_DEFAULT_BUDGET`, less
    where the tiles in flight (one per torch thread) would take more than a quarter of the
    available memory (many cores, little memory), but not below 32 MiB.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(free // 2, CUDA_MAX_DEFAULT_BUDGET)
    available = _available_memory()
    if available is None:
        return CPU_DEFAULT_BUDGET
    share = available // (4 * max(1, torch.get_num_threads()))
    return max(CPU_MIN_DEFAULT_BUDGET, min(CPU_DEFAULT_BUDGET, share))


def _available_memory() -> int | None:
    """MemAvailable from Linux's /proc/meminfo, in bytes; None elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_cache_bytes() -> int:
    """Size of the CPU's last-level cache in bytes, read from Linux's sysfs
    (``/sys/devices/system/cpu/cpu0/cache``); 32 MiB where it cannot be read."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
            unit = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * unit)
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else FALLBACK_CACHE_BYTES


def resolve_budget(max_memory: int | None, device: torch.device) -> int:
    """``max_memory`` checked, or :func:`default_budget` when it is None."""
    budget = default_budget(device) if max_memory is None else int(max_memory)
    if budget <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
    return budget


def location_tiles(n_locations: int, bytes_per_location: int, max_memory: int | None,
                   device: torch.device) -> list[slice]:
    """Tiles of whole locations, slices of ``range(n_locations)`` whose working memory stays
    within ``max_memory``. A single location is always allowed, even when it alone exceeds it."""
    budget = resolve_budget(max_memory, device)
    size = max(1, min(n_locations, budget // max(1, bytes_per_location)))
    return [slice(start, min(start + size, n_locations)) for start in range(0, n_locations, size)]


def signal_tiles(n_locations: int, n_signals: int, tile_signals: int) -> list[tuple[slice, slice]]:
    """(locations, signals) tiles covering all P × N pairs with about ``tile_signals`` pairs each.

    Whole locations are grouped when ``tile_signals ≥ N``; otherwise each location's signals are
    split into equal parts of at most ``tile_signals``.
    """
    if n_locations == 0 or n_signals == 0:
        return []
    tile_signals = max(1, int(tile_signals))
    if tile_signals >= n_signals:
        per_tile = min(n_locations, tile_signals // n_signals)
        return [(slice(start, min(start + per_tile, n_locations)), slice(0, n_signals))
                for start in range(0, n_locations, per_tile)]
    n_parts = -(-n_signals // tile_signals)
    size = -(-n_signals // n_parts)
    return [(slice(p, p + 1), slice(start, min(start + size, n_signals)))
            for p in range(n_locations) for start in range(0, n_signals, size)]


def run_tiles(work: Callable[[_Tile], _Result], tiles: Sequence[_Tile], device: torch.device, *,
              concurrent: bool = True) -> list[_Result]:
    """``[work(tile) for tile in tiles]``; on the CPU, concurrently on as many threads as torch
    uses (``torch.get_num_threads()``), each running its operations single-threaded, unless
    ``concurrent`` is False (work that is not thread-safe: Triton's interpreter).

    ``work`` must only write to its own tile's locations. Torch's thread count is restored
    afterwards. It is a process-wide setting, so another thread that starts using torch while
    the tiles run (a user's own thread, not the caller's) starts single-threaded too.
    """
    n_workers = min(len(tiles), torch.get_num_threads()) if device.type == "cpu" and concurrent else 1
    if n_workers <= 1:
        return [work(tile) for tile in tiles]
    n_threads = torch.get_num_threads()

    def single_threaded(tile: _Tile) -> _Result:
        torch.set_num_threads(1)
        return work(tile)

    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="gpuksvd")
    try:
        futures = [pool.submit(single_threaded, tile) for tile in tiles]
        return [future.result() for future in futures]
    finally:
        # On an error or Ctrl-C, drop the tiles not started yet instead of running them all.
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(n_threads)
