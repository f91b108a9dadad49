"""The cached generated tree: reuse, regeneration, crash safety, concurrency, foreign folders."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gpuksvd.data.generated import FORMAT_VERSION, MARKER_NAME, cache, ensure_generated, generate_dataset, writer
from tests.support.generated import SMALL, pngs


@pytest.fixture
def count_generations(monkeypatch):
    calls = []
    original = writer.generate_dataset

    def counting(root, *args, **kwargs):
        calls.append(Path(root))
        return original(root, *args, **kwargs)

    monkeypatch.setattr(writer, "generate_dataset", counting)
    return calls


def _small(**overrides):
    return {**SMALL, **overrides}


def test_default_folder_follows_the_environment(tmp_path, monkeypatch, count_generations):
    monkeypatch.setenv("GPUKSVD_CACHE", str(tmp_path / "cache"))
    root = ensure_generated(seed=3, **SMALL)
    assert root == tmp_path / "cache" / "generated" / f"v{FORMAT_VERSION}-seed3"
    assert (root / MARKER_NAME).exists() and len(count_generations) == 1
    assert count_generations[0].parent == root.parent and count_generations[0] != root  # a temp sibling
    assert [p.name for p in root.parent.iterdir()] == [f"v{FORMAT_VERSION}-seed3"]  # the temp folder is gone
    monkeypatch.delenv("GPUKSVD_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_cache_dir(0) == tmp_path / "home" / ".cache" / "gpuksvd" / "generated" / f"v{FORMAT_VERSION}-seed0"


def test_second_call_reuses_the_tree(tmp_path, count_generations):
    root = ensure_generated(tmp_path / "gen", seed=0, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert ensure_generated(tmp_path / "gen", seed=0, **SMALL) == root
    assert len(count_generations) == 1
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_missing_marker_or_other_parameters_regenerate(tmp_path, count_generations):
    root = ensure_generated(tmp_path / "gen", **SMALL)
    expected = pngs(root)
    (root / MARKER_NAME).unlink()
    (root / "pill" / "train" / "good" / "001.png").unlink()  # what a crash could have left
    assert ensure_generated(tmp_path / "gen", **SMALL) == root
    assert len(count_generations) == 2 and pngs(root) == expected
    ensure_generated(tmp_path / "gen", **_small(n_train=4))
    assert len(count_generations) == 3
    assert len(list((root / "pill" / "train" / "good").iterdir())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]  # no temp or old copy left


def test_half_written_temp_folder_is_ignored_and_old_ones_removed(tmp_path, count_generations):
    stale = tmp_path / ".gen.tmp-crashed"
    (stale / "pill" / "train" / "good").mkdir(parents=True)
    (stale / "pill" / "train" / "good" / "000.png").write_bytes(b"half")
    fresh = tmp_path / ".gen.tmp-running"  # maybe another process, still working: keep it
    fresh.mkdir()
    two_hours_ago = os.stat(stale).st_mtime - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    root = ensure_generated(tmp_path / "gen", **SMALL)
    assert (root / MARKER_NAME).exists() and len(count_generations) == 1
    assert not stale.exists() and fresh.exists()


def test_interrupted_generation_leaves_no_tree(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = writer.render_sample
    monkeypatch.setattr(writer, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(tmp_path / "gen", **SMALL)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(writer, "render_sample", original)
    root = ensure_generated(tmp_path / "gen", **SMALL)
    assert len(pngs(root)) == 2 * (3 + 2 + 5 + 5)


def test_concurrent_callers_get_one_complete_tree(tmp_path):
    results, errors = [], []

    def call():
        try:
            results.append(ensure_generated(tmp_path / "gen", **SMALL))
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [tmp_path / "gen"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
    assert pngs(tmp_path / "gen") == pngs(generate_dataset(tmp_path / "reference", **SMALL))


def test_a_foreign_folder_is_refused_not_deleted(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.png").write_bytes(b"precious")
    with pytest.raises(ValueError, match="exists and is not a generated dataset"):
        ensure_generated(tmp_path / "data", **SMALL)
    assert (tmp_path / "data" / "photo.png").read_bytes() == b"precious"
