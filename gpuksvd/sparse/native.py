"""The native CPU kernels: ``kernels.c``, compiled on first use and called through ctypes.

Two kernels, each for CPU float32 and float64 tensors, with the semantics of the torch path:

* :func:`omp`: Batch-OMP of every (location, signal) pair of a tile, one signal at a time with
  its whole pursuit in cache (the torch path runs each step as a few operations over all signals).
* :func:`update_atoms`: one K-SVD atom-update pass (approximate or exact) over whole locations,
  atom by atom on each atom's users only, the residual formed from the sparse codes.

``kernels.c`` says how they work. The calls release the GIL, so the tiles of
:mod:`~gpuksvd.sparse.tiling` run them concurrently, one per core.

Build: at the first use of a dtype, ``kernels.c`` (package data) is compiled with ``$CC`` (else
``cc``, else ``gcc``) and ``-O3 -march=native`` into ``gpuksvd.files.cache_dir() / "kernels"``. The
file name carries a hash of the source and one of the compiler, its version, the flags and the
CPU (``-march=native`` builds for this CPU only); the library is written under a temporary name and
renamed into place, so concurrent processes never load half a file, and builds of other source
versions are removed then. Without a working compiler, :func:`load` raises
:class:`NativeKernelUnavailable` (remembered: a failed build is not retried in the process) and
``kernel="auto"`` falls back to the torch path with one :class:`NativeKernelWarning`
(:mod:`~gpuksvd.sparse.dispatch`). ``GPUKSVD_NATIVE=0`` in the environment makes ``"auto"`` take the
torch path without trying.

The exact update's rare fallback (near-ties of the two largest singular values) calls LAPACK's
``?syevr`` through the pointer that ``scipy.linalg.cython_lapack`` exports: the kernel links to
nothing, and scipy is a dependency of the package.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import typing
from pathlib import Path

import torch
from torch import Tensor

from ..files import cache_dir

SOURCE = Path(__file__).with_name("kernels.c")

#: Set to 0 to keep ``kernel="auto"`` on the torch path (``kernel="native"`` still builds).
DISABLE_ENV = "GPUKSVD_NATIVE"

#: Compiler flags. No -ffast-math: the results are those of the IEEE arithmetic written in the source.
BASE_FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno")

#: Seconds a compilation may take before it counts as failed.
BUILD_TIMEOUT = 300

_DTYPES = {torch.float32: ("f32", 0), torch.float64: ("f64", 1)}

#: Counters of the exact update (``update_atoms``' return value), in the kernel's order.
EXACT_STATS = ("solved", "steps", "restarts", "fallbacks")


class NativeKernelUnavailable(RuntimeError):
    """The native kernel could not be built or loaded (no compiler, compile error, no LAPACK)."""


class NativeKernelWarning(UserWarning):
    """``kernel="auto"`` fell back to the (slower) torch path because the native kernel is unavailable."""


def supports(like: Tensor) -> bool:
    """Whether the native kernel handles tensors like ``like``: CPU, float32 or float64."""
    return like.device.type == "cpu" and like.dtype in _DTYPES


def disabled() -> bool:
    """``GPUKSVD_NATIVE=0`` (or false/no/off) is set: ``kernel="auto"`` stays on the torch path."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def kernel_dir() -> Path:
    """Where the built kernels go: ``gpuksvd.files.cache_dir() / "kernels"``."""
    return cache_dir() / "kernels"


def _cpu_signature() -> tuple[str, str]:
    """CPU model and ISA flags (part of the build key: ``-march=native``)."""
    model, flags = platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and model == platform.machine():
                    model += " " + line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = line.split(":", 1)[1].strip()
                if flags and model != platform.machine():
                    break
    except OSError:
        pass
    return model, flags


def _tuning_flags() -> tuple[str, ...]:
    """64-byte vectors and register blocks of up to 16 with AVX-512's 32 registers, else 32 bytes
    and 8 (measured: 32-byte vectors are 1.35x slower on an AVX-512 CPU, ``benchmarks/RESULTS.md``)."""
    if "avx512f" in _cpu_signature()[1].split():
        return ("-DVEC_BYTES=64", "-DMAX_BLOCK=16")
    return ("-DVEC_BYTES=32", "-DMAX_BLOCK=8")


def _compiler() -> str:
    """``$CC`` when set (it must exist), else the first of cc, gcc on the PATH."""
    chosen = os.environ.get("CC")
    for candidate in (chosen,) if chosen else ("cc", "gcc"):
        if shutil.which(candidate):
            return candidate
    raise NativeKernelUnavailable(
        f"no C compiler found ({'$CC=' + chosen if chosen else 'cc or gcc'} is not on the PATH): install gcc "
        f"(e.g. apt-get install gcc) or set $CC to build gpuksvd's native kernel, or pass kernel='torch' "
        f"(or set {DISABLE_ENV}=0) to use the slower torch path without this warning")


