"""Split the P locations into chunks that fit a memory budget.

Locations are independent problems, so processing them in chunks gives exactly the same result
as processing them together; only peak memory changes.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

#: Default working-memory budget on the CPU, in bytes, when the caller sets none. Chunks of
#: this size amortise the per-operation overhead over several locations while staying far
#: below the memory of small machines (measured with benchmarks/ksvd_speed.py: 32 MiB to
#: 512 MiB are within 20 %, with 128-512 MiB the fastest).
CPU_DEFAULT_BUDGET = 256 * 1024**2


#: Upper bound of the default CUDA budget: the working set is estimated, not measured, and
#: the WRN-50 scale must stay within 60 GB of peak memory on one GPU.
CUDA_MAX_DEFAULT_BUDGET = 40 * 1024**3


def default_budget(device: torch.device) -> int:
    """Half the free memory of a CUDA device (at most 40 GiB), :data:`CPU_DEFAULT_BUDGET` on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(free // 2, CUDA_MAX_DEFAULT_BUDGET)
    return CPU_DEFAULT_BUDGET


#: Cache budget used when the last-level cache size cannot be read (a common L3 size).
FALLBACK_CACHE_BYTES = 32 * 1024**2


@functools.lru_cache(maxsize=1)
def cpu_cache_budget() -> int:
    """Three quarters of the CPU's last-level cache, in bytes: the working set an operation
    sequence can keep there while other data passes through.

    Read from Linux's sysfs (``/sys/devices/system/cpu/cpu0/cache``); 32 MiB elsewhere.
    """
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
            unit = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * unit)
        except (OSError, ValueError):
            continue
    return 3 * (max(sizes) if sizes else FALLBACK_CACHE_BYTES) // 4


def location_chunks(n_locations: int, bytes_per_location: int, max_memory: int | None,
                    device: torch.device) -> list[slice]:
    """Slices of ``range(n_locations)`` whose working memory stays within ``max_memory``.

    A single location is always allowed, even when it alone exceeds the budget.
    """
    budget = default_budget(device) if max_memory is None else int(max_memory)
    if budget <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory}")
    size = max(1, min(n_locations, budget // max(1, bytes_per_location)))
    return [slice(start, min(start + size, n_locations)) for start in range(0, n_locations, size)]
