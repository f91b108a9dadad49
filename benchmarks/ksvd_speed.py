"""Time one K-SVD iteration (Batch-OMP + all atom updates) at the paper's scales, against CPU peers.

    python benchmarks/ksvd_speed.py --scales en_b6 rn18_l3          # the issue-15 table (CPU)
    python benchmarks/ksvd_speed.py --scales wrn50_l3 --cpu-locations 2 --repeat 1
    python benchmarks/ksvd_speed.py                                  # CPU (+ CUDA when available), all scales

For each scale it times, in one run:

* gpuksvd with ``kernel="auto"`` (the native C kernel on the CPU, torch on CUDA): OMP, the
  approximate and the exact atom-update pass, one iteration each (best of ``--repeat`` after a
  warm-up), and their ratio exact / approximate per iteration;
* on the CPU also the torch path (``kernel="torch"``), so that the native kernel's gain shows;
* the CPU peers of ``benchmarks/peers.py`` that are installed (``pip install -e ".[bench]"``;
  the others are skipped with a note): scikit-learn, SPAMS, dictlearn AK-SVD and K-SVD, each as
  users would run it in parallel, one single-threaded process per core;

and prints each gpuksvd CPU row's speed-up over the fastest peer. CPU times are measured on a
subset of the locations and scaled to all P (locations are independent problems); the table says
how many. It also prints the arithmetic and memory-traffic floor of the torch path's iteration,
and appends everything to ``benchmarks/RESULTS.md`` with the date, the machine, its load and the
git commit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.peers import PEERS, Problem, available_peers, time_peer  # noqa: E402
from gpuksvd.sparse import batch_omp, initial_dictionary, update_atoms  # noqa: E402
from gpuksvd.sparse.dispatch import resolve_kernel  # noqa: E402

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

ATOM_UPDATES = ("approximate", "exact")


def floor(scale: Scale) -> dict:
    """Operations and memory traffic of one iteration of the torch path's algorithm.

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


