"""K-SVD dictionary learning for every location at once.

Aharon, Elad & Bruckstein (2006), with the approximate atom update of Rubinstein, Zibulevsky &
Elad (2008, Alg. 5). Each iteration sparse-codes all signals with :func:`~gpuksvd.sparse.batch_omp`,
then updates the atoms one after another (:mod:`~gpuksvd.sparse.atom_updates`), for all
locations at once. On the CPU both stages run in the native C kernel by default
(:mod:`~gpuksvd.sparse.native`), elsewhere as batched torch operations.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .atom_updates import plan_atom_updates, reconstruction_errors, run_update_pass
from .checks import check_atom_update, check_dead_atoms, check_dictionary, check_n_iter, check_n_nonzero, check_signals
from .dispatch import check_torch_only, resolve_kernel
from .dictionaries import initial_dictionary
from .inverse_factor import check_factor_layout
from .omp import code_tiles, omp_tiles, warn_dependent


@dataclass
class KSVDResult:
    """What :func:`ksvd` learned.

    Attributes
    ----------
    dictionary : Tensor of shape (P, K, C)
        Learned atoms, unit-norm rows.
    codes : Tensor of shape (P, N, K)
        Codes after the last atom update (OMP codes when ``n_iter=0``).
    history : list of float
        Relative reconstruction error ``‖X − Γ D‖_F / ‖X‖_F`` over all locations, after each
        iteration's atom updates (empty when ``n_iter=0``).
    location_error : Tensor of shape (n_iter + 1, P)
        Relative reconstruction error per location: row 0 for the OMP codes of the initial
        dictionary, row i for the codes after iteration i.
    """

    dictionary: Tensor
    codes: Tensor
    history: list[float] = field(default_factory=list)
    location_error: Tensor | None = None


def ksvd(
    signals: Tensor,
    n_atoms: int,
    n_nonzero: int,
    n_iter: int = 20,
    *,
    init: str | Tensor = "dct",
    atom_update: str = "approximate",
    dead_atoms: str = "replace",
    kernel: str = "auto",
    generator: torch.Generator | None = None,
    callback: Callable[[int, float], None] | None = None,
    max_memory: int | None = None,
    factor_layout: str = "auto",
    stream_residual: bool | None = None,
) -> KSVDResult:
    """Learn one dictionary per location with K-SVD.

    Parameters
    ----------
    signals : Tensor of shape (P, N, C)
        Training signals: N signals of C channels at each of P locations. Float32 or float64, on
        the CPU or a CUDA device (the computation runs where the signals are).
    n_atoms : int
        Atoms per dictionary, K ≤ N.
    n_nonzero : int
        Non-zeros per code (the paper uses K / 4).
    n_iter : int, default 20
        K-SVD iterations. 0 keeps the initial dictionary and only sparse-codes (the fixed
        dictionary mode).
    init : {"dct", "dct2d", "haar", "random"} or Tensor
        Initial dictionary, see :func:`~gpuksvd.sparse.dictionaries.initial_dictionary`.
    atom_update : {"approximate", "exact"}
        ``"approximate"``: one power step per atom (approximate K-SVD, as the reference PSDL
        code). ``"exact"``: the leading singular pair of the restricted residual, which never
        increases the error, to ``‖E_kᵀE_k d − σ²d‖ ≤ 8·eps·σ²``; its sign convention is
        ``⟨γ_new, γ_old⟩ ≥ 0`` (the approximate update's direction), the same on every kernel and
        device. See :func:`~gpuksvd.sparse.update_atoms`.
    dead_atoms : {"replace", "keep"}
        An atom used by no signal at a location is replaced by the worst-represented signal
        (``"replace"``, as scikit-learn) or left unchanged (``"keep"``, as the PSDL authors'
        ``sparselandtools``).
    kernel : {"auto", "torch", "native", "triton"}
        Implementation of OMP and the atom updates (:mod:`~gpuksvd.sparse.dispatch`): ``"auto"``
        runs the native C kernel for CPU float32/float64 signals when it builds (else, with one
        warning, and on CUDA, the torch path). ``"triton"`` (CUDA, opt-in): OMP as one fused
        Triton kernel per tile, the atom updates on the torch path. Same results up to rounding.
    generator : torch.Generator, optional
        Seeds ``init="random"``.
    callback : callable(iteration, relative_error), optional
        Called after each iteration (e.g. to drive a progress bar).
    max_memory : int, optional
        Working-memory budget in bytes per tile of work in flight (OMP tiles of locations or
        signals, atom-update tiles of locations); it also caps the CPU's cache-sized tiles.
        Default: see :func:`~gpuksvd.sparse.batch_omp`.
    factor_layout : {"auto", "matrices", "signals-last"}
        Torch kernel only: storage of OMP's inverse Cholesky factor, see
        :func:`~gpuksvd.sparse.batch_omp`.
    stream_residual : bool, optional
        Torch kernel only: how approximate atom updates reach the residual, see
        :func:`~gpuksvd.sparse.update_atoms` (default: decided from the cache size).

    Returns
    -------
    KSVDResult
    """
    check_signals(signals, n_atoms)
    check_atom_update(atom_update)
    check_dead_atoms(dead_atoms)
    check_n_iter(n_iter)
    check_factor_layout(factor_layout)
    kernel = resolve_kernel(kernel, signals)
    check_torch_only(kernel, factor_layout=factor_layout != "auto", stream_residual=stream_residual is not None)
    if kernel == "native":
        signals = signals.contiguous()  # the kernel reads whole locations in place
    n_locations, n_signals, n_features = signals.shape
    check_n_nonzero(n_nonzero, n_atoms, n_features)
    dictionary = initial_dictionary(init, n_locations, n_atoms, n_features, generator=generator,
                                    dtype=signals.dtype, device=signals.device)
    check_dictionary(dictionary, signals)
    exact = atom_update == "exact"
    plan = plan_atom_updates(signals, n_atoms, exact, stream_residual, max_memory, kernel=kernel)

    codes = signals.new_zeros(n_locations, n_signals, n_atoms)
    signal_energy = signals.square().sum((1, 2))  # (P,)
    location_sq_error = signals.new_zeros(n_iter + 1, n_locations)
    tiles = omp_tiles(n_locations, n_signals, n_atoms, n_nonzero, signals.dtype, max_memory, signals.device,
                      kernel=kernel)
    history = []
    n_dependent = 0
    for iteration in range(n_iter + 1):
        if iteration != 1:  # iteration 1 starts from the initial coding: the atoms have not changed since
            n_dependent += code_tiles(signals, dictionary, codes, n_nonzero, tiles, factor_layout=factor_layout,
                                      kernel=kernel)
        if iteration == 0:
            reconstruction_errors(signals, dictionary, codes, plan.tiles, location_sq_error[0])
            continue
        run_update_pass(signals, dictionary, codes, exact, plan, location_sq_error[iteration], dead_atoms)
        history.append(float((location_sq_error[iteration].sum() / signal_energy.sum().clamp_min(1e-30)).sqrt()))
        if callback is not None:
            callback(iteration, history[-1])
    warn_dependent(n_dependent)
    location_error = (location_sq_error / signal_energy.clamp_min(torch.finfo(signals.dtype).tiny)).sqrt()
    return KSVDResult(dictionary=dictionary, codes=codes, history=history, location_error=location_error)
