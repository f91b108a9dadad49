"""Which implementation of the engine's kernels runs: the one place that decides.

* ``"torch"``: tensor operations batched over locations and signals; any device and dtype.
* ``"native"``: the C kernels of :mod:`~gpuksvd.sparse.native`; CPU float32 / float64 only.
* ``"auto"``: native for CPU float32 / float64 tensors when it builds here (and
  ``GPUKSVD_NATIVE=0`` is not set), torch everywhere else. When the native kernel cannot be built,
  one :class:`~gpuksvd.sparse.native.NativeKernelWarning` says why and the torch path runs.

(A CUDA kernel would join here as another value resolved from ``"auto"``.)
"""
from __future__ import annotations

import warnings

from torch import Tensor

from . import native
from .checks import check_kernel

_warned = False


def resolve_kernel(kernel: str, like: Tensor) -> str:
    """``"torch"`` or ``"native"``: what ``kernel`` (validated) means for tensors like ``like``.

    Raises
    ------
    ValueError
        ``kernel="native"`` for tensors it does not handle (CUDA, other dtypes).
    NativeKernelUnavailable
        ``kernel="native"`` where it cannot be built (the message says why).
    """
    global _warned
    check_kernel(kernel)
    if kernel == "torch":
        return "torch"
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


def check_torch_only(kernel: str, **options) -> None:
    """Options that only the torch path has must keep their defaults with the native kernel.

    ``options`` maps an argument name to whether the caller set it (e.g.
    ``stream_residual=stream_residual is not None``).
    """
    if kernel != "native":
        return
    for name, given in options.items():
        if given:
            raise ValueError(f"{name} chooses how the torch kernel works and has no meaning for the native "
                             f"kernel: pass kernel='torch' with it, or leave it at its default")
