"""K-SVD atom updates: one pass over the atoms of every location, in place.

Each atom is updated from the residual rows of the signals that use it (about T/K of them), one
atom after another (each update sees the previous ones), for all locations at once. The residual
``E = X − Γ D`` is kept and updated by low-rank corrections, so an atom update costs a few passes
over E instead of recomputing it.

Two updates (``atom_update``): ``"approximate"`` takes one power step from the old codes
(Rubinstein, Zibulevsky & Elad 2008, Alg. 5); ``"exact"`` the leading singular pair of the
atom's restricted residual ``E_k = E + γ_k d_kᵀ`` (Aharon, Elad & Bruckstein 2006), found by a
checked iteration from the approximate direction (:mod:`~gpuksvd.sparse.leading_pair`), with the
sign ``⟨γ_new, γ_old⟩ ≥ 0``.

Two kernels (``kernel``, :mod:`~gpuksvd.sparse.dispatch`): the native C kernel
(:mod:`~gpuksvd.sparse.native`) runs a location's whole pass on its users' rows, one location per
tile; the torch path batches the locations of a tile and reaches the residual in one of two ways,
with the same result up to rounding order:

* gathered: copy the users' rows into a compact block, work there, scatter them back. It moves
  about T/K of the residual per atom, which is what counts on a GPU and whenever the residual
  does not fit in cache. The exact update always gathers.
* streamed (approximate update on the CPU, when a tile's residual fits in its share of the
  last-level cache): work on all N rows with the non-users' codes at zero. Four times the
  arithmetic, but no gathers, scatters or sorting, and the residual stays in cache.

The measurements behind the choices are in ``benchmarks/RESULTS.md`` ("Design measurements").
Dead atoms (used by no signal at a location) are replaced by the worst-represented signal
(``dead_atoms="replace"``, as scikit-learn), or left as they are (``"keep"``, as the PSDL
authors' ``sparselandtools`` ``ApproximateKSVD``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import native
from .checks import (ATOM_UPDATES, check_atom_update, check_codes, check_dead_atoms, check_dictionary,
                     check_signal_shape)
from .dispatch import check_torch_only, resolve_kernel
from .leading_pair import PowerHint, leading_pair
from .tiling import cpu_cache_bytes, location_tiles, run_tiles

__all__ = ["ATOM_UPDATES", "UpdatePlan", "list_users", "plan_atom_updates", "reconstruction_errors",
           "run_update_pass", "update_atoms", "update_tile"]


def update_atoms(signals: Tensor, dictionary: Tensor, codes: Tensor, *, atom_update: str = "approximate",
                 dead_atoms: str = "replace", kernel: str = "auto", stream_residual: bool | None = None,
                 max_memory: int | None = None) -> Tensor:
    """One K-SVD atom-update pass over every location, in place on ``dictionary`` and ``codes``.

    Parameters
    ----------
    signals : Tensor of shape (P, N, C)
    dictionary : Tensor of shape (P, K, C), updated in place
        Unit-norm atoms.
    codes : Tensor of shape (P, N, K), updated in place
        The codes of ``signals`` (their supports fix which signals use which atom).
    atom_update : {"approximate", "exact"}
        ``"approximate"``: one power step per atom, ``d ∝ E_kᵀγ_k`` then ``γ_k = E_k d``.
        ``"exact"``: the leading singular pair of the restricted residual ``E_k`` (never increases
        the error), to ``‖E_kᵀE_k d − σ²d‖ ≤ 8·eps·σ²`` (LAPACK's eigensolver decides ties and
        near-ties). Sign convention: ``⟨γ_new, γ_old⟩ ≥ 0``, the approximate update's direction,
        on every kernel and device.
    dead_atoms : {"replace", "keep"}
        An atom that no signal uses at a location is replaced by the worst-represented signal not
        taken by another dead atom (``"replace"``), or left unchanged (``"keep"``).
    kernel : {"auto", "torch", "native", "triton"}
        Implementation (:mod:`~gpuksvd.sparse.dispatch`); ``"auto"``: the native C kernel for
        CPU float32/float64 tensors when it builds, torch elsewhere. Same results up to rounding.
        (``"triton"`` fuses OMP only: the atom updates run on the torch path.)
    stream_residual : bool, optional
        Torch kernel only: stream the whole residual (approximate updates only) instead of
        gathering each atom's users; by default when a tile's residual fits in its share of the
        CPU's last-level cache.
    max_memory : int, optional
        Working-memory budget in bytes per tile of locations (see :func:`~gpuksvd.sparse.batch_omp`).

    Returns
    -------
    Tensor of shape (P,)
        Squared reconstruction error ``‖X − Γ D‖²_F`` of each location after the pass.
    """
    dictionary = check_dictionary(dictionary, signals)
    check_codes(codes, signals, dictionary.shape[1])
    check_atom_update(atom_update)
    check_dead_atoms(dead_atoms)
    kernel = resolve_kernel(kernel, signals)
    check_torch_only(kernel, stream_residual=stream_residual is not None)
    plan = plan_atom_updates(signals, dictionary.shape[1], atom_update == "exact", stream_residual, max_memory,
                             kernel=kernel)
    sq_error = signals.new_empty(signals.shape[0])
    if kernel == "native":
        # The kernel writes through whole-location views: they must be contiguous.
        signals, work_dictionary, work_codes = signals.contiguous(), dictionary.contiguous(), codes.contiguous()
        run_update_pass(signals, work_dictionary, work_codes, atom_update == "exact", plan, sq_error, dead_atoms)
        if work_dictionary.data_ptr() != dictionary.data_ptr():
            dictionary.copy_(work_dictionary)
        if work_codes.data_ptr() != codes.data_ptr():
            codes.copy_(work_codes)
        return sq_error
    run_update_pass(signals, dictionary, codes, atom_update == "exact", plan, sq_error, dead_atoms)
    return sq_error


@dataclass(frozen=True)
class UpdatePlan:
    """How an atom-update pass runs: its kernel ("torch" or "native"), whether the torch kernel
    streams the residual, and the tiles of locations."""

    streamed: bool
    tiles: list[slice]
    kernel: str = "torch"


def plan_atom_updates(signals: Tensor, n_atoms: int, exact: bool, stream_residual: bool | None = None,
                      max_memory: int | None = None, cache_budget: int | None = None, *,
                      kernel: str = "torch") -> UpdatePlan:
    """Whether the atom updates stream the residual, and their tiles of locations: within the
    memory budget, and when streaming on the CPU, sized for the residual to stay in the last-level
    cache (``cache_budget`` bytes per tile; default: the cache's share per core; on other devices
    the memory budget alone unless ``cache_budget`` is given). ``kernel`` is
    the resolved kernel (:func:`~gpuksvd.sparse.dispatch.resolve_kernel`).

    The native kernel takes one location per tile: its working memory is one location's residual
    whatever the tile, and single locations keep every core busy to the end of the pass.

    Decided once per fit, before the tiles run (inside them torch runs single-threaded, which
    would change the cache share).
    """
    check_signal_shape(signals)
    if stream_residual and exact:
        raise ValueError("stream_residual=True works with atom_update='approximate' only: the exact "
                         "update gathers each atom's users")
    n_locations, n_signals, n_features = signals.shape
    if kernel == "native":
        return UpdatePlan(False, [slice(p, p + 1) for p in range(n_locations)], "native")
    cpu = signals.device.type == "cpu"
    if cache_budget is None and cpu:
        cache_budget = tile_cache_budget()
    streamed_bytes = streamed_bytes_per_location(n_signals, n_atoms, n_features, signals.dtype)
    if stream_residual is None:
        stream_residual = not exact and cpu and streamed_bytes <= cache_budget
    if not stream_residual:
        per_location = gathered_bytes_per_location(n_signals, n_atoms, n_features, signals.dtype, exact)
        return UpdatePlan(False, location_tiles(n_locations, per_location, max_memory, signals.device))
    if cache_budget is None:  # on a GPU no last-level cache bounds the tiles: the memory budget does
        return UpdatePlan(True, location_tiles(n_locations, streamed_bytes, max_memory, signals.device))
    budget = cache_budget if max_memory is None else min(cache_budget, max_memory)
    return UpdatePlan(True, location_tiles(n_locations, streamed_bytes, budget, signals.device))


def tile_cache_budget() -> int:
    """The share of the last-level cache for one tile of locations: one tile runs per core."""
    return cpu_cache_bytes() // max(1, torch.get_num_threads())


def gathered_bytes_per_location(n_signals: int, n_atoms: int, n_features: int, dtype: torch.dtype,
                                exact: bool = False) -> int:
    """Working memory of the gathered update per location: the residual, each atom's sorted
    users (int64) and the largest gathered block; the exact pass also keeps a work copy of the
    residual, the users' row indices (int64) and atom-major codes."""
    itemsize = torch.finfo(dtype).bits // 8
    if exact:
        return n_signals * (3 * n_features * itemsize + n_atoms * (17 + itemsize))
    return n_signals * (2 * n_features * itemsize + n_atoms * 10)


