"""Which implementation of the engine's kernels runs: the one place that decides.

* ``"torch"``: tensor operations batched over locations and signals; any device and dtype.
* ``"native"``: the C kernels of :mod:`~gpuksvd.sparse.native`; CPU float32 / float64 only.
* ``"triton"``: Batch-OMP as one fused Triton kernel (:mod:`~gpuksvd.sparse.triton_omp`) on
  CUDA float32 / float64 tensors, the atom updates on the torch path. Opt-in: ``"auto"`` will
  choose it on CUDA only once a GPU measurement in ``benchmarks/RESULTS.md`` shows it faster than
  the torch path (``benchmarks/gpu_check.sh`` makes that measurement; none has run yet).
* ``"auto"``: native for CPU float32 / float64 tensors when it builds here (and
  ``GPUKSVD_NATIVE=0`` is not set), torch everywhere else. When the native kernel cannot be built,
  one :class:`~gpuksvd.sparse.native.NativeKernelWarning` says why and the torch path runs.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import native
from .checks import check_kernel

_warned = False


def resolve_kernel(kernel: str, like: Tensor) -> str:
    """``"torch"``, ``"native"`` or ``"triton"``: what ``kernel`` (validated) means for tensors
    like ``like``.

    Raises
    ------
    ValueError
        ``kernel="native"`` or ``"triton"`` for tensors it does not handle (other devices or
        dtypes), or ``"triton"`` without Triton.
    NativeKernelUnavailable
        ``kernel="native"`` where it cannot be built (the message says why).
    """
    global _warned
    check_kernel(kernel)
    if kernel == "torch":
        return "torch"
    if kernel == "triton":
        return _resolve_triton(like)
    if kernel == "native":
        if not native.supports(like):
            raise ValueError(f"kernel='native' runs on CPU float32/float64 tensors, got {like.dtype} on "
                             f"{like.device}: use kernel='auto' (the torch path there) or kernel='torch'")
        native.load(like.dtype)
        return "native"
    if not native.supports(like) or native.disabled():
        return "torch"
    try:
        native.load(like.dtype)
    except native.NativeKernelUnavailable as error:
        if not _warned:
            _warned = True
            warnings.warn(f"gpuksvd's native CPU kernel is unavailable, using the slower torch path: {error}",
                          native.NativeKernelWarning, stacklevel=3)
        return "torch"
    return "native"


def _resolve_triton(like: Tensor) -> str:
    try:
        from . import triton_omp
    except ImportError as error:
        raise ValueError(f"kernel='triton' needs Triton, which ships with the CUDA build of torch ({error}): "
                         "install torch for CUDA, or use kernel='auto'") from error
    supported = like.dtype in (torch.float32, torch.float64) and (like.is_cuda or triton_omp.interpreting())
    if not supported:
        raise ValueError(f"kernel='triton' runs on CUDA float32/float64 tensors, got {like.dtype} on {like.device}: "
                         "use kernel='auto' (the native C kernel on the CPU)")
    return "triton"


#: Options of the torch path that the Triton kernel keeps: it replaces OMP only.
_TRITON_KEEPS = frozenset({"stream_residual"})


def check_torch_only(kernel: str, **options) -> None:
    """Options that only the torch path has must keep their defaults with the native kernel (and,
    for the torch OMP's options, with the Triton kernel).

    ``options`` maps an argument name to whether the caller set it (e.g.
    ``stream_residual=stream_residual is not None``).
    """
    if kernel == "torch":
        return
    for name, given in options.items():
        if given and not (kernel == "triton" and name in _TRITON_KEEPS):
            raise ValueError(f"{name} chooses how the torch kernel works and has no meaning for the {kernel} "
                             f"kernel: pass kernel='torch' with it, or leave it at its default")
