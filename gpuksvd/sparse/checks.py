"""Argument checks of the engine's public functions, one message per mistake.

The engine validates at its public boundary (:func:`~gpuksvd.sparse.batch_omp`,
:func:`~gpuksvd.sparse.ksvd`, :func:`~gpuksvd.sparse.update_atoms`) and then calls its kernels
without re-checking. Callers that want to fail earlier — before features are extracted, say —
call the same checks, so that a mistake reads the same wherever it is caught.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

ATOM_UPDATES = ("approximate", "exact")

#: Implementations of the kernels (:mod:`~gpuksvd.sparse.dispatch`): "auto" picks one per call.
KERNELS = ("auto", "torch", "native", "triton")

#: What an atom update does with an atom that no signal uses at a location: "replace" it by the
#: worst-represented signal, or "keep" it unchanged.
DEAD_ATOMS = ("replace", "keep")


def is_integer(value) -> bool:
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_signal_shape(signals: Tensor) -> None:
    if not isinstance(signals, Tensor) or signals.ndim != 3:
        raise ValueError(
            f"signals must be a tensor of shape (P, N, C) (locations, signals, channels), got "
            f"{type(signals).__name__} of shape {tuple(getattr(signals, 'shape', ()))}"
        )


def check_n_nonzero(n_nonzero: int, n_atoms: int, n_features: int) -> None:
    if not is_integer(n_nonzero) or not 1 <= n_nonzero <= min(n_atoms, n_features):
        raise ValueError(
            f"n_nonzero must be an integer in [1, min(n_atoms, n_features)] = [1, {min(n_atoms, n_features)}], "
            f"got {n_nonzero!r}"
        )


def check_n_iter(n_iter: int) -> None:
    """K-SVD iterations: a non-negative integer, 0 meaning the fixed initial dictionary."""
    if not is_integer(n_iter) or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer (0: fixed initial dictionary), got {n_iter!r}")


def check_atom_update(atom_update: str) -> None:
    if atom_update not in ATOM_UPDATES:
        raise ValueError(f"unknown atom_update {atom_update!r}: choose one of {', '.join(ATOM_UPDATES)}")


def check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {', '.join(KERNELS)} ('auto': the native C "
                         "kernel on the CPU for float32/float64 when it builds, the torch path elsewhere; "
                         "'triton': the fused Batch-OMP on CUDA, opt-in)")


def check_dead_atoms(dead_atoms: str) -> None:
    if dead_atoms not in DEAD_ATOMS:
        raise ValueError(f"unknown dead_atoms {dead_atoms!r}: choose 'replace' (an unused atom takes the "
                         "worst-represented signal) or 'keep' (an unused atom stays as it is)")


def check_n_atoms(n_atoms: int) -> None:
    if not is_integer(n_atoms) or n_atoms < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms!r}")


def check_enough_signals(n_signals: int, n_atoms: int, where: str = "") -> None:
    """K-SVD needs at least as many training signals (images) per location as atoms.

    ``where`` names the feature set in the message (e.g. ``" on 'block10' (112 channels)"``).
    """
    if n_signals < n_atoms:
        raise ValueError(
            f"need at least {n_atoms} training images for {n_atoms}-atom dictionaries{where}: n_atoms={n_atoms} "
            f"but only N={n_signals} signals per location, got {n_signals} training images. Add training images "
            f"(at least {n_atoms}), or use fewer atoms (ksvd.n_atoms, a layer with fewer channels, or "
            "backbone.trim_to_square=true)"
        )


def check_signals(signals: Tensor, n_atoms: int) -> None:
    """The training signals of :func:`~gpuksvd.sparse.ksvd`: shape, dtype, count, finiteness."""
    check_signal_shape(signals)
    if not signals.dtype.is_floating_point:
        raise ValueError(f"signals must be float32 or float64, got {signals.dtype}: convert with .float()")
    check_n_atoms(n_atoms)
    check_enough_signals(signals.shape[1], n_atoms)
    if not bool(torch.isfinite(signals).all()):
        raise ValueError("signals contain NaN or infinite values: check the feature extraction / inputs")


def check_dictionary(dictionary: Tensor, signals: Tensor) -> Tensor:
    """Validate the (dictionary, signals) pair and return the dictionary as (P, K, C)."""
    check_signal_shape(signals)
    if not isinstance(dictionary, Tensor) or dictionary.ndim not in (2, 3):
        raise ValueError(
            "dictionary must be a tensor of shape (P, K, C) or (K, C), got "
            f"{type(dictionary).__name__} of shape {tuple(getattr(dictionary, 'shape', ()))}"
        )
    if not signals.dtype.is_floating_point or dictionary.dtype != signals.dtype:
        raise ValueError(
            f"signals and dictionary must share one floating dtype, got {signals.dtype} and "
            f"{dictionary.dtype}: convert with .to(torch.float32) or .double()"
        )
    if dictionary.device != signals.device:
        raise ValueError(f"signals are on {signals.device} but the dictionary is on {dictionary.device}")
    if dictionary.ndim == 2:
        dictionary = dictionary.expand(signals.shape[0], *dictionary.shape)
    if dictionary.shape[0] != signals.shape[0] or dictionary.shape[2] != signals.shape[2]:
        raise ValueError(
            f"dictionary of shape {tuple(dictionary.shape)} (P, K, C) does not match signals of shape "
            f"{tuple(signals.shape)} (P, N, C): P and C must agree"
        )
    return dictionary


def check_codes(codes: Tensor, signals: Tensor, n_atoms: int) -> None:
    """Codes (P, N, K) that go with signals (P, N, C) and a K-atom dictionary."""
    expected = (*signals.shape[:2], n_atoms)
    if not isinstance(codes, Tensor) or tuple(codes.shape) != expected:
        raise ValueError(f"codes must have shape {expected} (P, N, K), got {tuple(getattr(codes, 'shape', ()))}")
    if codes.dtype != signals.dtype or codes.device != signals.device:
        raise ValueError(f"codes must be {signals.dtype} on {signals.device} like the signals, got "
                         f"{codes.dtype} on {codes.device}")
