"""One fit over 1, 2, … processes (torch.distributed; gloo on the CPU, NCCL on GPUs): wall time,
speed-up and peak memory per process.

    python benchmarks/distributed_speed.py                        # 1 and 2 processes, 1 thread each, CPU
    python benchmarks/distributed_speed.py --processes 1 2 4 --threads 2
    python benchmarks/distributed_speed.py --device cuda --processes 1 2 4 --image-size 224 --layers layer3

Each process count is one launch of that many processes (torch.multiprocessing, with the
environment torchrun gives them), each limited to ``--threads`` torch threads, that runs the fit
of ``train.py`` — features of its share of the images, the all-to-all exchange, K-SVD and the
Gaussians for its share of the locations, the assembly of the whole model on every process — on
the generated dataset's training images (repeated to ``--n-train``). One process is the plain
single-process fit. The fit time is rank 0's wall clock (it includes waiting for the others).
Each process's CPU time during the fit is reported too: on a machine shared with other work the
wall time (and the speed-up) depends on the load, the CPU time and its split do not. Peak memory
is each process's maximum resident set (CPU) or CUDA allocator peak (GPU); on the CPU it includes
about 0.5 GiB of interpreter and libraries. The table is printed and appended to
``benchmarks/RESULTS.md`` with the date, the machine and the git commit.
"""
from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ksvd_speed import commit, machine, publish  # noqa: E402
from benchmarks.pipeline_speed import Repeated  # noqa: E402


def fit_once(rank: int, world_size: int, port: int, args: argparse.Namespace, results) -> None:
    """One process of a launch: the fit, then rank 0 reports its times and everyone's peak memory."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": str(args.threads)})
    torch.set_num_threads(args.threads)
    from gpuksvd.data import ImageDataset, Preprocess, list_dataset
    from gpuksvd.detector import PSDL, PSDLConfig
    from gpuksvd.features import build_extractor
    from gpuksvd.runs.distributed import process_group
    from gpuksvd.runs.loops import fit, peak_memory_bytes

    with process_group(args.device, 3600) as group:
        extractor = build_extractor("resnet18", args.layers, weights="random")
        preprocess = Preprocess(resize=args.image_size, crop=args.image_size)
        records = [record for record in list_dataset("generated", None) if record.split == "train"]
        train = Repeated(ImageDataset(records, preprocess, extractor.mean, extractor.std), args.n_train)
        model = PSDL(extractor, PSDLConfig(n_iter=args.n_iter, sparsity=args.sparsity), preprocess).to(group.device)
        group.check_model(model)
        if group.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(group.device)
        fit_on = fit if group.world_size == 1 else group.fit  # as train_run does
        cpu_start = time.process_time()
        times = fit_on(model, train, batch_size=args.batch_size, num_workers=0, progress=False, cache=False)
        cpu = time.process_time() - cpu_start  # this process's CPU seconds (all its threads)
        facts = group.run_facts(group.device)
        cpus = [cpu] if group.world_size == 1 else group.all_gather_objects(cpu, "CPU seconds")
        if group.is_root:
            peaks = facts.get("peak_memory_bytes_per_process", [peak_memory_bytes(group.device)])
            results.put((vars(times), peaks, tuple(model.feature_shapes[0]), cpus))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(world_size: int, args: argparse.Namespace) -> tuple[dict, list[int], tuple, list[float]]:
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(fit_once, args=(world_size, free_port(), args, results), nprocs=world_size,
                       start_method="spawn", join=True)
    return results.get()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", nargs="+", type=int, default=[1, 2], help="process counts (default 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--layers", nargs="+", default=["layer2"],
                        help="ResNet-18 layers (default layer2: 128 channels)")
    parser.add_argument("--image-size", type=int, default=64, help="input size (default 64: an 8x8 layer2 map)")
    parser.add_argument("--n-train", type=int, default=600, help="training images (default 600)")
    parser.add_argument("--n-iter", type=int, default=10, help="K-SVD iterations (default 10)")
    parser.add_argument("--sparsity", type=float, default=0.25, help="non-zeros per code / atoms (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per feature batch (default 32)")
    parser.add_argument("--repeat", type=int, default=2, help="launches per process count; the fastest is shown")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args(argv)

    from gpuksvd.data import list_dataset

    list_dataset("generated", None)  # generate the images once, before any process starts
    torch.set_num_threads(args.threads)  # as in each process, for the machine line
    rows, base, shape = [], None, None
    for world_size in args.processes:
        runs = [launch(world_size, args) for _ in range(args.repeat)]
        times, peaks, shape, cpus = min(runs, key=lambda run: run[0]["total"])
        base = times["total"] if base is None else base
        rows.append(f"| {world_size} | {times['total']:.1f} ({times['features']:.1f} / {times['ksvd']:.1f}) | "
                    f"{base / times['total']:.2f}x | {' / '.join(f'{cpu:.1f}' for cpu in cpus)} | "
                    f"{' / '.join(f'{peak / 2 ** 30:.2f}' for peak in peaks)} |")
        print(rows[-1], flush=True)
    channels, height, width = shape
    load = os.getloadavg()[0]
    text = (f"### distributed_speed.py — {datetime.datetime.now():%Y-%m-%d %H:%M} — commit {commit()}\n\n"
            f"Machine: {machine()}, {os.cpu_count()} cores; load average {load:.1f} when it ended. "
            f"One fit (features + exchange + K-SVD + "
            f"Gaussians + assembly) of ResNet-18 {'+'.join(args.layers)} ({channels} channels, {height}x{width} = "
            f"{height * width} locations) on {args.n_train} generated images at {args.image_size}x{args.image_size}, "
            f"{channels} atoms, sparsity {args.sparsity}, {args.n_iter} K-SVD iterations, random weights, on "
            f"{args.device}; each process limited to {args.threads} torch thread(s); best of {args.repeat} launches. "
            f"CPU s: each process's CPU time during the fit (rank 0 first; on a machine shared with other work "
            f"the wall time stretches, the CPU time does not). Peak memory: per process, resident set on the CPU "
            f"(about 0.5 GiB of it is the interpreter and libraries), allocator peak on a GPU.\n\n"
            "| processes | fit s (features / K-SVD and the rest) | speed-up | CPU s per process | "
            "peak memory per process GiB |\n"
            "|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    publish("\n" + text, not args.no_write)
    return text


if __name__ == "__main__":
    main()
