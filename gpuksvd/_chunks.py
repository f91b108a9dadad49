"""Split the P locations into chunks that fit a memory budget.

Locations are independent problems, so processing them in chunks gives exactly the same result
as processing them together; only peak memory changes.
"""
from __future__ import annotations

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