def streamed_bytes_per_location(n_signals: int, n_atoms: int, n_features: int, dtype: torch.dtype) -> int:
    """What the streamed update reads for every atom: residual, transposed codes, their mask."""
    return n_signals * (n_features + n_atoms) * (torch.finfo(dtype).bits // 8) + n_signals * n_atoms


def reconstruction_errors(signals: Tensor, dictionary: Tensor, codes: Tensor, tiles: list[slice],
                          sq_error: Tensor) -> None:
    """Squared reconstruction error of each location into ``sq_error`` (P,)."""

    def measure(tile: slice) -> None:
        sq_error[tile] = (signals[tile] - codes[tile] @ dictionary[tile]).square().sum((1, 2))

    run_tiles(measure, tiles, signals.device)


def run_update_pass(signals: Tensor, dictionary: Tensor, codes: Tensor, exact: bool, plan: UpdatePlan,
                    sq_error: Tensor, dead_atoms: str = "replace") -> None:
    """One atom-update pass over every tile of locations, in place; each location's squared
    reconstruction error afterwards goes to ``sq_error`` (P,). With the native kernel the four
    tensors must be contiguous (:func:`update_atoms` and :func:`~gpuksvd.sparse.ksvd` see to it)."""
    keep_dead = dead_atoms == "keep"
    if plan.kernel == "native":
        def update(tile: slice) -> None:
            native.update_atoms(signals[tile], dictionary[tile], codes[tile], sq_error[tile], exact, keep_dead)
    else:
        def update(tile: slice) -> None:
            # Views of the tile's locations: the update writes through to dictionary and codes.
            x, atoms, tile_codes = signals[tile], dictionary[tile], codes[tile]
            residual = x - tile_codes @ atoms
            update_tile(x, atoms, tile_codes, residual, exact, plan.streamed, keep_dead)
            sq_error[tile] = residual.square().sum((1, 2))

    run_tiles(update, plan.tiles, signals.device)


def update_tile(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor, exact: bool,
                streamed: bool, keep_dead: bool = False) -> None:
    """One K-SVD atom-update pass with the torch kernel, in place, for one tile of locations
    (module docstring).

    Parameters
    ----------
    signals : Tensor of shape (P, N, C)
    dictionary : Tensor of shape (P, K, C), updated in place
    codes : Tensor of shape (P, N, K), updated in place
    residual : Tensor of shape (P, N, C)
        ``signals − codes @ dictionary``, kept equal to it as atoms change.
    exact : bool
        Leading singular pair (True) or one power step (False).
    streamed : bool
        Stream the residual (approximate updates only) instead of gathering the users' rows.
    keep_dead : bool
        Leave unused atoms unchanged instead of replacing them by the worst-represented signal.
    """
    if exact:
        _update_exact(signals, dictionary, codes, residual, keep_dead)
    elif streamed:
        _update_streamed(signals, dictionary, codes, residual, keep_dead)
    else:
        _update_gathered(signals, dictionary, codes, residual, keep_dead)


def _update_gathered(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor, keep_dead: bool) -> None:
    """The approximate atom updates on compact blocks of the users' residual rows (module docstring).

    Locations of a tile are padded to the largest user count with non-users, whose codes are
    zero and so contribute nothing.
    """
    n_locations, n_signals, n_features = signals.shape
    # Supports do not change during the pass: list every atom's users once, users first.
    unused = (codes == 0).transpose(1, 2).to(torch.uint8)  # (P, K, N)
    users = unused.sort(dim=-1, stable=True).indices  # (P, K, N)
    user_counts = (unused == 0).sum(-1)  # (P, K)
    widths = user_counts.amax(0).tolist()  # per atom, the largest user count over locations
    dead_atoms = set() if keep_dead else _dead_atoms(user_counts)
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
        # A dead atom (no users: zero codes) gets a zero direction, so _power_step keeps it.
        new_atom, new_codes = _power_step(block, old_codes, old_atom, used)
        if k in dead_atoms:
            dead = user_counts[:, k] == 0  # (P,)
            new_atom = torch.where(dead[:, None], _worst_signal(signals, residual, taken, dead, old_atom), new_atom)
        _rank_two_update(block, old_codes, old_atom, new_codes, new_atom)
        flat_residual.index_copy_(0, rows, block.view(-1, n_features))
        dictionary[:, k] = new_atom
        flat_codes[:, k].index_copy_(0, rows, new_codes.reshape(-1))


def _update_exact(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor, keep_dead: bool) -> None:
    """The exact atom updates: the leading singular pair of each atom's restricted residual
    (:func:`~gpuksvd.sparse.leading_pair.leading_pair`) on compact blocks of its users' rows.

    Padding rows (locations with fewer users than the widest) index an extra zero row of a work
    copy of the residual, with a zero code, so the block needs no mask: ``E_k = E + γ_k d_kᵀ`` is
    formed in place in it, and after the update it takes the rank-1 correction ``E_k − γ d dᵀ``.
    Padding rows stay exactly zero, so writing them back (duplicate indices, identical values) is
    harmless. Users are listed by a prefix sum (:func:`list_users`), codes kept atom-major.
    """
    n_locations, n_signals, n_features = signals.shape
    device = signals.device
    codes_by_atom = codes.new_zeros(n_locations, codes.shape[2], n_signals + 1)  # last column: padding, zero
    codes_by_atom[..., :n_signals] = codes.mT
    users, user_counts = list_users(codes_by_atom[..., :n_signals])  # (P, K, N), padding = N
    widths = user_counts.amax(0).tolist()
    dead_atoms = set() if keep_dead else _dead_atoms(user_counts)
    zero_row = n_locations * n_signals
    rows = torch.where(users == n_signals, zero_row,
                       users + (torch.arange(n_locations, device=device) * n_signals).view(-1, 1, 1))
    work = residual.new_empty(zero_row + 1, n_features)  # the residual rows, then one zero row
    work[:zero_row] = residual.view(zero_row, n_features)
    work[zero_row] = 0
    work_residual = work[:zero_row].view(n_locations, n_signals, n_features)
    taken = torch.zeros(n_locations, n_signals, dtype=torch.bool, device=device)
    hint = PowerHint()  # the atoms' iterations tell each other where to check
    for k, width in enumerate(widths):
        width = max(width, 1)
        old_atom = dictionary[:, k].clone()  # (P, C)
        atom_rows = rows[:, k, :width].reshape(-1)  # (P·M,)
        atom_users = users[:, k, :width]  # (P, M)
        block = work.index_select(0, atom_rows).view(n_locations, width, n_features)
        old_codes = codes_by_atom[:, k].gather(-1, atom_users)  # (P, M), zero on padding
        block.addcmul_(old_codes[..., None], old_atom[:, None, :])  # E_k, in place
        # A dead location's block is all padding (E_k = 0): the old atom and zero codes.
        new_atom, new_codes = leading_pair(block, old_codes, old_atom, hint=hint)
        if k in dead_atoms:
            dead = user_counts[:, k] == 0  # (P,)
            new_atom = torch.where(dead[:, None], _worst_signal(signals, work_residual, taken, dead, old_atom),
                                   new_atom)
        block.baddbmm_(new_codes[..., None], new_atom[:, None, :], alpha=-1)  # E_k − γ_new d_newᵀ
        work.index_copy_(0, atom_rows, block.view(-1, n_features))
        dictionary[:, k] = new_atom
        codes_by_atom[:, k].scatter_(-1, atom_users, new_codes)
    residual.copy_(work_residual)
    codes.copy_(codes_by_atom[..., :n_signals].mT)


def list_users(codes_by_atom: Tensor) -> tuple[Tensor, Tensor]:
    """Each atom's users, in increasing signal order, compacted to the front.

    A prefix sum and a scatter instead of a stable sort of (P, K, N): the same order, O(PKN) and
    no comparison sort (the sort was ~20 % of the gathered pass in a profile).

    Parameters
    ----------
    codes_by_atom : Tensor of shape (P, K, N)
        Atom-major codes.

    Returns
    -------
    users : Tensor of shape (P, K, N), int64
        Signal indices of each atom's users first, then N (padding).
    counts : Tensor of shape (P, K)
        Users per atom.
    """
    n_locations, n_atoms, n_signals = codes_by_atom.shape
    used = codes_by_atom != 0
    counts = used.sum(-1)
    position = torch.where(used, used.cumsum(-1) - 1, n_signals)  # non-users to a trash column
    users = torch.full((n_locations, n_atoms, n_signals + 1), n_signals, dtype=torch.long, device=codes_by_atom.device)
    signal_index = torch.arange(n_signals, device=codes_by_atom.device).expand_as(position)
    users.scatter_(-1, position, signal_index)
    users[..., -1] = n_signals  # the trash column (written by non-users) is never read: reset it anyway
    return users[..., :n_signals], counts


#: Atoms whose residual corrections the streamed update defers and applies as one product.
STREAMED_BLOCK = 16


def _update_streamed(signals: Tensor, dictionary: Tensor, codes: Tensor, residual: Tensor, keep_dead: bool) -> None:
    """The approximate atom updates over all N residual rows (module docstring).

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
    dead_atoms = set() if keep_dead else _dead_atoms(used_by_atom.sum(-1))
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
    """Atoms unused at some location of the tile, from (P, K) counts: found once, not with one
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
