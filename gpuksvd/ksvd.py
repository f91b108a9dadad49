"""K-SVD dictionary learning for every location at once.

Aharon, Elad & Bruckstein (2006), with the approximate atom update of Rubinstein, Zibulevsky &
Elad (2008, Alg. 5). Each iteration sparse-codes all signals with :func:`~gpuksvd.batch_omp`,
then updates the atoms one after another (each update sees the previous ones), for all
locations at once. The residual ``E = X − Γ D`` is kept and updated by rank-1 corrections, so an
atom update costs a few passes over E instead of recomputing it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._chunks import cpu_cache_bytes, location_chunks, run_chunks
from .dictionaries import initial_dictionary
from .omp import _check_dictionary, _check_n_nonzero, _check_signal_shape, _gram_omp, _warn_dependent, omp_tiles

ATOM_UPDATES = ("approximate", "exact")


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
    generator: torch.Generator | None = None,
    callback: Callable[[int, float], None] | None = None,
    max_memory: int | None = None,
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
        Initial dictionary, see :func:`~gpuksvd.dictionaries.initial_dictionary`.
    atom_update : {"approximate", "exact"}
        ``"approximate"``: one power step per atom (approximate K-SVD, as the reference PSDL
        code). ``"exact"``: the leading singular pair of the restricted residual, which never
        increases the error.
    generator : torch.Generator, optional
        Seeds ``init="random"``.
    callback : callable(iteration, relative_error), optional
        Called after each iteration (e.g. to drive a progress bar).
    max_memory : int, optional
        Working-memory budget in bytes per piece of work in flight (OMP tiles of locations or
        signals, atom-update groups of locations); it also caps the CPU's cache-sized groups.
        Default: see :func:`~gpuksvd.batch_omp`.

    Returns
    -------
    KSVDResult
    """
    _check_signals(signals, n_atoms)
    if atom_update not in ATOM_UPDATES:
        raise ValueError(f"atom_update must be one of {ATOM_UPDATES}, got {atom_update!r}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    n_locations, n_signals, n_features = signals.shape
    _check_n_nonzero(n_nonzero, n_atoms, n_features)
    dictionary = initial_dictionary(init, n_locations, n_atoms, n_features, generator=generator,
                                    dtype=signals.dtype, device=signals.device)
    _check_dictionary(dictionary, signals)

    codes = signals.new_zeros(n_locations, n_signals, n_atoms)
    signal_energy = signals.square().sum((1, 2))  # (P,)
    location_sq_error = signals.new_zeros(n_iter + 1, n_locations)
    tiles = omp_tiles(n_locations, n_signals, n_atoms, n_nonzero, signals.dtype, max_memory, signals.device)
    exact = atom_update == "exact"
    streamed, update_groups = _atom_update_plan(signals, n_atoms, exact, max_memory)
    history = []
    n_dependent = 0
    for iteration in range(n_iter + 1):
        if iteration != 1:  # iteration 1 starts from the initial coding: the atoms have not changed since
            n_dependent += _code_tiles(signals, dictionary, codes, n_nonzero, tiles)
        if iteration == 0:
            _reconstruction_errors(signals, dictionary, codes, update_groups, location_sq_error[0])
            continue
        _update_groups_of_atoms(signals, dictionary, codes, exact, streamed, update_groups, location_sq_error[iteration])
        history.append(float((location_sq_error[iteration].sum() / signal_energy.sum().clamp_min(1e-30)).sqrt()))
        if callback is not None:
            callback(iteration, history[-1])
    _warn_dependent(n_dependent)
    location_error = (location_sq_error / signal_energy.clamp_min(torch.finfo(signals.dtype).tiny)).sqrt()
    return KSVDResult(dictionary=dictionary, codes=codes, history=history, location_error=location_error)


def _code_tiles(signals: Tensor, dictionary: Tensor, codes: Tensor, n_nonzero: int,
                tiles: list[tuple[slice, slice]]) -> int:
    """OMP codes of every (locations, signals) tile into ``codes`` (P, N, K). Returns the number
    of pursuits that stopped on a linearly dependent atom."""

    def code(tile: tuple[slice, slice]) -> int:
        locations, rows = tile
        x, atoms = signals[locations, rows], dictionary[locations]
        codes[locations, rows], n_dependent = _gram_omp(atoms @ atoms.mT, x @ atoms.mT, n_nonzero)
        return n_dependent

    return sum(run_chunks(code, tiles, signals.device))


def _reconstruction_errors(signals: Tensor, dictionary: Tensor, codes: Tensor, groups: list[slice],
                           sq_error: Tensor) -> None:
    """Squared reconstruction error of each location into ``sq_error`` (P,)."""

    def measure(group: slice) -> None:
        sq_error[group] = (signals[group] - codes[group] @ dictionary[group]).square().sum((1, 2))

    run_chunks(measure, groups, signals.device)


def _update_groups_of_atoms(signals: Tensor, dictionary: Tensor, codes: Tensor, exact: bool, streamed: bool,
                            groups: list[slice], sq_error: Tensor) -> None:
    """One atom-update pass over every group of locations, in place; each location's squared
    reconstruction error afterwards goes to ``sq_error`` (P,)."""

    def update(group: slice) -> None:
        # Views of the group's locations: the update writes through to dictionary and codes.
        x, atoms, group_codes = signals[group], dictionary[group], codes[group]
        residual = x - group_codes @ atoms
        _update_atoms(x, atoms, group_codes, residual, exact, streamed)
        sq_error[group] = residual.square().sum((1, 2))

    run_chunks(update, groups, signals.device)


def _gathered_bytes_per_location(n_signals: int, n_atoms: int, n_features: int, dtype: torch.dtype) -> int:
    """Working memory of :func:`_update_atoms_gathered` per location: the residual, each atom's
    sorted users (int64) and the largest gathered block."""
    itemsize = torch.finfo(dtype).bits // 8
    return n_signals * (2 * n_features * itemsize + n_atoms * 10)


def _streamed_bytes_per_location(n_signals: int, n_atoms: int, n_features: int, dtype: torch.dtype) -> int:
    """What :func:`_update_atoms_streamed` reads for every atom: residual, transposed codes, their mask."""
    return n_signals * (n_features + n_atoms) * (torch.finfo(dtype).bits // 8) + n_signals * n_atoms


def _group_cache_budget() -> int:
    """The share of the last-level cache for one group of locations: one group runs per core."""
    return cpu_cache_bytes() // max(1, torch.get_num_threads())


def _streams_residual(signals: Tensor, n_atoms: int, exact: bool) -> bool:
    """Whether the approximate atom update should stream the whole residual (see :func:`_update_atoms`)."""
    n_signals, n_features = signals.shape[1:]
    return (not exact and signals.device.type == "cpu"
            and _streamed_bytes_per_location(n_signals, n_atoms, n_features, signals.dtype) <= _group_cache_budget())


def _atom_update_plan(signals: Tensor, n_atoms: int, exact: bool, max_memory: int | None) -> tuple[bool, list[slice]]:
    """Whether the atom updates stream the residual, and their location groups: within the memory
    budget, and when streaming, sized for the residual to stay in the CPU's last-level cache.

    Decided once, before the groups run (inside them torch runs single-threaded, which would
    change the cache share).
    """
    n_locations, n_signals, n_features = signals.shape
    if not _streams_residual(signals, n_atoms, exact):
        per_location = _gathered_bytes_per_location(n_signals, n_atoms, n_features, signals.dtype)
        return False, location_chunks(n_locations, per_location, max_memory, signals.device)
    per_location = _streamed_bytes_per_location(n_signals, n_atoms, n_features, signals.dtype)
    budget = _group_cache_budget() if max_memory is None else min(_group_cache_budget(), max_memory)
    return True, location_chunks(n_locations, per_location, budget, signals.device)


def _update_atoms(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor, exact: bool,
                  streamed: bool | None = None) -> None:
    """One K-SVD atom-update pass, in place, for a group of locations.

    Each atom is updated from the residual rows of the signals that use it (about T/K of them).
    Two ways to get there, with the same result up to rounding order:

    * gathered: copy those rows into a compact block, work there, scatter them back. It moves
      about T/K of the residual per atom, which is what counts on a GPU and whenever the
      residual does not fit in cache (measured on 2 CPU cores at WRN-50 scale: 1.2 ms per atom
      and location, against 2.2 ms streamed).
    * streamed (approximate update on the CPU, when the group's residual fits in its share of
      the last-level cache): work on all N rows with the non-users' codes at zero. Four times
      the arithmetic, but no gathers, scatters or sorting, and the residual stays in cache
      (EN-B6 scale, 2 cores: 33 ms per location for all 200 atoms, against 55-62 ms gathered).

    Parameters
    ----------
    signals : Tensor of shape (P, N, C)
    dictionary : Tensor of shape (P, K, C), updated in place
    codes : Tensor of shape (P, N, K), updated in place
    residual : Tensor of shape (P, N, C)
        ``signals − codes @ dictionary``, kept equal to it as atoms change.
    exact : bool
        Leading singular pair (True) or one power step (False).
    streamed : bool, optional
        Stream the residual (approximate updates only); by default when it fits in the cache.
    """
    if streamed is None:
        streamed = _streams_residual(signals, dictionary.shape[1], exact)
    if streamed and not exact:
        _update_atoms_streamed(signals, dictionary, codes, residual)
    else:
        _update_atoms_gathered(signals, dictionary, codes, residual, exact)


def _update_atoms_gathered(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor, exact: bool) -> None:
    """The atom updates on compact blocks of the users' residual rows (see :func:`_update_atoms`).

    Locations of a group are padded to the largest user count with non-users, whose codes are
    zero and so contribute nothing.
    """
    n_locations, n_signals, n_features = signals.shape
    # Supports do not change during the pass: list every atom's users once, users first.
    unused = (codes == 0).transpose(1, 2).to(torch.uint8)  # (P, K, N)
    users = unused.sort(dim=-1, stable=True).indices  # (P, K, N)
    user_counts = (unused == 0).sum(-1)  # (P, K)
    widths = user_counts.amax(0).tolist()  # per atom, the largest user count over locations
    dead_atoms = _dead_atoms(user_counts)
    taken = torch.zeros(n_locations, n_signals, dtype=torch.bool, device=signals.device)
    flat_residual = residual.view(n_locations * n_signals, n_features)
    users += (torch.arange(n_locations, device=users.device) * n_signals).view(-1, 1, 1)  # rows of flat_residual
    flat_codes = codes.view(n_locations * n_signals, -1)
    for k, width in enumerate(widths):
        old_atom = dictionary[:, k].clone()  # (P, C)
        rows = users[:, k, : max(width, 1)].reshape(-1)  # (P·M,) whole-row copies, not element gathers
        block = flat_residual.index_select(0, rows).view(n_locations, -1, n_features)  # (P, M, C)
        old_codes = flat_codes[:, k].index_select(0, rows).view(n_locations, -1)  # (P, M)
        used = old_codes != 0
        if exact:
            # E_k = E + γ_k d_kᵀ restricted to the signals that use atom k.
            restricted = (block + old_codes[..., None] * old_atom[:, None, :]) * used[..., None]
            left, singular, right_h = torch.linalg.svd(restricted, full_matrices=False)
            new_atom = right_h[:, 0]
            new_codes = left[..., 0] * singular[:, :1] * used
        else:
            new_atom, new_codes = _power_step(block, old_codes, old_atom, used)
        if k in dead_atoms:
            dead = user_counts[:, k] == 0  # (P,)
            new_atom = torch.where(dead[:, None], _worst_signal(signals, residual, taken, dead, old_atom), new_atom)
        _rank_two_update(block, old_codes, old_atom, new_codes, new_atom)
        flat_residual.index_copy_(0, rows, block.view(-1, n_features))
        dictionary[:, k] = new_atom
        flat_codes[:, k].index_copy_(0, rows, new_codes.reshape(-1))


#: Atoms whose residual corrections the streamed update defers and applies as one product.
STREAMED_BLOCK = 16


def _update_atoms_streamed(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor) -> None:
    """The approximate atom updates over all N residual rows (see :func:`_update_atoms`).

    The rank-2 corrections of the residual are deferred over blocks of :data:`STREAMED_BLOCK`
    atoms: with ``E = E₀ + A B`` (A: pending code vectors, B: their atoms), the products an atom
    needs are ``γᵀE = γᵀE₀ + (γᵀA) B`` and ``E d = E₀ d + A (B d)``. All the block's ``γᵀE₀``
    come from one matrix product (an atom's old codes do not change before its own update), and
    E₀ is rewritten once per block instead of once per atom. The same arithmetic as one atom at
    a time, up to rounding order, with about a third of the passes over the residual.
    """
    n_locations, n_signals, _ = signals.shape
    n_atoms = dictionary.shape[1]
    codes_by_atom = codes.transpose(1, 2).contiguous()  # (P, K, N): each atom's codes contiguous
    used_by_atom = codes_by_atom != 0
    dead_atoms = _dead_atoms(used_by_atom.sum(-1))
    taken = torch.zeros(n_locations, n_signals, dtype=torch.bool, device=signals.device)
    pending_codes = residual.new_empty(n_locations, 2 * STREAMED_BLOCK, n_signals)  # A, by rows
    pending_atoms = residual.new_empty(n_locations, 2 * STREAMED_BLOCK, residual.shape[-1])  # B
    n_pending = 0

    def flush() -> None:  # E₀ ← E₀ + A B
        nonlocal n_pending
        if n_pending:
            residual.baddbmm_(pending_codes[:, :n_pending].mT, pending_atoms[:, :n_pending])
            n_pending = 0

    for block_start in range(0, n_atoms, STREAMED_BLOCK):
        block = slice(block_start, min(block_start + STREAMED_BLOCK, n_atoms))
        projections = torch.bmm(codes_by_atom[:, block], residual)  # (P, b, C): γᵀE₀ for the block
        for j, k in enumerate(range(block.start, block.stop)):
            old_atom = dictionary[:, k].clone()
            old_codes, used = codes_by_atom[:, k], used_by_atom[:, k]  # (P, N)
            # The power step of _power_step, with Eᵀγ and E d taken through the pending corrections.
            # Products with one vector are written row-vector first (v @ M): BLAS's fast path.
            residual_t_codes = projections[:, j]
            if n_pending:
                weights = torch.bmm(old_codes[:, None, :], pending_codes[:, :n_pending].mT)  # (P, 1, m): γᵀA
                residual_t_codes = residual_t_codes + torch.bmm(weights, pending_atoms[:, :n_pending]).squeeze(1)
            new_atom = _normalised_atom(residual_t_codes, old_codes, old_atom)
            if k in dead_atoms:
                if n_pending:
                    # The worst-represented signal is judged on the up-to-date residual; the
                    # block's remaining γᵀE₀ must then follow the new E₀.
                    flush()
                    projections[:, j + 1:] = torch.bmm(codes_by_atom[:, k + 1 : block.stop], residual)
                dead = ~used.any(-1)
                new_atom = torch.where(dead[:, None], _worst_signal(signals, residual, taken, dead, old_atom), new_atom)
            correlations = torch.bmm(new_atom[:, None, :], residual.mT).squeeze(1)  # (P, N): E₀ d
            if n_pending:
                atom_weights = torch.bmm(new_atom[:, None, :], pending_atoms[:, :n_pending].mT)  # (P, 1, m): (B d)ᵀ
                correlations = correlations + torch.bmm(atom_weights, pending_codes[:, :n_pending]).squeeze(1)
            new_codes = _restricted_codes(correlations, old_codes, old_atom, new_atom, used)
            # Pending E ← E + γ_old d_oldᵀ − γ_new d_newᵀ.
            pending_codes[:, n_pending] = old_codes
            pending_codes[:, n_pending + 1] = -new_codes
            pending_atoms[:, n_pending] = old_atom
            pending_atoms[:, n_pending + 1] = new_atom
            n_pending += 2
            dictionary[:, k] = new_atom
            codes_by_atom[:, k] = new_codes
        flush()
    codes.copy_(codes_by_atom.mT)


def _power_step(rows: Tensor, old_codes: Tensor, old_atom: Tensor, used: Tensor) -> tuple[Tensor, Tensor]:
    """Approximate K-SVD update of one atom: one power step from the old codes.

    ``d ∝ E_kᵀ γ_k`` with ``E_k = E + γ_k d_kᵀ`` (the residual without the atom), then
    ``γ_k = E_k d`` on the same support.

    Parameters
    ----------
    rows : Tensor of shape (P, M, C)
        Residual rows: the atom's users, possibly padded or all N, with zero codes elsewhere.
    old_codes : Tensor of shape (P, M)
    old_atom : Tensor of shape (P, C)
    used : Tensor of shape (P, M), bool
        Rows whose code is non-zero; the others keep a zero code.

    Returns
    -------
    new_atom : Tensor of shape (P, C), unit norm (the old atom where the new one is zero)
    new_codes : Tensor of shape (P, M)
    """
    new_atom = _normalised_atom(torch.bmm(old_codes[:, None, :], rows).squeeze(1), old_codes, old_atom)
    # (d @ Eᵀ) rather than (E @ d): the row-vector form takes BLAS's fast path.
    correlations = torch.bmm(new_atom[:, None, :], rows.mT).squeeze(1)
    return new_atom, _restricted_codes(correlations, old_codes, old_atom, new_atom, used)


def _normalised_atom(residual_t_codes: Tensor, old_codes: Tensor, old_atom: Tensor) -> Tensor:
    """``d = E_kᵀγ_k / ‖·‖`` from ``Eᵀγ_k`` (P, C): ``E_kᵀγ_k = Eᵀγ_k + d_k ‖γ_k‖²``; the old atom
    where the direction is zero."""
    direction = residual_t_codes + old_atom * old_codes.square().sum(-1, keepdim=True)
    norm = direction.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, direction / norm.clamp_min(torch.finfo(norm.dtype).tiny), old_atom)


def _restricted_codes(correlations: Tensor, old_codes: Tensor, old_atom: Tensor, new_atom: Tensor,
                      used: Tensor) -> Tensor:
    """``γ_k = E_k d`` on the atom's support, from ``E d`` (P, M): ``E_k d = E d + γ_k (d_k · d)``."""
    return (correlations + old_codes * (old_atom * new_atom).sum(-1, keepdim=True)) * used


def _rank_two_update(rows: Tensor, old_codes: Tensor, old_atom: Tensor, new_codes: Tensor, new_atom: Tensor) -> None:
    """E ← E + γ_old d_oldᵀ − γ_new d_newᵀ on ``rows`` (P, M, C), one batched rank-2 product."""
    rows.baddbmm_(torch.stack((old_codes, -new_codes), -1), torch.stack((old_atom, new_atom), 1))


def _dead_atoms(user_counts: Tensor) -> set[int]:
    """Atoms unused at some location of the group, from (P, K) counts: found once, not with one
    device sync per atom."""
    return set((user_counts == 0).any(0).nonzero().flatten().tolist())


def _worst_signal(signals: Tensor, residual: Tensor, taken: Tensor, dead: Tensor, fallback: Tensor) -> Tensor:
    """The normalised worst-represented signal of each location (fallback where none is usable).

    Each dead atom takes the worst-represented signal not yet taken by another dead atom (as
    scikit-learn's dictionary learning does): it is the signal the dictionary serves worst.
    """
    error = residual.square().sum(-1).masked_fill(taken, -1.0)  # (P, N)
    worst = error.argmax(-1)  # (P,)
    taken[torch.arange(len(worst), device=worst.device), worst] |= dead
    signal = signals[torch.arange(len(worst), device=worst.device), worst]  # (P, C)
    norm = signal.norm(dim=-1, keepdim=True)
    usable = (norm > 0) & (error.gather(-1, worst[:, None]) > 0)
    return torch.where(usable, signal / norm.clamp_min(torch.finfo(norm.dtype).tiny), fallback)


def _check_signals(signals: Tensor, n_atoms: int) -> None:
    _check_signal_shape(signals)
    if not signals.dtype.is_floating_point:
        raise ValueError(f"signals must be float32 or float64, got {signals.dtype}: convert with .float()")
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, int) or n_atoms < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms!r}")
    n_signals = signals.shape[1]
    if n_signals < n_atoms:
        raise ValueError(
            f"K-SVD needs at least as many training signals as atoms: n_atoms={n_atoms} but only "
            f"N={n_signals} signals per location. Add training images (at least {n_atoms}), or use "
            f"fewer atoms (a layer with fewer channels, or trim_to_square)"
        )
    if not bool(torch.isfinite(signals).all()):
        raise ValueError("signals contain NaN or infinite values: check the feature extraction / inputs")
