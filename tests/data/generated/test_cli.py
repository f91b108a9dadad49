"""``python -m gpuksvd.data.generated``."""
from pathlib import Path

from gpuksvd.data.generated import cli


def test_command_line_prints_the_root(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli, "ensure_generated", lambda root, seed: seen.append((root, seed)) or Path(root))
    cli.main(["--root", str(tmp_path / "r"), "--seed", "7"])
    assert seen == [(str(tmp_path / "r"), 7)]
    assert capsys.readouterr().out.strip() == str(tmp_path / "r")