@functools.lru_cache(maxsize=None)
def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeKernelUnavailable(f"the C compiler {compiler!r} does not run: {error}") from error


def source_hash() -> str:
    """First 16 hex digits of the source's SHA-256: builds with another one are stale."""
    try:
        return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    except OSError as error:
        raise NativeKernelUnavailable(f"the native kernel's source {SOURCE} is missing from this installation "
                                      f"({error}): reinstall gpuksvd (it is package data)") from error


def library_path(dtype: torch.dtype, folder: Path | None = None) -> tuple[Path, str, tuple[str, ...]]:
    """Where the kernel for ``dtype`` is built, with the compiler and the flags that build it."""
    tag, is_double = _DTYPES[dtype]
    compiler = _compiler()
    flags = (*BASE_FLAGS, *_tuning_flags(), f"-DKERNEL_DOUBLE={is_double}")
    key = hashlib.sha256()
    for part in (compiler, _compiler_version(compiler), " ".join(flags), *_cpu_signature()):
        key.update(part.encode())
        key.update(b"\0")
    folder = kernel_dir() if folder is None else folder
    return folder / f"kernels-{source_hash()}-{tag}-{key.hexdigest()[:16]}.so", compiler, flags


_BUILD_NAME = re.compile(r"kernels-([0-9a-f]{16})-f(32|64)-[0-9a-f]{16}\.so")


def prune_stale_builds(folder: Path, keep_hash: str) -> list[Path]:
    """Remove the builds in ``folder`` made from another version of the source; returns them.

    A process still using one keeps its mapping (POSIX unlink), so this is safe while others run.
    """
    removed = []
    for path in folder.glob("kernels-*.so"):
        match = _BUILD_NAME.fullmatch(path.name)
        if match and match.group(1) != keep_hash:
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass  # another process removed it first, or the folder is read-only: harmless
    return removed


