"""Splitting the work into tiles that fit a budget, and running them concurrently on the CPU."""
import threading
import time

import pytest
import torch

from gpuksvd.sparse import tiling
from gpuksvd.sparse.tiling import cpu_cache_bytes, location_tiles, run_tiles, signal_tiles

CPU = torch.device("cpu")


@pytest.mark.parametrize("n_locations, n_signals, tile", [(5, 10, 10), (5, 10, 25), (3, 10, 4), (2, 7, 1), (4, 9, 100)])
def test_signal_tiles_cover_every_pursuit_once(n_locations, n_signals, tile):
    covered = torch.zeros(n_locations, n_signals, dtype=torch.int64)
    tiles = signal_tiles(n_locations, n_signals, tile)
    for locations, rows in tiles:
        covered[locations, rows] += 1
        n_pairs = (locations.stop - locations.start) * (rows.stop - rows.start)
        assert n_pairs <= max(tile, n_signals)  # whole locations up to `tile` pairs, or one location split
        assert tile >= n_signals or rows.stop - rows.start <= tile
    assert bool((covered == 1).all())


def test_location_tiles_fit_the_budget_and_allow_one_oversized_location():
    assert location_tiles(10, 100, 350, CPU) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert location_tiles(3, 100, 50, CPU) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    with pytest.raises(ValueError, match="max_memory"):
        location_tiles(3, 100, 0, CPU)


def test_run_tiles_keeps_order_and_runs_concurrently_single_threaded():
    threads_before = torch.get_num_threads()
    seen = []

    def work(tile):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return tile.start

    tiles = [slice(i, i + 1) for i in range(8)]
    assert run_tiles(work, tiles, CPU) == list(range(8))
    assert torch.get_num_threads() == threads_before
    if threads_before > 1:
        assert all(name.startswith("gpuksvd") and n_threads == 1 for name, n_threads in seen)


def test_run_tiles_reraises_and_restores_threads():
    threads_before = torch.get_num_threads()

    def work(tile):
        if tile.start == 3:
            raise RuntimeError("tile 3 failed")
        return tile.start

    with pytest.raises(RuntimeError, match="tile 3 failed"):
        run_tiles(work, [slice(i, i + 1) for i in range(6)], CPU)
    assert torch.get_num_threads() == threads_before
    started = []

    def slow(tile):
        started.append(tile.start)
        time.sleep(0.01)
        return work(tile)

    with pytest.raises(RuntimeError, match="tile 3 failed"):
        run_tiles(slow, [slice(i, i + 1) for i in range(200)], CPU)
    if threads_before > 1:
        assert len(started) < 200  # the tiles not started when tile 3 failed were dropped


def test_cpu_cache_size_is_plausible():
    assert 1024**2 // 2 <= cpu_cache_bytes() <= 4 * 1024**3


def test_default_cpu_budget_shrinks_with_many_cores_and_little_memory(monkeypatch):
    monkeypatch.setattr(tiling, "_available_memory", lambda: 64 * 1024**3)
    assert tiling.default_budget(CPU) == tiling.CPU_DEFAULT_BUDGET
    monkeypatch.setattr(tiling, "_available_memory", lambda: 4 * 1024**3)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert tiling.default_budget(CPU) == tiling.CPU_MIN_DEFAULT_BUDGET  # 4 GiB / (4 · 64) = 16 MiB, floored
    monkeypatch.setattr(tiling, "_available_memory", lambda: None)
    assert tiling.default_budget(CPU) == tiling.CPU_DEFAULT_BUDGET
