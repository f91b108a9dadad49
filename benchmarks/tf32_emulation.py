"""What TF32 or bf16 inputs to the projections would do to the Batch-OMP codes, emulated on the CPU.

    python benchmarks/tf32_emulation.py                      # random EN-B6-shaped data + the default run's features
    python benchmarks/tf32_emulation.py --locations 8 --no-write

A tensor-core matmul in TF32 rounds both inputs to a 10-bit mantissa (bf16: 7 bits) and
accumulates in float32. This script rounds the signals and the dictionary to those mantissas
(round to nearest even on the float32 bit pattern; the hardware conversion rounds ties away from
zero or truncates, which differs only on ties or by at most one more unit in the last place), computes the projections ``α⁰ = D x`` and the Gram
matrix from the rounded inputs in float32, runs the same Batch-OMP, and compares with the float64
reference (unrounded inputs, float64 arithmetic): the share of signals whose support is the same,
and the relative error of the reconstructions ``γ D``. Plain float32 is measured the same way, as
the baseline a TF32 option would have to match. No GPU is involved: this measures the arithmetic
of the rounding, not a device.

Data: random unit-norm dictionaries with Gaussian signals at the EN-B6 block 30 scale
(C = K = 200, T = 50, N = 3629, on ``--locations`` of the 196 locations), and, when the default
run's training features are in the feature cache (``python train.py`` writes them), the
EfficientNet-Lite0 block10 features of the generated data with the dictionaries K-SVD learns
from them (5 iterations). Appends the table to ``benchmarks/RESULTS.md`` with date, machine
and commit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import commit, default_run_signals, machine, publish  # noqa: E402
from gpuksvd.sparse import batch_omp, ksvd  # noqa: E402

MANTISSA_BITS = {"float32": 23, "tf32": 10, "bf16": 7}


def round_mantissa(values: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 ``values`` rounded to ``bits`` mantissa bits (round to nearest, ties to even)."""
    if bits >= 23:
        return values.float()
    as_int = values.float().contiguous().view(torch.int32)
    drop = 23 - bits
    half = 1 << (drop - 1)
    keep_lsb = (as_int >> drop) & 1
    rounded = (as_int + half - 1 + keep_lsb) & ~((1 << drop) - 1)
    return rounded.view(torch.float32)


def compare(dictionary: torch.Tensor, signals: torch.Tensor, n_nonzero: int) -> dict[str, tuple[float, float]]:
    """Per precision: (share of signals with the float64 support, relative reconstruction error)."""
    reference = batch_omp(dictionary.double(), signals.double(), n_nonzero)
    target = reference @ dictionary.double()
    out = {}
    for name, bits in MANTISSA_BITS.items():
        atoms, x = round_mantissa(dictionary, bits), round_mantissa(signals, bits)
        gram = atoms @ atoms.mT  # float32 accumulation of the rounded inputs, as a tensor core
        codes = batch_omp(atoms, x, n_nonzero, gram=gram)
        same = float(((codes != 0) == (reference != 0)).all(-1).double().mean())
        error = float(((codes.double() @ dictionary.double()) - target).norm() / target.norm())
        out[name] = (same, error)
    return out


def random_problem(n_locations: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    gen = torch.Generator().manual_seed(0)
    dictionary = torch.randn(n_locations, 200, 200, generator=gen)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    return dictionary, torch.randn(n_locations, 3629, 200, generator=gen), 50


def feature_problem(n_locations: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    signals = default_run_signals()
    if signals is None:
        return None
    signals = signals[:n_locations].contiguous()
    return ksvd(signals, 112, 28, 5).dictionary, signals, 28


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locations", type=int, default=4, help="locations of each problem measured")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    problems = {"random, EN-B6 shape (C=K=200, T=50, N=3629)": random_problem(args.locations)}
    features = feature_problem(args.locations)
    if features is None:
        print("no cached Lite0 block10 features (run `python train.py` first): the feature row is skipped")
    else:
        problems["generated data, Lite0 block10 (C=K=112, T=28, N=300), K-SVD dictionaries"] = features
    lines = [f"\n### tf32_emulation.py — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} — commit {commit()}\n",
             f"Machine: {machine()} (CPU emulation: inputs rounded to the format's mantissa, float32 "
             f"accumulation; no GPU). {args.locations} locations per problem. Cells: share of signals with "
             "the float64 support / relative reconstruction error against float64.\n",
             "| problem | " + " | ".join(MANTISSA_BITS) + " |", "|---|" + "---:|" * len(MANTISSA_BITS)]
    for label, (dictionary, signals, n_nonzero) in problems.items():
        measured = compare(dictionary, signals, n_nonzero)
        lines.append(f"| {label} | " + " | ".join(f"{same:.4f} / {error:.1e}" for same, error in measured.values())
                     + " |")
    text = "\n".join(lines) + "\n"
    publish(text, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
