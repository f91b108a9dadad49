"""Time one K-SVD iteration (Batch-OMP + all atom updates) at the paper's scales.

    python benchmarks/ksvd_speed.py                         # CPU (+ CUDA when available), all scales
    python benchmarks/ksvd_speed.py --scales en_b6 --cpu-locations 8 --sklearn-locations 2

For each scale it times gpuksvd on the CPU and, when available, on CUDA (OMP and atom updates
separately, one iteration, after a warm-up), scikit-learn's ``orthogonal_mp_gram`` plus a
per-location NumPy atom update on a few locations (the reference a practitioner would write),
and prints the GPU/CPU ratio. CPU and scikit-learn times are measured on a subset of the
locations and scaled to all P (locations are independent problems, processed one chunk after
another on the CPU); the table says how many were measured. It also prints the arithmetic and
memory-traffic floor of one iteration and appends everything to ``benchmarks/RESULTS.md`` with
the date, the machine and the git commit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpuksvd.sparse import batch_omp, initial_dictionary, update_atoms  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Scale:
    name: str
    label: str
    n_locations: int
    n_features: int  # C = K (square dictionaries)
    n_signals: int
    n_nonzero: int


SCALES = {
    "en_b6": Scale("en_b6", "EN-B6 block 30", 196, 200, 3629, 50),
    "rn18_l3": Scale("rn18_l3", "RN18 layer3", 196, 256, 3629, 64),
    "wrn50_l3": Scale("wrn50_l3", "WRN50 layer3", 196, 1024, 3629, 256),
}


def floor(scale: Scale) -> dict:
    """Operations and memory traffic of one iteration of the algorithm as implemented.

    Per signal, OMP needs the projections (K·C multiply-adds), per step k an embedding-bag sum
    of k+1 Gram rows ((k+1)·K) and two k×k triangular products (2·k²): K·C + T²K/2 + 2T³/3 in
    all. The atom update makes about four passes over the residual per atom (Eᵀγ, E·d, rank-2
    update): 8·N·C·K flops per location. Traffic assumes nothing stays in cache: OMP reads and
    writes α (N×K) about three times per step, the atom update moves the residual four times.
    """
    p, c, n, t = scale.n_locations, scale.n_features, scale.n_signals, scale.n_nonzero
    k = c
    omp_flops = 2 * p * n * (k * c + t * t * k / 2 + 2 * t**3 / 3) + 2 * p * k * k * c
    update_flops = 8 * p * n * c * k
    omp_bytes = 4 * p * (3 * n * k * t + n * t * t * t / 3)
    update_bytes = 4 * p * 4 * n * c * k
    return {"omp_gflop": omp_flops / 1e9, "update_gflop": update_flops / 1e9,
            "omp_gb": omp_bytes / 1e9, "update_gb": update_bytes / 1e9}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_gpuksvd(scale: Scale, device: torch.device, n_locations: int, repeat: int = 3, factor: str = "auto",
                 streamed: bool | None = None, dtype=torch.float32) -> dict:
    """Seconds for one iteration on ``n_locations`` locations, OMP and atom updates apart (best of ``repeat``).

    ``factor`` ("matrices" or "signals-last") and ``streamed`` override the library's choices
    for the device (``factor_layout`` and ``stream_residual`` of the public functions), to
    compare the alternatives on it. OMP and the atom updates are split into tiles as ksvd()
    splits them.
    """
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(n_locations, scale.n_signals, scale.n_features, generator=gen).to(device, dtype)
    dictionary = initial_dictionary("dct", n_locations, scale.n_features, scale.n_features, dtype=dtype, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def one_iteration() -> tuple[float, float]:
        _sync(device)
        start = time.perf_counter()
        codes = batch_omp(dictionary, signals, scale.n_nonzero, factor_layout=factor)
        _sync(device)
        middle = time.perf_counter()
        update_atoms(signals, dictionary, codes, stream_residual=streamed)
        _sync(device)
        return middle - start, time.perf_counter() - middle

    one_iteration()  # warm-up: CUDA kernels and allocator, the CPU's first touch of fresh memory
    # Best of `repeat`: on a shared machine, noise only ever adds time.
    omp_s, update_s = min((one_iteration() for _ in range(repeat)), key=sum)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"omp": omp_s, "update": update_s, "peak_bytes": peak}


def time_sklearn(scale: Scale, n_locations: int) -> float:
    """Seconds for one iteration of per-location scikit-learn OMP + a NumPy atom-update loop."""
    from sklearn.linear_model import orthogonal_mp_gram

    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(n_locations):
        signals = rng.standard_normal((scale.n_signals, scale.n_features)).astype(np.float32)
        dictionary = initial_dictionary("dct", 1, scale.n_features, scale.n_features)[0].numpy()
        start = time.perf_counter()
        gram = dictionary @ dictionary.T
        codes = orthogonal_mp_gram(gram, dictionary @ signals.T, n_nonzero_coefs=scale.n_nonzero).T
        for k in range(dictionary.shape[0]):  # approximate K-SVD atom update, one atom at a time
            users = np.flatnonzero(codes[:, k])
            if users.size == 0:
                continue
            error = signals[users] - codes[users] @ dictionary + np.outer(codes[users, k], dictionary[k])
            atom = error.T @ codes[users, k]
            atom /= np.linalg.norm(atom)
            dictionary[k] = atom
            codes[users, k] = error @ atom
        total += time.perf_counter() - start
    return total


def machine() -> str:
    threads = torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"CPU {cpu}, {threads} torch threads"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()}"
    return text


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/RESULTS.md"], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        return head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--cpu-locations", type=int, default=6 * torch.get_num_threads(),
                        help="locations timed on the CPU, scaled to P (default: 6 per torch thread, so that "
                             "every core gets whole tiles and update groups)")
    parser.add_argument("--repeat", type=int, default=3, help="timed iterations per device; the fastest is reported")
    parser.add_argument("--sklearn-scales", nargs="+", default=list(SCALES), choices=list(SCALES),
                        help="scales with a scikit-learn reference (WRN50: ~2 minutes per location)")
    parser.add_argument("--sklearn-locations", type=int, default=1, help="locations timed with scikit-learn (0: skip)")
    parser.add_argument("--cuda-alternative-scales", nargs="*", default=["en_b6", "rn18_l3"], choices=list(SCALES),
                        help="scales where CUDA is also timed with the CPU's choices (signals-last factor, streamed "
                             "atom updates), to see which is faster on the GPU")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)

    rows = []
    for name in args.scales:
        scale = SCALES[name]
        row = {"scale": scale, "floor": floor(scale)}
        for device_name in args.devices:
            device = torch.device(device_name)
            measured = scale.n_locations if device.type == "cuda" else min(args.cpu_locations, scale.n_locations)
            timing = time_gpuksvd(scale, device, measured, args.repeat)
            factor = scale.n_locations / measured
            row[device.type] = {"omp": timing["omp"] * factor, "update": timing["update"] * factor,
                                "measured": measured, "peak_bytes": timing["peak_bytes"]}
            print(f"{scale.label} on {device_name}: OMP {row[device.type]['omp']:.3f} s, "
                  f"atoms {row[device.type]['update']:.3f} s (measured on {measured} of {scale.n_locations} locations)",
                  flush=True)
            if device.type == "cuda" and name in args.cuda_alternative_scales:
                # OMP and atom updates are timed apart, so one run gives both alternatives.
                timing = time_gpuksvd(scale, device, measured, args.repeat, factor="signals-last", streamed=True)
                row["cuda_alternatives"] = {"omp": timing["omp"], "update": timing["update"], "measured": measured,
                                            "peak_bytes": timing["peak_bytes"]}
                print(f"{scale.label} on {device_name}, signals-last factor: OMP {timing['omp']:.3f} s; "
                      f"streamed atom updates: {timing['update']:.3f} s", flush=True)
        if args.sklearn_locations > 0 and name in args.sklearn_scales:
            row["sklearn"] = time_sklearn(scale, args.sklearn_locations) * scale.n_locations / args.sklearn_locations
            row["sklearn_measured"] = args.sklearn_locations
            print(f"{scale.label} scikit-learn reference: {row['sklearn']:.1f} s", flush=True)
        rows.append(row)

    table = render(rows, args.repeat)
    print(table)
    if not args.no_write:
        with open(RESULTS, "a") as stream:
            stream.write(table + "\n")
        print(f"appended to {RESULTS}")
    return table


def render(rows: list[dict], repeat: int) -> str:
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"### ksvd_speed.py — {stamp} — commit {commit()}",
        "",
        f"Machine: {machine()}. One K-SVD iteration = Batch-OMP + all atom updates, all P locations, float32, "
        "random signals, DCT-initialised square dictionaries; gpuksvd times are the best of "
        f"{repeat} iterations after a warm-up one. CPU and scikit-learn times are measured on the "
        "stated number of locations and scaled to P.",
        "",
        "| scale (P, C=K, N, T) | device | OMP s | atom updates s | iteration s | peak GPU mem | GPU/CPU | floor (GFLOP / GB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        scale, fl = row["scale"], row["floor"]
        dims = f"{scale.label} ({scale.n_locations}, {scale.n_features}, {scale.n_signals}, {scale.n_nonzero})"
        cpu_total = row["cpu"]["omp"] + row["cpu"]["update"] if "cpu" in row else None
        floor_text = f"{fl['omp_gflop'] + fl['update_gflop']:.0f} / {fl['omp_gb'] + fl['update_gb']:.0f}"
        for device in ("cpu", "cuda", "cuda_alternatives"):
            if device not in row:
                continue
            timing = row[device]
            total = timing["omp"] + timing["update"]
            peak = f"{timing['peak_bytes'] / 2**30:.1f} GiB" if timing["peak_bytes"] else "–"
            on_gpu = device.startswith("cuda")
            ratio = f"{cpu_total / total:.0f}x" if on_gpu and cpu_total else "–"
            if on_gpu and "sklearn" in row:
                ratio += f" ({row['sklearn'] / total:.0f}x vs scikit-learn)"
            where = {"cuda_alternatives": "cuda: OMP with signals-last factor, streamed atom updates"}.get(device, device)
            if timing["measured"] != scale.n_locations:
                where += f" ({timing['measured']} loc.)"
            lines.append(f"| {dims} | {where} | {timing['omp']:.3f} | {timing['update']:.3f} | {total:.3f} | {peak} | "
                         f"{ratio} | {floor_text} |")
        if "sklearn" in row:
            lines.append(f"| {dims} | scikit-learn + NumPy ({row['sklearn_measured']} loc.) | – | – | "
                         f"{row['sklearn']:.1f} | – | – | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
