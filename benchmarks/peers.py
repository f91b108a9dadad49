"""Reference CPU peers for ``ksvd_speed.py``, run as users would run them in parallel.

    pip install -e ".[bench]"    # scikit-learn, dictlearn[numba], spams-bin (each optional)
    python benchmarks/peers.py --scales en_b6 --locations 2 --processes 2

One K-SVD iteration of each peer = sparse-code all N signals of a location with the current
dictionary (T non-zeros each), then one sequential pass over all K atoms; from a DCT-II dictionary,
on random Gaussian signals (as ``ksvd_speed.py`` times gpuksvd):

* ``sklearn``: scikit-learn ``orthogonal_mp_gram`` + a NumPy approximate atom update (the loop a
  practitioner would write), float32.
* ``spams``: SPAMS ``spams.omp`` (the ``spams-bin`` wheel: forward selection with a progressive
  Cholesky) + the same NumPy update, float64 (its OMP is faster in float64 here, and float32 needs
  ``eps``/``lambda1`` set explicitly). SPAMS has no K-SVD of its own.
* ``dictlearn_aksvd`` / ``dictlearn_ksvd``: dictlearn 1.0 ``sparse_encode(..., algorithm="omp")``
  (its numba Batch-OMP) + its ``atom_sweep`` with one power step per atom (``"aksvd"``) or an SVD
  of each restricted residual (``"ksvd"``, the exact update), float64 (the only dtype it computes in).

Parallelism: a pool of ``n_processes`` worker processes (spawn), each single-threaded (the thread
variables set before numpy is imported, and threadpoolctl limits), each taking its share of the
timed locations one after the other. Every worker first runs one iteration on a small problem of
the same sizes (numba compilation or cache load, BLAS start-up) and waits at a barrier, so the
timed section excludes start-up. Workers import only NumPy and the peer's package.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Problem:
    """One location's sizes, and how many locations a full iteration has."""

    n_locations: int  # P
    n_features: int  # C = K (square dictionaries)
    n_signals: int  # N
    n_nonzero: int  # T


@dataclass
class PeerTiming:
    peer: str
    problem: Problem
    n_timed: int  # locations timed
    n_processes: int
    wall: float  # seconds of the parallel section
    per_location: list[float] = field(default_factory=list)  # seconds per location, in the workers
    cpu_per_location: list[float] = field(default_factory=list)  # process CPU seconds per location
    errors: list[float] = field(default_factory=list)  # relative reconstruction error after the iteration

    @property
    def seconds(self) -> float:
        """Seconds per iteration for all P locations on ``n_processes`` processes (wall time)."""
        return self.wall * self.problem.n_locations / self.n_timed

    @property
    def cpu_seconds(self) -> float:
        """The same from the workers' CPU time, P × mean CPU seconds per location / processes: what
        an idle machine would give when other programs share the cores."""
        return (sum(self.cpu_per_location) / len(self.cpu_per_location) * self.problem.n_locations
                / self.n_processes)


# --- one iteration of each peer on one location (run in the workers) -------------------------------

def dct_dictionary(n_atoms: int, n_features: int):
    """(K, C) DCT-II atoms with unit-norm rows (orthonormal when K = C)."""
    import numpy as np

    k = np.arange(n_atoms)[:, None]
    n = np.arange(n_features)[None, :]
    atoms = np.cos(np.pi / n_features * (n + 0.5) * k * n_features / max(n_atoms, 1))
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


def location_data(problem: Problem, location: int, dtype):
    import numpy as np

    rng = np.random.default_rng(1000 + location)
    signals = rng.standard_normal((problem.n_signals, problem.n_features)).astype(dtype)
    return signals, dct_dictionary(problem.n_features, problem.n_features).astype(dtype)


def approximate_update(signals, dictionary, codes) -> None:
    """The NumPy approximate K-SVD pass, in place: one power step per atom on its users."""
    import numpy as np

    for k in range(dictionary.shape[0]):
        users = np.flatnonzero(codes[:, k])
        if users.size == 0:
            continue
        error = signals[users] - codes[users] @ dictionary + np.outer(codes[users, k], dictionary[k])
        atom = error.T @ codes[users, k]
        atom /= np.linalg.norm(atom)
        dictionary[k] = atom
        codes[users, k] = error @ atom


def iteration_sklearn(signals, dictionary, n_nonzero):
    from sklearn.linear_model import orthogonal_mp_gram

    codes = orthogonal_mp_gram(dictionary @ dictionary.T, dictionary @ signals.T, n_nonzero_coefs=n_nonzero).T
    codes = codes.astype(signals.dtype, copy=False)
    approximate_update(signals, dictionary, codes)
    return dictionary, codes


def iteration_spams(signals, dictionary, n_nonzero):
    import numpy as np
    import spams

    # eps and lambda1 passed explicitly: with float32 and None, spams-bin 2.6.14 returns no non-zeros.
    zero = np.asarray(0.0, dtype=signals.dtype).item()
    sparse = spams.omp(np.asfortranarray(signals.T), np.asfortranarray(dictionary.T), L=n_nonzero, eps=zero,
                       lambda1=zero, numThreads=1)  # (K, N) csc
    codes = np.ascontiguousarray(sparse.toarray().T)
    approximate_update(signals, dictionary, codes)
    return dictionary, codes


