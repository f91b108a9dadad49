"""Atomic writes: all or nothing, and the umask's file mode."""
import json
import os

import pytest

from gpuksvd.files import atomic_write, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text("old", tmp_path / "notes.txt")

    def failing(tmp):
        with open(tmp, "w") as stream:
            stream.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, failing)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["notes.txt"]


def test_json_is_indented_and_refuses_nan(tmp_path):
    path = write_json({"a": [1, 2]}, tmp_path / "sub" / "data.json")
    assert json.loads(path.read_text()) == {"a": [1, 2]} and "\n  " in path.read_text()
    with pytest.raises(ValueError):
        write_json({"a": float("nan")}, tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_text("x", tmp_path / "file.txt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