def time_gpuksvd(scale: Scale, device: torch.device, n_locations: int, repeat: int = 3, kernel: str = "auto",
                 factor: str = "auto", streamed: bool | None = None, dtype=torch.float32) -> dict:
    """Seconds of OMP and of each atom-update pass on ``n_locations`` locations (each the best of
    ``repeat`` after a warm-up: on a shared machine, noise only ever adds time).

    Each repeat codes the signals once, then runs the approximate and the exact pass on copies of
    the same dictionary and codes, so the two updates start from the same state. ``factor`` and
    ``streamed`` override the torch kernel's choices (``factor_layout``, ``stream_residual``).
    """
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(n_locations, scale.n_signals, scale.n_features, generator=gen).to(device, dtype)
    dictionary = initial_dictionary("dct", n_locations, scale.n_features, scale.n_features, dtype=dtype, device=device)
    torch_options = {} if kernel != "torch" else {"stream_residual": streamed}
    omp_options = {} if kernel != "torch" else {"factor_layout": factor}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def timed(function, *args, **kwargs):
        _sync(device)
        start = time.perf_counter()
        result = function(*args, **kwargs)
        _sync(device)
        return time.perf_counter() - start, result

    best = {"omp": float("inf"), **{name: float("inf") for name in ATOM_UPDATES}}
    for attempt in range(repeat + 1):  # the first is the warm-up: kernels, allocator, first touch
        seconds, codes = timed(batch_omp, dictionary, signals, scale.n_nonzero, kernel=kernel, **omp_options)
        measured = {"omp": seconds}
        for atom_update in ATOM_UPDATES:
            atoms, atom_codes = dictionary.clone(), codes.clone()
            measured[atom_update], _ = timed(update_atoms, signals, atoms, atom_codes, atom_update=atom_update,
                                             kernel=kernel, **(torch_options if atom_update == "approximate" else {}))
        if attempt:
            best = {name: min(best[name], measured[name]) for name in best}
    best["peak_bytes"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return best


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


def publish(text: str, write: bool = True) -> None:
    """Print a benchmark's table and, with ``write``, append it to RESULTS.md (after a blank line)."""
    print(text)
    if write:
        with RESULTS.open("a") as stream:
            stream.write("\n" + text.strip("\n") + "\n")
        print(f"appended to {RESULTS}")


def default_run_signals() -> torch.Tensor | None:
    """The training signals (P, N, C) of the default ``python train.py`` (EfficientNet-Lite0 block10:
    112 channels on a 14×14 map, all categories of the generated data) from the feature cache that
    run writes: of the cached single-set features of that shape, those of the most images (a
    one-category run of the same backbone caches fewer); None when there are none."""
    from safetensors.torch import load_file

    from gpuksvd.files import cache_dir

    best = None
    for path in sorted((cache_dir() / "features").glob("*.safetensors")):
        features = [value for value in load_file(str(path)).values() if value.ndim == 4]
        if len(features) == 1 and tuple(features[0].shape[1:]) == (112, 14, 14):
            if best is None or features[0].shape[0] > best.shape[0]:
                best = features[0]
    return None if best is None else best.float().flatten(2).permute(2, 0, 1).contiguous()


def load_average() -> str:
    try:
        return "/".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> str:
    n_threads = torch.get_num_threads()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--cpu-locations", type=int, default=6 * n_threads,
                        help="locations timed with the native kernel, scaled to P (default: 6 per torch thread, "
                             "so that every core gets several tiles)")
    parser.add_argument("--torch-locations", type=int, default=6 * n_threads,
                        help="locations timed with the torch kernel on the CPU (0: skip it; default as the "
                             "native kernel's, the tiles the earlier tables of this file measured)")
    parser.add_argument("--torch-scales", nargs="*", default=["en_b6", "rn18_l3"], choices=list(SCALES),
                        help="scales where the CPU's torch kernel is timed too (WRN50: minutes per location)")
    parser.add_argument("--repeat", type=int, default=3, help="timed iterations; the fastest is reported")
    parser.add_argument("--peer-scales", nargs="*", default=["en_b6", "rn18_l3"], choices=list(SCALES),
                        help="scales with the CPU peers (WRN50: minutes per location)")
    parser.add_argument("--peers", nargs="+", default=None, choices=list(PEERS),
                        help="peers to time (default: every installed one)")
    parser.add_argument("--peer-processes", type=int, default=os.cpu_count() or 1,
                        help="single-threaded peer processes, one per core (default: the CPU count)")
    parser.add_argument("--peer-locations", type=int, default=None,
                        help="locations timed per peer (default: one per process)")
    parser.add_argument("--cuda-alternative-scales", nargs="*", default=["en_b6", "rn18_l3"], choices=list(SCALES),
                        help="scales where CUDA is also timed with the CPU's torch choices (signals-last factor, "
                             "streamed atom updates), to see which is faster on the GPU")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    peers, missing = available_peers()
    peers = [peer for peer in (args.peers or peers) if peer in peers]
    for note in missing:
        print(f"peer skipped: {note}", flush=True)
    peer_locations = args.peer_locations or args.peer_processes
    load_start = load_average()

    rows = []
    for name in args.scales:
        scale = SCALES[name]
        row = {"scale": scale, "floor": floor(scale), "gpuksvd": [], "peers": []}
        for device_name in args.devices:
            device = torch.device(device_name)
            runs = [("auto", None, "auto", scale.n_locations if device.type == "cuda" else args.cpu_locations)]
            if device.type == "cpu" and args.torch_locations > 0 and name in args.torch_scales:
                runs.append(("torch", None, "auto", args.torch_locations))
            if device.type == "cuda" and name in args.cuda_alternative_scales:
                runs.append(("torch", True, "signals-last", scale.n_locations))
            for kernel, streamed, factor, measured in runs:
                measured = min(measured, scale.n_locations)
                timing = time_gpuksvd(scale, device, measured, args.repeat, kernel=kernel, factor=factor,
                                      streamed=streamed)
                scaled = {key: timing[key] * scale.n_locations / measured for key in ("omp", *ATOM_UPDATES)}
                resolved = resolve_kernel(kernel, torch.empty(0, device=device))
                label = f"auto ({resolved})" if kernel == "auto" else kernel
                if streamed:
                    label = "torch: signals-last factor, streamed updates"
                row["gpuksvd"].append({"device": device.type, "kernel": label, "measured": measured,
                                       "peak_bytes": timing["peak_bytes"], **scaled})
                print(f"{scale.label} on {device_name}, kernel {label}: OMP {scaled['omp']:.2f} s, atoms approximate "
                      f"{scaled['approximate']:.2f} s / exact {scaled['exact']:.2f} s (measured on {measured} of "
                      f"{scale.n_locations} locations)", flush=True)
        if name in args.peer_scales:
            problem = Problem(scale.n_locations, scale.n_features, scale.n_signals, scale.n_nonzero)
            for peer in peers:
                timing = time_peer(peer, problem, peer_locations, args.peer_processes)
                row["peers"].append(timing)
                print(f"{scale.label} peer {PEERS[peer][3]}: {timing.seconds:.1f} s per iteration (CPU-based "
                      f"{timing.cpu_seconds:.1f} s; {peer_locations} locations on {args.peer_processes} processes)",
                      flush=True)
        rows.append(row)

    table = render(rows, args, missing, load_start)
    publish(table, not args.no_write)
    return table


