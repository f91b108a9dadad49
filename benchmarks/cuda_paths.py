"""The CUDA paths side by side: torch Batch-OMP against the fused Triton kernel, and one whole
K-SVD iteration eager against the same iteration replayed as a CUDA graph.

    python benchmarks/cuda_paths.py                       # all three scales, appends to RESULTS.md
    python benchmarks/cuda_paths.py --scales en_b6 --no-write

Needs a CUDA device (it says so and exits 2 without one). For each scale (EN-B6 block 30,
RN18 layer3, WRN50 layer3; WRN50 on ``--wrn50-locations`` of its 196 locations, scaled) it
measures, float32, best of ``--repeat`` after a warm-up:

* ``batch_omp`` with ``kernel="torch"`` and ``kernel="triton"``: seconds for all 196 locations,
  the share of signals whose supports agree, the relative difference of the reconstructions,
  and the peak memory; it prints which path is faster. A scale where the fused kernel cannot
  launch (``LaunchConfigError``, e.g. an α tile over the register budget) is reported, not hidden;
* one iteration without host synchronisation (OMP by the faster kernel that works, then the
  streamed approximate atom update with dead atoms kept): eager, and captured once into a CUDA
  graph and replayed. A capture that fails prints the reason (an operation that reads a value
  back to the host), which is itself the result.

The exit status is 1 when the two OMP paths disagree (supports < 99 % equal, or reconstructions
more than 1e-3 apart), so ``benchmarks/gpu_check.sh`` fails loudly. Results are appended to
``benchmarks/RESULTS.md`` with the date, the device and the git commit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import SCALES, Scale, commit, machine, publish  # noqa: E402
from gpuksvd.sparse import batch_omp, initial_dictionary  # noqa: E402
from gpuksvd.sparse.atom_updates import plan_atom_updates, run_update_pass  # noqa: E402
from gpuksvd.sparse.omp import code_tiles, omp_tiles  # noqa: E402

KERNELS = ("torch", "triton")
SUPPORT_AGREEMENT = 0.99
RECONSTRUCTION_TOLERANCE = 1e-3


def problem(scale: Scale, n_locations: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(n_locations, scale.n_signals, scale.n_features, generator=gen).to(device)
    dictionary = initial_dictionary("dct", n_locations, scale.n_features, scale.n_features, device=device)
    return dictionary, signals


def best_of(function, repeat: int, device: torch.device) -> tuple[float, object]:
    result, best = None, float("inf")
    for attempt in range(repeat + 1):  # the first is the warm-up (compilation, allocator)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = function()
        torch.cuda.synchronize(device)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return best, result


def compare_omp(scale: Scale, n_locations: int, device: torch.device, repeat: int) -> dict:
    dictionary, signals = problem(scale, n_locations, device)
    factor = scale.n_locations / n_locations
    row: dict = {"scale": scale.label, "locations": n_locations}
    codes = {}
    for kernel in KERNELS:
        torch.cuda.reset_peak_memory_stats(device)
        try:
            seconds, codes[kernel] = best_of(lambda: batch_omp(dictionary, signals, scale.n_nonzero, kernel=kernel),
                                             repeat, device)
        except Exception as error:  # noqa: BLE001 - a path that fails is reported, the other still runs
            row[kernel] = None
            row[f"{kernel}_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            continue
        row[kernel] = seconds * factor
        row[f"{kernel}_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if len(codes) == 2:
        a, b = codes["torch"], codes["triton"]
        row["same_support"] = float(((a != 0) == (b != 0)).all(-1).double().mean())
        reference = (a.double() @ dictionary.double())
        row["rel_diff"] = float(((b.double() @ dictionary.double()) - reference).norm() / reference.norm())
        row["agree"] = row["same_support"] >= SUPPORT_AGREEMENT and row["rel_diff"] <= RECONSTRUCTION_TOLERANCE
    working = [k for k in KERNELS if row.get(k) is not None]
    row["faster"] = min(working, key=lambda k: row[k]) if working else None
    return row


def time_iteration(scale: Scale, n_locations: int, device: torch.device, kernel: str, repeat: int) -> dict:
    """One sync-free iteration, eager and as a replayed CUDA graph (seconds scaled to all P)."""
    dictionary, signals = problem(scale, n_locations, device)
    codes = signals.new_zeros(n_locations, scale.n_signals, scale.n_features)
    tiles = omp_tiles(n_locations, scale.n_signals, scale.n_features, scale.n_nonzero, signals.dtype, None, device,
                      kernel=kernel)
    plan = plan_atom_updates(signals, scale.n_features, exact=False, stream_residual=True)
    sq_error = signals.new_zeros(n_locations)

    def iteration() -> None:
        code_tiles(signals, dictionary, codes, scale.n_nonzero, tiles, kernel=kernel)
        run_update_pass(signals, dictionary, codes, False, plan, sq_error, dead_atoms="keep")

    factor = scale.n_locations / n_locations
    row: dict = {"scale": scale.label, "kernel": kernel, "tiles": len(tiles)}
    torch.cuda.reset_peak_memory_stats(device)
    row["eager"] = best_of(iteration, repeat, device)[0] * factor
    row["eager_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
            iteration()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            iteration()
        row["graph"] = best_of(graph.replay, repeat, device)[0] * factor
    except Exception as error:  # noqa: BLE001 - the reason a capture fails is the measurement
        row["graph"] = None
        row["graph_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        traceback.print_exc()
    return row


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def render(omp_rows: list[dict], iteration_rows: list[dict], args: argparse.Namespace) -> str:
    lines = [f"\n### CUDA paths: torch vs fused Triton OMP, eager vs CUDA graph "
             f"({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()})\n",
             f"Machine: {machine()}; torch {torch.__version__}. `python benchmarks/cuda_paths.py "
             f"--repeat {args.repeat} --wrn50-locations {args.wrn50_locations}`; float32, seconds for all 196 "
             "locations (measured on the locations shown, scaled), best of the repeats after a warm-up.\n",
             "| scale | locations | torch OMP s | Triton OMP s | faster | same support | rel. diff | "
             "peak GiB torch / Triton | note |",
             "|---|---:|---:|---:|---|---:|---:|---|---|"]
    for row in omp_rows:
        note = "; ".join(row[k] for k in ("torch_error", "triton_error") if k in row)
        peaks = " / ".join(f"{row[f'{k}_peak_gib']:.2f}" if f"{k}_peak_gib" in row else "—" for k in KERNELS)
        support = f"{row['same_support']:.4f}" if "same_support" in row else "—"
        rel = f"{row['rel_diff']:.1e}" if "rel_diff" in row else "—"
        lines.append(f"| {row['scale']} | {row['locations']} | {seconds(row['torch'])} | {seconds(row['triton'])} | "
                     f"{row['faster'] or '—'} | {support} | {rel} | {peaks} | {note} |")
    lines += ["", "One iteration without host synchronisation (OMP + streamed approximate update, dead atoms kept):",
              "", "| scale | OMP kernel | eager s | CUDA graph s | graph / eager | peak GiB | note |",
              "|---|---|---:|---:|---:|---:|---|"]
    for row in iteration_rows:
        ratio = f"{row['graph'] / row['eager']:.2f}" if row.get("graph") else "—"
        lines.append(f"| {row['scale']} | {row['kernel']} | {seconds(row['eager'])} | {seconds(row.get('graph'))} | "
                     f"{ratio} | {row['eager_peak_gib']:.2f} | {row.get('graph_error', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--wrn50-locations", type=int, default=8, help="WRN50 locations measured (then scaled)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("cuda_paths.py needs a CUDA device; on the CPU run benchmarks/ksvd_speed.py", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    omp_rows, iteration_rows = [], []
    for name in args.scales:
        scale = SCALES[name]
        n_locations = args.wrn50_locations if name == "wrn50_l3" else scale.n_locations
        row = compare_omp(scale, n_locations, device, args.repeat)
        omp_rows.append(row)
        print(row, flush=True)
        for kernel in [k for k in KERNELS if row.get(k) is not None]:
            iteration_rows.append(time_iteration(scale, n_locations, device, kernel, args.repeat))
            print(iteration_rows[-1], flush=True)
        torch.cuda.empty_cache()
    text = render(omp_rows, iteration_rows, args)
    publish(text, not args.no_write)
    disagree = [row["scale"] for row in omp_rows if row.get("agree") is False]
    if disagree:
        print(f"torch and Triton OMP disagree at: {', '.join(disagree)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