def _iteration_dictlearn(signals, dictionary, n_nonzero, method):
    import numpy as np
    from dictlearn import sparse_encode
    from dictlearn._update import LinearOps, atom_sweep, get_update_method

    # What DictionaryLearning(fit_algorithm=method, max_iter=1, code_init=...).fit does per
    # iteration, called directly so that one OMP and one sweep are timed.
    codes = sparse_encode(signals, dictionary, algorithm="omp", n_nonzero_coefs=n_nonzero)  # (N, K) float64
    data, atoms, codes_t = np.ascontiguousarray(signals.T), dictionary.T.copy(), codes.T.copy()
    atom_sweep(data, atoms, codes_t, ops=LinearOps(), update_atom=get_update_method(method).func,
               rng=np.random.default_rng(0), replace_unused="random")
    return np.ascontiguousarray(atoms.T), np.ascontiguousarray(codes_t.T)


def iteration_dictlearn_aksvd(signals, dictionary, n_nonzero):
    return _iteration_dictlearn(signals, dictionary, n_nonzero, "aksvd")


def iteration_dictlearn_ksvd(signals, dictionary, n_nonzero):
    return _iteration_dictlearn(signals, dictionary, n_nonzero, "ksvd")


#: peer -> (one iteration, dtype, modules it needs, label, atom update)
PEERS = {
    "sklearn": (iteration_sklearn, "float32", ("sklearn",), "scikit-learn OMP + NumPy update", "approximate"),
    "spams": (iteration_spams, "float64", ("spams",), "SPAMS OMP (forward selection) + NumPy update",
              "approximate"),
    "dictlearn_aksvd": (iteration_dictlearn_aksvd, "float64", ("dictlearn", "numba"), "dictlearn AK-SVD",
                        "approximate"),
    "dictlearn_ksvd": (iteration_dictlearn_ksvd, "float64", ("dictlearn", "numba"), "dictlearn K-SVD (SVD per atom)",
                       "exact"),
}


def available_peers() -> tuple[list[str], list[str]]:
    """The peers whose packages import here, and a note for each one that does not."""
    found, missing = [], []
    for peer, (_, _, modules, label, _) in PEERS.items():
        absent = [module for module in modules if importlib.util.find_spec(module) is None]
        if absent:
            missing.append(f"{label}: not installed ({', '.join(absent)}; pip install -e '.[bench]')")
        else:
            found.append(peer)
    return found, missing


# --- the worker pool --------------------------------------------------------------------------------

_WORKER: dict = {}


def _initialise(peer: str, problem: Problem, barrier) -> None:
    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"
    import numpy as np

    try:
        from threadpoolctl import threadpool_limits

        _WORKER["limits"] = threadpool_limits(1)
    except ImportError:
        pass
    function, dtype, *_ = PEERS[peer]
    _WORKER.update(problem=problem, function=function, dtype=np.dtype(dtype), barrier=barrier)
    # Warm-up: one iteration of the same sizes on few signals (JIT compilation or cache load, BLAS).
    small = Problem(1, problem.n_features, max(2 * problem.n_nonzero, 64), problem.n_nonzero)
    function(*location_data(small, 0, _WORKER["dtype"]), problem.n_nonzero)


def _ready(_: int) -> int:
    _WORKER["barrier"].wait()  # every worker has warmed up: the timed section starts together
    return os.getpid()


def _one_location(location: int) -> tuple[float, float, float]:
    import numpy as np

    problem = _WORKER["problem"]
    signals, dictionary = location_data(problem, location, _WORKER["dtype"])
    start, start_cpu = time.perf_counter(), time.process_time()
    dictionary, codes = _WORKER["function"](signals, dictionary, problem.n_nonzero)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    error = float(np.linalg.norm(signals - codes @ dictionary) / np.linalg.norm(signals))
    return seconds, cpu, error


def time_peer(peer: str, problem: Problem, n_timed: int, n_processes: int) -> PeerTiming:
    """One iteration of ``peer`` on ``n_timed`` locations split over ``n_processes`` single-threaded
    processes (module docstring); ``n_timed`` must be a multiple of ``n_processes``."""
    if n_timed % n_processes:
        raise ValueError(f"the timed locations ({n_timed}) must be a multiple of the processes ({n_processes}), "
                         "so that every process does the same work")
    saved = {variable: os.environ.get(variable) for variable in THREAD_VARIABLES}
    for variable in THREAD_VARIABLES:  # inherited by the spawned workers before they import numpy
        os.environ[variable] = "1"
    context = mp.get_context("spawn")
    barrier = context.Barrier(n_processes)
    try:
        with context.Pool(n_processes, initializer=_initialise, initargs=(peer, problem, barrier)) as pool:
            assert len(set(pool.map(_ready, range(n_processes), chunksize=1))) == n_processes
            start = time.perf_counter()
            results = pool.map(_one_location, range(n_timed), chunksize=n_timed // n_processes)
            wall = time.perf_counter() - start
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
    return PeerTiming(peer, problem, n_timed, n_processes, wall, [r[0] for r in results], [r[1] for r in results],
                      [r[2] for r in results])


def main(argv=None) -> None:
    from ksvd_speed import SCALES  # noqa: PLC0415  (run from benchmarks/)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["en_b6", "rn18_l3"], choices=list(SCALES))
    parser.add_argument("--peers", nargs="+", default=None, choices=list(PEERS))
    parser.add_argument("--locations", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    peers, missing = available_peers()
    peers = args.peers or peers
    for note in missing:
        print(f"skipped {note}")
    for name in args.scales:
        scale = SCALES[name]
        problem = Problem(scale.n_locations, scale.n_features, scale.n_signals, scale.n_nonzero)
        for peer in peers:
            timing = time_peer(peer, problem, args.locations, args.processes)
            print(f"{name} {peer:16s}: {timing.seconds:8.1f} s/iteration (CPU-based {timing.cpu_seconds:.1f} s; "
                  f"error {sum(timing.errors) / len(timing.errors):.4f}); load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
