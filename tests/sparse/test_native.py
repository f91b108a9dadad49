"""The native kernels' build and load: the cache folder, atomic builds, stale builds pruned, no
compiler, other instruction sets, concurrent calls. (Their numbers are checked against the
references in test_omp.py, test_atom_updates.py, test_leading_pair.py and test_ksvd.py.)"""
import ctypes
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
import torch

from gpuksvd.sparse import batch_omp, native
from tests.support import problems
from tests.support.configs import ROOT


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty $GPUKSVD_CACHE: the next load builds (about 3 s per dtype)."""
    monkeypatch.setenv("GPUKSVD_CACHE", str(tmp_path))
    return tmp_path / "kernels"


random_problem = partial(problems.random_problem, n_locations=4, n_signals=80, n_features=24, n_atoms=37)


def test_builds_go_to_the_cache_folder_and_are_named_by_source_and_configuration():
    path, compiler, flags = native.library_path(torch.float32)
    assert path.parent == native.kernel_dir()
    assert path.name.startswith(f"kernels-{native.source_hash()}-f32-") and path.suffix == ".so"
    assert "-march=native" in flags and "-DKERNEL_DOUBLE=0" in flags
    native.load(torch.float32)
    assert path.exists()


_BUILD_SCRIPT = """
import torch
from gpuksvd.sparse import batch_omp
dictionary = torch.eye(8).expand(2, 8, 8)
print(int((batch_omp(dictionary, torch.randn(2, 5, 8), 3, kernel="native") != 0).sum()))
"""


@pytest.mark.slow
def test_concurrent_cold_builds_share_one_cache_and_prune_stale_builds(fresh_cache):
    # Another process and this one build into the same empty cache at the same time: each writes
    # a temporary file and renames it into place, so both load a whole library and one remains.
    # A build of another source version is removed, other files are left alone.
    fresh_cache.mkdir(parents=True)
    stale = fresh_cache / f"kernels-{'0' * 16}-f32-{'1' * 16}.so"
    stale.write_bytes(b"an old build")
    unrelated = fresh_cache / "notes.txt"
    unrelated.write_text("not a build")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    other = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    ours = native.build(torch.float32)
    out, error = other.communicate(timeout=300)
    assert other.returncode == 0, error
    assert out.strip() == "30"
    assert sorted(path.name for path in fresh_cache.iterdir()) == sorted([ours.name, unrelated.name])
    assert native.build(torch.float32) == ours  # built once


def test_no_compiler_warns_once_and_takes_the_torch_path(fresh_cache, monkeypatch):
    monkeypatch.setenv("CC", str(fresh_cache / "no-such-cc"))
    monkeypatch.setattr("gpuksvd.sparse.dispatch._warned", False)
    assert not native.available(torch.float64)
    dictionary, signals = random_problem()
    with pytest.warns(native.NativeKernelWarning, match="no C compiler found.*install gcc.*kernel='torch'"):
        codes = batch_omp(dictionary, signals, 5)
    assert torch.allclose(codes, batch_omp(dictionary, signals, 5, kernel="torch"), atol=0, rtol=0)
    with pytest.raises(native.NativeKernelUnavailable, match="no C compiler"):
        batch_omp(dictionary, signals, 5, kernel="native")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        batch_omp(dictionary, signals, 5)
    assert not fresh_cache.exists() or not any(fresh_cache.iterdir())


def test_compile_errors_are_reported(fresh_cache, monkeypatch, tmp_path):
    failing = tmp_path / "failing-cc"
    failing.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo fake 1.0 && exit 0\necho 'error: no' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    with pytest.raises(native.NativeKernelUnavailable, match="compiling gpuksvd's native kernel failed"):
        native.load(torch.float32)


def test_environment_variable_keeps_auto_on_the_torch_path(monkeypatch):
    from gpuksvd.sparse.dispatch import resolve_kernel

    like = torch.zeros(1, 2, 3)
    assert resolve_kernel("auto", like) == "native"
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert resolve_kernel("auto", like) == "torch"
    assert resolve_kernel("native", like) == "native"  # an explicit request still builds


def test_tiles_run_concurrently_in_threads():
    """ctypes releases the GIL: concurrent calls on separate tiles give the same codes, bitwise
    (each signal's arithmetic does not depend on the others)."""
    dictionary, signals = random_problem(n_locations=6, n_signals=200, n_atoms=40, dtype=torch.float32)
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    expected, _ = native.omp(gram, projections, 8)
    with ThreadPoolExecutor(3) as pool:
        parts = list(pool.map(lambda p: native.omp(gram[p : p + 2], projections[p : p + 2], 8)[0], [0, 2, 4]))
    assert torch.equal(torch.cat(parts), expected)
    halves = [native.omp(gram, projections[:, rows], 8)[0] for rows in (slice(0, 77), slice(77, None))]
    assert torch.equal(torch.cat(halves, 1), expected)


#: Builds of the kernels' non-AVX-512 code paths: AVX2 (movemask, 256-bit max) and the generic
#: vector-extension path.
OTHER_INSTRUCTION_SETS = {"avx2": ("-mno-avx512f", "-DVEC_BYTES=32", "-DMAX_BLOCK=8"),
                          "generic": ("-mno-avx512f", "-mno-avx2", "-DVEC_BYTES=32", "-DMAX_BLOCK=8")}


@pytest.mark.slow
def test_other_instruction_sets_give_the_same_results(tmp_path):
    """The kernels' non-AVX-512 code paths, built here (concurrently) with those instruction sets off."""
    if "avx512f" not in native._cpu_signature()[1].split():
        pytest.skip("this CPU builds the AVX2 or generic path already")
    libraries = {name: tmp_path / f"{name}.so" for name in OTHER_INSTRUCTION_SETS}
    builds = [subprocess.Popen(["gcc", *native.BASE_FLAGS, *flags, "-DKERNEL_DOUBLE=1", "-o", str(libraries[name]),
                                str(native.SOURCE)]) for name, flags in OTHER_INSTRUCTION_SETS.items()]
    assert [build.wait(timeout=300) for build in builds] == [0] * len(builds)
    loaded = native.load(torch.float64)
    dictionary, signals = random_problem()
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    expected, _ = native.omp(gram, projections, 9)
    reference = {}
    for exact in (False, True):
        atoms, new_codes, sq_error = dictionary.clone(), expected.clone(), torch.empty(4, dtype=torch.float64)
        native.update_atoms(signals, atoms, new_codes, sq_error, exact, False)
        reference[exact] = atoms, new_codes
    for name, library in libraries.items():
        variant = ctypes.CDLL(str(library))
        omp_kernel, atoms_kernel = variant.gpuksvd_omp_f64, variant.gpuksvd_atoms_f64
        omp_kernel.argtypes, omp_kernel.restype = loaded.omp.argtypes, loaded.omp.restype
        atoms_kernel.argtypes, atoms_kernel.restype = loaded.atoms.argtypes, loaded.atoms.restype
        codes = torch.empty_like(projections)
        omp_kernel(gram.data_ptr(), projections.data_ptr(), None, 0.0, 4, 80, 37, 9, codes.data_ptr())
        assert torch.allclose(codes, expected, atol=1e-12, rtol=0), name
        for exact in (False, True):
            atoms, new_codes, sq_error = dictionary.clone(), expected.clone(), torch.empty(4, dtype=torch.float64)
            stats = (ctypes.c_int64 * len(native.EXACT_STATS))()
            assert atoms_kernel(signals.data_ptr(), atoms.data_ptr(), new_codes.data_ptr(), sq_error.data_ptr(),
                                4, 80, 37, 24, int(exact), 0, loaded.syevr, stats) == 0
            assert torch.allclose(atoms, reference[exact][0], atol=1e-10), (name, exact)
            assert torch.allclose(new_codes, reference[exact][1], atol=1e-10), (name, exact)