def build(dtype: torch.dtype, folder: Path | None = None) -> Path:
    """The compiled kernel for ``dtype``, built if it is not in ``folder`` yet (default
    :func:`kernel_dir`). Raises :class:`NativeKernelUnavailable` when it cannot be built."""
    target, compiler, flags = library_path(dtype, folder)
    if target.exists():
        return target
    temporary = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name in the same folder, then a rename: atomic on POSIX, so a
        # concurrent process sees no library or a whole one (both may build; the content is the same).
        handle, temporary = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.so", dir=target.parent)
        os.close(handle)
        command = [compiler, *flags, "-o", temporary, str(SOURCE)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            raise NativeKernelUnavailable(f"compiling gpuksvd's native kernel failed ({' '.join(command)}):\n"
                                          f"{done.stderr[-3000:]}")
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeKernelUnavailable(f"building gpuksvd's native kernel into {target.parent} failed: {error}; "
                                      "set $GPUKSVD_CACHE to a writable folder, or pass kernel='torch'") from error
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
    prune_stale_builds(target.parent, source_hash())
    return target


class Kernels(typing.NamedTuple):
    """The loaded entry points for one dtype, and LAPACK's ?syevr for the exact update's fallback."""

    omp: typing.Any
    atoms: typing.Any
    syevr: int


def _lapack_syevr(dtype: torch.dtype) -> int:
    """Address of LAPACK's ssyevr / dsyevr as scipy.linalg.cython_lapack exports it."""
    try:
        from scipy.linalg import cython_lapack
    except ImportError as error:
        raise NativeKernelUnavailable(f"the native kernel's exact update needs scipy's LAPACK: {error}") from error
    capsule = cython_lapack.__pyx_capi__["dsyevr" if dtype == torch.float64 else "ssyevr"]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def _load_library(dtype: torch.dtype, folder: Path) -> Kernels:
    path = build(dtype, folder)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        raise NativeKernelUnavailable(f"loading {path} failed: {error}; delete it to rebuild") from error
    tag, _ = _DTYPES[dtype]
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    omp_kernel = getattr(library, f"gpuksvd_omp_{tag}")
    omp_kernel.argtypes = [pointer, pointer, pointer, ctypes.c_double, size, size, size, size, pointer]
    omp_kernel.restype = size
    atoms_kernel = getattr(library, f"gpuksvd_atoms_{tag}")
    atoms_kernel.argtypes = [pointer, pointer, pointer, pointer, size, size, size, size, size, size, pointer, pointer]
    atoms_kernel.restype = size
    return Kernels(omp_kernel, atoms_kernel, _lapack_syevr(dtype))


_LOCK = threading.Lock()
_LOADED: dict[tuple, Kernels | NativeKernelUnavailable] = {}


def load(dtype: torch.dtype) -> Kernels:
    """The kernels for ``dtype``, built on first use; raises :class:`NativeKernelUnavailable`.

    The outcome is remembered per (dtype, ``$CC``), failures included, so a machine without a
    compiler pays for one failed attempt per process, not one per tile; a library once loaded
    serves the process even if ``$GPUKSVD_CACHE`` changes afterwards (no rebuild in a new folder).
    """
    if dtype not in _DTYPES:
        raise NativeKernelUnavailable(f"the native kernel computes in float32 and float64, not {dtype}")
    folder = kernel_dir().resolve()
    memo = (dtype, os.environ.get("CC"))
    with _LOCK:  # one build per process even when every tile's thread asks at once
        if memo not in _LOADED:
            try:
                _LOADED[memo] = _load_library(dtype, folder)
            except NativeKernelUnavailable as error:
                _LOADED[memo] = error
        result = _LOADED[memo]
    if isinstance(result, NativeKernelUnavailable):
        raise result
    return result


def available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the native kernel for ``dtype`` can be built and loaded here (builds it if needed)."""
    try:
        load(dtype)
    except NativeKernelUnavailable:
        return False
    return True


def _pointer(tensor: Tensor) -> int:
    return tensor.data_ptr()


def omp(gram: Tensor, projections: Tensor, n_nonzero: int, sq_norms: Tensor | None = None,
        tol: float | None = None) -> tuple[Tensor, int]:
    """Batch-OMP of a tile with the native kernel, on the calling thread.

    Parameters
    ----------
    gram : Tensor of shape (P, K, K)
    projections : Tensor of shape (P, N, K)
        ``α⁰ = signals @ dictionaryᵀ``, same dtype, on the CPU.
    n_nonzero : int
    sq_norms : Tensor of shape (P, N), needed with ``tol``
        Squared norms of the signals.
    tol : float, optional
        Stop a signal once its squared residual norm is ≤ ``tol``.

    Returns
    -------
    codes : Tensor of shape (P, N, K)
    n_dependent : int
        Pursuits that stopped on a linearly dependent atom.
    """
    kernels = load(projections.dtype)
    n_locations, n_signals, n_atoms = projections.shape
    gram, projections = gram.contiguous(), projections.contiguous()
    codes = torch.empty_like(projections)  # every row is written by the kernel
    if codes.numel() == 0:
        return codes, 0
    norms_pointer, tol_value = None, 0.0
    if tol is not None:
        sq_norms = sq_norms.to(projections.dtype).contiguous()
        norms_pointer, tol_value = _pointer(sq_norms), float(tol)
    n_dependent = kernels.omp(_pointer(gram), _pointer(projections), norms_pointer, tol_value, n_locations,
                              n_signals, n_atoms, int(n_nonzero), _pointer(codes))
    if n_dependent < 0:
        raise MemoryError("the native OMP kernel could not allocate its workspace")
    return codes, int(n_dependent)


def update_atoms(signals: Tensor, dictionary: Tensor, codes: Tensor, sq_error: Tensor, exact: bool,
                 keep_dead: bool) -> dict[str, int]:
    """One K-SVD atom-update pass over whole locations with the native kernel, in place, on the
    calling thread.

    Parameters
    ----------
    signals : Tensor of shape (P, N, C)
    dictionary : Tensor of shape (P, K, C), updated in place
    codes : Tensor of shape (P, N, K), updated in place
    sq_error : Tensor of shape (P,)
        Receives ``‖X − Γ D‖²_F`` of each location after the pass.
    exact : bool
        Leading singular pair of each restricted residual (True) or one power step (False).
    keep_dead : bool
        Leave atoms that no signal uses unchanged (True) or replace them by the worst-represented
        signal (False).

    All four tensors must be contiguous CPU tensors of one dtype (views of whole locations are).

    Returns
    -------
    dict
        The exact update's counters (:data:`EXACT_STATS`): Lanczos solves, products with ``EᵀE``,
        restarts, LAPACK fallbacks.
    """
    tensors = (signals, dictionary, codes, sq_error)
    if any(not t.is_contiguous() or t.dtype != signals.dtype or t.device.type != "cpu" for t in tensors):
        raise ValueError("native.update_atoms needs contiguous CPU tensors of one dtype")
    kernels = load(signals.dtype)
    n_locations, n_signals, n_features = signals.shape
    stats = (ctypes.c_int64 * len(EXACT_STATS))()
    status = kernels.atoms(_pointer(signals), _pointer(dictionary), _pointer(codes), _pointer(sq_error),
                           n_locations, n_signals, dictionary.shape[1], n_features, int(exact), int(keep_dead),
                           kernels.syevr, stats)
    if status < 0:
        raise MemoryError("the native atom-update kernel could not allocate its workspace (or LAPACK failed)")
    return dict(zip(EXACT_STATS, stats))
