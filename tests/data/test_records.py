"""Image records and their fingerprints: stable for the same files in the same state, changed by a
file's size, modification time or path, and by a record's split, label, category or mask."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gpuksvd.data.records import ANOMALOUS, NORMAL, ImageRecord, files_fingerprint, records_fingerprint

MTIME_NS = 1_700_000_000_000_000_000


def write(path: Path, content: bytes = b"pixels", mtime_ns: int = MTIME_NS) -> Path:
    """A file with a fixed modification time, so that only what a test changes differs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def files(tmp_path):
    return [write(tmp_path / "a.png"), write(tmp_path / "b.png", b"other pixels")]


def test_labels_and_mask_availability():
    assert (NORMAL, ANOMALOUS) == (0, 1)
    normal = ImageRecord(Path("good.png"), "bottle", "test", NORMAL, "good")
    assert normal.mask_path is None and normal.has_mask  # a normal image's mask is all zeros
    masked = ImageRecord(Path("bad.png"), "bottle", "test", ANOMALOUS, "crack", Path("bad_mask.png"))
    assert masked.has_mask
    assert not dataclasses.replace(masked, mask_path=None).has_mask
    with pytest.raises(dataclasses.FrozenInstanceError):
        masked.label = NORMAL


def test_files_fingerprint_is_stable_for_unchanged_files(files):
    first = files_fingerprint(files)
    assert len(first) == 64 and int(first, 16) >= 0  # a sha256 hex digest
    assert files_fingerprint(files) == first
    assert files_fingerprint(str(path) for path in files) == first  # str or Path, list or generator
    os.utime(files[0], ns=(MTIME_NS + 5_000_000_000, MTIME_NS))  # reading a file changes its atime only
    assert files_fingerprint(files) == first


def test_files_fingerprint_names_each_file_in_order(files):
    first = files_fingerprint(files)
    assert files_fingerprint(files[::-1]) != first
    assert files_fingerprint(files[:1]) != first
    assert files_fingerprint([]) != first


def test_files_fingerprint_follows_size_and_modification_time(files):
    first = files_fingerprint(files)
    write(files[1], b"other pixelz")  # same size, same modification time: not seen (no content read)
    assert files_fingerprint(files) == first
    write(files[1], b"other pixels, longer")
    resized = files_fingerprint(files)
    assert resized != first
    write(files[1], b"other pixels, longer", mtime_ns=MTIME_NS + 1)
    assert files_fingerprint(files) not in (first, resized)


def test_files_fingerprint_follows_the_path(files, tmp_path):
    first = files_fingerprint(files)
    moved = tmp_path / "moved" / "b.png"
    moved.parent.mkdir()
    files[1].rename(moved)  # a rename keeps the size and the modification time
    assert files_fingerprint([files[0], moved]) != first


def test_files_fingerprint_is_of_absolute_paths(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert files_fingerprint([Path("a.png"), "b.png"]) == files_fingerprint(files)


def test_files_fingerprint_of_a_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        files_fingerprint([tmp_path / "missing.png"])


def records(tmp_path):
    good = write(tmp_path / "test" / "good" / "000.png")
    bad = write(tmp_path / "test" / "crack" / "000.png")
    mask = write(tmp_path / "ground_truth" / "crack" / "000_mask.png")
    return [ImageRecord(good, "bottle", "test", NORMAL, "good"),
            ImageRecord(bad, "bottle", "test", ANOMALOUS, "crack", mask)]


def test_records_fingerprint_is_stable_and_follows_the_fields(tmp_path):
    listing = records(tmp_path)
    first = records_fingerprint(listing)
    assert records_fingerprint(records(tmp_path)) == first
    assert records_fingerprint(iter(listing)) == first
    changes = [dict(split="train"), dict(label=NORMAL), dict(category="cable"), dict(defect_type="scratch"),
               dict(mask_path=None), dict(path=listing[0].path)]
    seen = {first}
    for change in changes:
        fingerprint = records_fingerprint([listing[0], dataclasses.replace(listing[1], **change)])
        assert fingerprint not in seen, f"{change} did not change the fingerprint"
        seen.add(fingerprint)
    assert records_fingerprint(listing[::-1]) != first


def test_records_fingerprint_follows_the_mask_files(tmp_path):
    listing = records(tmp_path)
    first = records_fingerprint(listing)
    write(listing[1].mask_path, b"a fixed mask")
    assert records_fingerprint(listing) != first
    listing[1].mask_path.unlink()
    with pytest.raises(FileNotFoundError):
        records_fingerprint(listing)


def test_records_fingerprint_is_more_than_the_files(tmp_path):
    listing = records(tmp_path)
    paths = [path for record in listing for path in (record.path, record.mask_path) if path]
    assert records_fingerprint(listing) != files_fingerprint(paths)
