"""``python -m gpuksvd.data.generated [--root R] [--seed S]``: generate the default dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from .cache import ensure_generated
from .writer import FORMAT_VERSION


def main(argv=None) -> Path:
    """Generate (or find in the cache) the default dataset and print its root."""
    parser = argparse.ArgumentParser(prog="python -m gpuksvd.data.generated",
                                     description="Generate the default dataset (MVTec AD layout) and print its root.")
    parser.add_argument("--root", default=None,
                        help=f"output folder (default: $GPUKSVD_CACHE/generated/"
                             f"v{FORMAT_VERSION}-seed<S>, else under ~/.cache/gpuksvd)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (default 0)")
    args = parser.parse_args(argv)
    root = ensure_generated(args.root, args.seed)
    print(root)
    return root
