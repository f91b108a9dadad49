"""Small generated trees for the tests of the generated dataset."""
from __future__ import annotations

from pathlib import Path

SMALL = dict(n_train=3, n_test_good=2, n_test_defect=5, image_size=128, categories=("gravel", "pill"),
             progress=False)


def pngs(root: Path) -> dict[str, bytes]:
    """Every PNG under ``root``: relative path → bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}