def render(rows: list[dict], args: argparse.Namespace, missing: list[str], load_start: str) -> str:
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"### ksvd_speed.py — {stamp} — commit {commit()}",
        "",
        f"Machine: {machine()}; load average (1/5/15 min) {load_start} at the start, {load_average()} at the end. "
        "One K-SVD iteration = Batch-OMP + one atom-update pass over all P locations, float32 (peers: their "
        "dtype), random Gaussian signals, DCT-initialised square dictionaries. gpuksvd times are the best of "
        f"{args.repeat} iterations after a warm-up, CPU ones measured on the stated number of locations and "
        "scaled to P. Peers: one single-threaded process per core, one iteration per location, wall time "
        "scaled to P (CPU-based: the workers' CPU time, what an idle machine would give). 'vs fastest peer': "
        "the fastest peer's iteration time (wall) over gpuksvd's.",
        "",
        "| scale (P, C=K, N, T) | device | kernel | OMP s | approximate: atoms s | iteration s | exact: atoms s "
        "| iteration s | exact / approximate | vs fastest peer (approximate / exact) | peak GPU mem |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        scale = row["scale"]
        dims = f"{scale.label} ({scale.n_locations}, {scale.n_features}, {scale.n_signals}, {scale.n_nonzero})"
        fastest = min((timing.seconds for timing in row["peers"]), default=None)
        for run in row["gpuksvd"]:
            approximate, exact = run["omp"] + run["approximate"], run["omp"] + run["exact"]
            where = run["device"] + (f" ({run['measured']} loc.)" if run["measured"] != scale.n_locations else "")
            versus = f"{fastest / approximate:.1f}x / {fastest / exact:.1f}x" if fastest else "–"
            peak = f"{run['peak_bytes'] / 2**30:.1f} GiB" if run["peak_bytes"] else "–"
            lines.append(f"| {dims} | {where} | {run['kernel']} | {run['omp']:.2f} | {run['approximate']:.2f} | "
                         f"{approximate:.2f} | {run['exact']:.2f} | {exact:.2f} | {exact / approximate:.2f} | "
                         f"{versus} | {peak} |")
        for timing in row["peers"]:
            _, dtype, _, label, atom_update = PEERS[timing.peer]
            column = f"{timing.seconds:.1f} (CPU-based {timing.cpu_seconds:.1f})"
            cells = f"{column} | – | – " if atom_update == "approximate" else f"– | – | {column} "
            lines.append(f"| {dims} | cpu ({timing.n_timed} loc., {timing.n_processes} processes) | peer: {label}, "
                         f"{dtype} | – | – | {cells}| – | – | – |")
        fl = row["floor"]
        lines.append(f"| {dims} | floor of the torch path | | | | {fl['omp_gflop'] + fl['update_gflop']:.0f} GFLOP / "
                     f"{fl['omp_gb'] + fl['update_gb']:.0f} GB | | | | | |")
    if missing:
        lines += ["", "Peers not timed: " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
