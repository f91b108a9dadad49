"""Writing files atomically: a reader sees the old file or the new one, never half of one.

Every file gpuksvd writes whose presence means something — a model file, a run's
``metrics.json`` that marks the run as finished — goes through :func:`atomic_write`: the content
is written to a temporary sibling and renamed over the target. The temporary file is created
with the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask), so a
team sharing a server can read each other's results.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """gpuksvd's cache folder: ``$GPUKSVD_CACHE``, else ``~/.cache/gpuksvd`` (generated data,
    cached training features, verified image listings)."""
    return Path(os.environ.get("GPUKSVD_CACHE") or Path.home() / ".cache" / "gpuksvd")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(temporary_path)`` fills a sibling, which is then
    renamed to ``path``. On any error (or Ctrl-C) the sibling is removed and ``path`` is left
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        # mkstemp makes 0600 files (and some writers replace the file): give the final file the
        # mode a plain open() would, after writing.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON atomically (NaN refused: it is not JSON)."""

    def dump(tmp: str) -> None:
        with open(tmp, "w") as stream:
            json.dump(data, stream, indent=2, allow_nan=False, default=str)

    return atomic_write(path, dump)


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _umask() -> int:
    """The process's umask: from /proc on Linux (reading it there changes nothing), else by
    setting it and straight back (not thread-safe, hence the last resort)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
