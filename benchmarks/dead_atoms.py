"""How often an atom goes unused (no training signal's code uses it) on the default run's features.

    python train.py                          # writes the features to the cache
    python benchmarks/dead_atoms.py          # square, 2x overcomplete, and random-start dictionaries

An unused atom is what ``ksvd.dead_atoms`` decides about (``replace``: gpuksvd, ``keep``: the
PSDL authors' code). For each dictionary size and start it codes the training signals of all
196 locations with Batch-OMP (1/4 of the atoms non-zero) and counts the atoms that no signal
uses, at the start and after 5 K-SVD iterations. Appends the table to ``benchmarks/RESULTS.md``
(``--no-write`` to print only).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import commit, default_run_signals, machine, publish  # noqa: E402
from gpuksvd.sparse import batch_omp, initial_dictionary, ksvd  # noqa: E402


def unused_atoms(dictionary: torch.Tensor, signals: torch.Tensor, n_nonzero: int) -> int:
    codes = batch_omp(dictionary, signals, n_nonzero)
    return int(((codes != 0).sum(1) == 0).sum())


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-iter", type=int, default=5, help="K-SVD iterations before the second count")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    signals = default_run_signals()
    if signals is None:
        raise SystemExit("no cached features of the default run: run `python train.py` first")
    n_locations, n_signals, n_features = signals.shape
    lines = [f"### dead_atoms.py — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} — commit {commit()}", "",
             f"Machine: {machine()}. The default run's training signals (Lite0 block10 on the generated data: "
             f"{n_locations} locations, N = {n_signals}, C = {n_features}); atoms no signal uses, summed over "
             "the locations.", "",
             f"| atoms K | non-zeros | start | unused at the start | unused after {args.n_iter} iterations |",
             "|---:|---:|---|---:|---:|"]
    for n_atoms, init in [(n_features, "dct"), (2 * n_features, "dct"), (n_features, "random")]:
        n_nonzero = n_atoms // 4 if n_atoms == n_features else n_features // 4
        start = initial_dictionary(init, n_locations, n_atoms, n_features, generator=torch.Generator().manual_seed(0))
        learned = ksvd(signals, n_atoms, n_nonzero, args.n_iter, init=start).dictionary
        lines.append(f"| {n_atoms} | {n_nonzero} | {init} | {unused_atoms(start, signals, n_nonzero)} of "
                     f"{n_atoms * n_locations} | {unused_atoms(learned, signals, n_nonzero)} |")
    text = "\n".join(lines) + "\n"
    publish(text, not args.no_write)
    return text


if __name__ == "__main__":
    main()
