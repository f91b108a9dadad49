"""Batch-OMP: Orthogonal Matching Pursuit for every (location, signal) pair at once.

Implements the Gram-based Batch-OMP of Rubinstein, Zibulevsky & Elad (2008, "Efficient
implementation of the K-SVD algorithm using Batch Orthogonal Matching Pursuit", Alg. 3): with
``G = D Dᵀ`` and ``α⁰ = D x`` precomputed, the residual is never formed. The Cholesky factor of
``G_II`` grows by one row per step; we keep its inverse ``L⁻¹`` instead, so that each step needs
only mat-vecs with the k×k factor and one batched product with ``G``:

    w   = L⁻¹ G_{I,j}                   (new Cholesky row, solved)
    d   = sqrt(G_jj − wᵀw)              (new diagonal entry)
    z_k = α_j / d                       (z = L⁻¹ α⁰_I, grown by one entry)
    q   = (G_j − (L⁻ᵀw)ᵀ G_I) / d       (row k of L⁻¹ G_I)
    α  ← α − z_k q                      (correlations with the new residual)

and at the end ``γ_I = L⁻ᵀ z``. ``‖r‖² = ‖x‖² − ‖z‖²`` tracks the residual energy for ``tol``.

That is the torch path (:func:`_gram_omp`): every step is a few batched operations over all
signals of a tile, which suits a GPU. On the CPU the native kernel (:mod:`~gpuksvd.sparse.native`,
``kernel="auto"``) runs the same pursuit one signal at a time with its state in cache, several
times faster; both give the codes of scikit-learn's ``orthogonal_mp_gram`` in float64.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from .checks import check_dictionary, check_n_nonzero
from .dispatch import check_torch_only, resolve_kernel
from .inverse_factor import check_factor_layout, inverse_factor
from .tiling import resolve_budget, run_tiles, signal_tiles


class LinearDependenceWarning(UserWarning):
    """OMP stopped early for some signals because the next atom was linearly dependent on the
    atoms already selected (duplicated or collinear atoms)."""


def batch_omp(
    dictionary: Tensor,
    signals: Tensor,
    n_nonzero: int,
    *,
    gram: Tensor | None = None,
    tol: float | None = None,
    max_memory: int | None = None,
    factor_layout: str = "auto",
    kernel: str = "auto",
) -> Tensor:
    """Sparse codes of every signal at every location by Batch-OMP.

    Parameters
    ----------
    dictionary : Tensor of shape (P, K, C) or (K, C)
        Atoms as unit-norm rows, one dictionary per location (or one shared by all).
    signals : Tensor of shape (P, N, C)
        N signals of C channels at each of P locations.
    n_nonzero : int
        Number of atoms selected per signal, 1 ≤ n_nonzero ≤ min(K, C).
    gram : Tensor of shape (P, K, K), optional
        ``dictionary @ dictionaryᵀ`` if already known.
    tol : float, optional
        Stop a signal once the squared L2 norm of its residual is ≤ ``tol`` (as scikit-learn's
        ``orthogonal_mp_gram``), even before ``n_nonzero`` atoms.
    max_memory : int, optional
        Working-memory budget in bytes of one tile of work: locations, or a location's signals
        split in equal parts, are processed in tiles that fit it (same result up to rounding
        order). Default: half the free CUDA memory, at most 40 GiB; on the CPU 256 MiB per tile
        (one tile per core runs at a time; less when that would exceed a quarter of the
        available memory), with at least :data:`MIN_CPU_TILE` signals per tile for the torch
        kernel (the native kernel needs only the projections and codes: see :func:`native_tiles`).
    factor_layout : {"auto", "matrices", "signals-last"}
        Torch kernel only: how the inverse Cholesky factor is stored
        (:mod:`~gpuksvd.sparse.inverse_factor`); ``"auto"`` takes the faster one for the device.
        Same codes up to rounding order.
    kernel : {"auto", "torch", "native", "triton"}
        Implementation (:mod:`~gpuksvd.sparse.dispatch`): ``"auto"`` runs the native C kernel for
        CPU float32/float64 tensors when it builds (else, with one warning, and on CUDA, the torch
        path). ``"triton"`` (CUDA, opt-in): the fused kernel of :mod:`~gpuksvd.sparse.triton_omp`,
        no host synchronisation. Same codes up to rounding order.

    Returns
    -------
    codes : Tensor of shape (P, N, K)
        ``signals ≈ codes @ dictionary`` at each location; at most ``n_nonzero`` non-zeros per
        signal. All-zero signals get all-zero codes.

    Warns
    -----
    LinearDependenceWarning
        When a signal's pursuit ended early because the next atom was linearly dependent on
        those already selected.
    """
    dictionary = check_dictionary(dictionary, signals)
    n_locations, n_signals, n_features = signals.shape
    n_atoms = dictionary.shape[1]
    check_n_nonzero(n_nonzero, n_atoms, n_features)
    check_factor_layout(factor_layout)
    kernel = resolve_kernel(kernel, signals)
    check_torch_only(kernel, factor_layout=factor_layout != "auto")
    if gram is not None and gram.shape != (n_locations, n_atoms, n_atoms):
        raise ValueError(f"gram has shape {tuple(gram.shape)}, expected ({n_locations}, {n_atoms}, {n_atoms})")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be a non-negative squared residual norm, got {tol!r}")

    codes = signals.new_zeros(n_locations, n_signals, n_atoms)
    tiles = omp_tiles(n_locations, n_signals, n_atoms, n_nonzero, signals.dtype, max_memory, signals.device,
                      kernel=kernel)
    warn_dependent(code_tiles(signals, dictionary, codes, n_nonzero, tiles, gram=gram, tol=tol,
                              factor_layout=factor_layout, kernel=kernel))
    return codes


def code_tiles(signals: Tensor, dictionary: Tensor, codes: Tensor, n_nonzero: int, tiles: list[tuple[slice, slice]],
               *, gram: Tensor | None = None, tol: float | None = None, factor_layout: str = "auto",
               kernel: str = "torch") -> int | Tensor:
    """OMP codes of every (locations, signals) tile written into ``codes`` (P, N, K), the tiles
    run by :func:`~gpuksvd.sparse.tiling.run_tiles`. Arguments as :func:`batch_omp`, already
    checked; ``kernel`` resolved (:func:`~gpuksvd.sparse.dispatch.resolve_kernel`).

    Returns
    -------
    int or 0-d Tensor
        Pursuits that stopped on a linearly dependent atom (for :func:`warn_dependent`); a
        device tensor where reading it would synchronise (CUDA).
    """

    def code(tile: tuple[slice, slice]) -> int:
        locations, rows = tile
        atoms, x = dictionary[locations], signals[locations, rows]
        tile_gram = atoms @ atoms.mT if gram is None else gram[locations]
        sq_norms = x.square().sum(-1) if tol is not None else None
        if kernel == "native":
            codes[locations, rows], n_dependent = native.omp(tile_gram, x @ atoms.mT, n_nonzero, sq_norms, tol)
        elif kernel == "triton":
            from .triton_omp import fused_batch_omp  # imports triton: only when asked for

            codes[locations, rows], n_dependent = fused_batch_omp(tile_gram, x @ atoms.mT, n_nonzero, sq_norms, tol)
        else:
            codes[locations, rows], n_dependent = _gram_omp(tile_gram, x @ atoms.mT, n_nonzero, sq_norms, tol,
                                                            factor_layout)
        return n_dependent

    # Triton's interpreter (the Triton kernel on CPU tensors) patches its language module while a
    # kernel runs, so its tiles must not run concurrently.
    return sum(run_tiles(code, tiles, signals.device, concurrent=kernel != "triton"))


#: Fewest (location, signal) pairs in one CPU tile under the default budget: below this, the
#: overhead of the pursuit's ~2k operations per step dominates (``benchmarks/RESULTS.md``,
#: "Design measurements").
MIN_CPU_TILE = 1536


def omp_tiles(n_locations: int, n_signals: int, n_atoms: int, n_nonzero: int, dtype: torch.dtype,
              max_memory: int | None, device: torch.device, kernel: str = "torch") -> list[tuple[slice, slice]]:
    """How to split the P × N pursuits into (locations, signals) tiles that fit the memory budget.

    Whole locations when they fit, else each location's signals in equal parts. With the default
    CPU budget a torch tile holds at least :data:`MIN_CPU_TILE` signals, even if that exceeds it.
    The native kernel's tiles are sized for load balance instead (:func:`native_tiles`).
    """
    if kernel == "native":
        return native_tiles(n_locations, n_signals, n_atoms, dtype, max_memory, device)
    tile = resolve_budget(max_memory, device) * n_signals // omp_bytes_per_location(n_signals, n_atoms, n_nonzero, dtype)
    if device.type == "cpu" and max_memory is None:
        tile = max(tile, MIN_CPU_TILE)
    return signal_tiles(n_locations, n_signals, tile)


#: Signals per native OMP tile: about 10-20 ms of work at the paper's scales, so that the tiles
#: balance the cores (also against other programs' load) while the per-tile overhead (the Python
#: call, the tile's Gram matrix) stays below 1 %.
NATIVE_TILE = 1024
#: Tiles per thread the native OMP aims for on small problems, down to :data:`MIN_NATIVE_TILE`.
NATIVE_TILES_PER_THREAD = 4
#: Fewest signals in a native OMP tile.
MIN_NATIVE_TILE = 256


def native_tiles(n_locations: int, n_signals: int, n_atoms: int, dtype: torch.dtype, max_memory: int | None,
                 device: torch.device) -> list[tuple[slice, slice]]:
    """Tiles for the native OMP kernel: each location's signals in equal parts of at most
    :data:`NATIVE_TILE` (smaller, down to :data:`MIN_NATIVE_TILE`, when that gives fewer than
    :data:`NATIVE_TILES_PER_THREAD` tiles per thread), within the memory budget.

    The kernel keeps each pursuit in cache, so a tile's size no longer buys speed (the torch path's
    :data:`MIN_CPU_TILE` amortised per-operation overhead): only balance between the cores matters
    (``benchmarks/RESULTS.md``, "The native CPU kernel").
    """
    itemsize = torch.finfo(dtype).bits // 8
    per_location = (2 * n_signals * n_atoms + n_atoms * n_atoms) * itemsize  # projections, codes, Gram
    fits = resolve_budget(max_memory, device) * n_signals // max(1, per_location)
    wanted = NATIVE_TILES_PER_THREAD * max(1, torch.get_num_threads())
    balanced = max(MIN_NATIVE_TILE, min(NATIVE_TILE, -(-n_locations * n_signals // wanted)))
    return signal_tiles(n_locations, n_signals, max(1, min(fits, balanced)))


def omp_bytes_per_location(n_signals: int, n_atoms: int, n_nonzero: int, dtype: torch.dtype) -> int:
    """Peak working memory of the Batch-OMP kernel per location, in bytes (an upper estimate)."""
    itemsize = torch.finfo(dtype).bits // 8
    # α, its argmax scratch, the projections, the α update and the codes (5K); the factor and
    # its grown copy on CUDA (2T²); z and the per-step vectors (6T); the atom indices (12T bytes).
    floats = n_signals * (5 * n_atoms + 2 * n_nonzero * n_nonzero + 6 * n_nonzero) + n_atoms * n_atoms
    return floats * itemsize + n_signals * n_nonzero * 12


def _gram_omp(gram: Tensor, projections: Tensor, n_nonzero: int, sq_norms: Tensor | None = None,
              tol: float | None = None, factor_layout: str = "auto") -> tuple[Tensor, int | Tensor]:
    """The Batch-OMP kernel on one chunk of locations.

    Per-signal vectors of the pursuit (the selected atoms, z, the factor's rows) are kept
    signals-last, shape (P, k, N), so that every step's operations run over N contiguous values.

    Parameters
    ----------
    gram : Tensor of shape (P, K, K)
    projections : Tensor of shape (P, N, K)
        ``α⁰ = signals @ dictionaryᵀ``.
    sq_norms : Tensor of shape (P, N), needed with ``tol``
        Squared norms of the signals.

    Returns
    -------
    codes : Tensor of shape (P, N, K)
    n_dependent : int, or a 0-d tensor on devices without the early exit
        Signals whose pursuit stopped on a linearly dependent atom.
    """
    n_locations, n_signals, n_atoms = projections.shape
    dtype, device = projections.dtype, projections.device
    eps = torch.finfo(dtype).eps
    alpha = projections.clone()
    find_largest = LargestMagnitude(alpha)
    inv_chol = inverse_factor(n_locations, n_signals, n_nonzero, projections, factor_layout)  # L⁻¹, a row per step
    z = projections.new_empty(n_locations, n_nonzero, n_signals)
    # The selected atoms twice: scaled by K (indices into each location's flattened Gram
    # matrix), and signal-major with the location's offset, as rows of all locations' Gram
    # matrices stacked (P·K, K) for the embedding-bag α update (int32 indices: faster there).
    scaled_selected = torch.empty(n_locations, n_nonzero, n_signals, dtype=torch.long, device=device)
    table_offset = (torch.arange(n_locations, device=device, dtype=torch.int32) * n_atoms).view(n_locations, 1)
    bag_rows = torch.empty(n_locations, n_signals, n_nonzero, dtype=torch.int32, device=device)
    active = torch.ones(n_locations, n_signals, dtype=torch.bool, device=device)
    dependent = torch.zeros_like(active)
    gram_flat = gram.reshape(n_locations, n_atoms * n_atoms)
    gram_diag = gram.diagonal(dim1=-2, dim2=-1)
    # The α update combines k+1 rows of G per signal: an embedding-bag sum over the rows of all
    # chunk locations stacked, which reads G from cache instead of forming a dense (N, K) × (K, K)
    # product (K/k times fewer operations).
    gram_table = gram.reshape(n_locations * n_atoms, n_atoms)
    residual_sq = sq_norms.clone() if tol is not None else None
    stop_level = eps * projections.square().amax(-1)  # (P, N)
    # The CPU reads the number of active pursuits back at each step, to stop once all have ended
    # and to skip the masking while none has. On a GPU that read would wait for the device at
    # every step, so there all n_nonzero steps run, masked (ended pursuits contribute nothing):
    # no host synchronisation, and an iteration can be captured in a CUDA graph.
    early_exit = device.type in EARLY_EXIT_DEVICES

    for k in range(n_nonzero):
        atom = find_largest(alpha)  # (P, N)
        alpha_atom = alpha.gather(-1, atom[..., None]).squeeze(-1)
        # Signals already represented exactly (all-zero signals included) have no correlation
        # left. scikit-learn stops at alpha² < eps; relative to the signal's largest initial
        # correlation here, so that the codes of small-valued signals do not stop early.
        active &= alpha_atom.square() > stop_level  # also stops α = 0 (stop_level ≥ 0)
        if residual_sq is not None:
            active &= residual_sq > tol
        diag_sq = gram_diag.gather(-1, atom)
        if k > 0:
            # G_{I,j} for the selected set I: entries (i, j) of the flattened Gram matrix.
            gram_col = gram_flat.gather(-1, (scaled_selected[:, :k] + atom[:, None]).view(n_locations, -1)
                                        ).view(n_locations, k, n_signals)
            w = inv_chol.lower_product(k, gram_col)
            diag_sq = diag_sq - w.square().sum(1)
        newly_dependent = active & (diag_sq <= eps)
        dependent |= newly_dependent
        active &= ~newly_dependent
        if early_exit:
            n_active = int(active.sum())
            if n_active == 0:
                break
        # Row k of L⁻¹ is [−(L⁻ᵀw)ᵀ/d, 1/d]; stopped signals get the identity row and z_k = 0,
        # so they contribute nothing to the codes. (Without stopped signals, the common case,
        # the masking is skipped where that is known.)
        if early_exit and n_active == active.numel():
            inv_diag = diag_sq.rsqrt()
            z_k = alpha_atom * inv_diag
            off_diagonal_scale = -inv_diag
        else:
            inv_diag = torch.where(active, diag_sq, 1.0).rsqrt()
            z_k = torch.where(active, alpha_atom * inv_diag, 0.0)
            atom = torch.where(active, atom, 0)
            off_diagonal_scale = torch.where(active, -inv_diag, 0.0)
        z[:, k] = z_k
        scaled_selected[:, k] = atom * n_atoms
        bag_rows[..., k] = atom + table_offset
        if k > 0:
            inv_chol.set_row(k, inv_diag, inv_chol.upper_product(k, w), off_diagonal_scale)
        else:
            inv_chol.set_row(k, inv_diag)
        if residual_sq is not None:
            residual_sq -= z_k.square()
        if k + 1 < n_nonzero:
            # α ← α − z_k · (row k of L⁻¹) G_I. Stopped signals have zero weights.
            weights = projections.new_empty(n_locations, n_signals, k + 1)
            torch.mul(inv_chol.row(k).mT, z_k[..., None], out=weights)
            alpha -= F.embedding_bag(bag_rows[..., : k + 1].reshape(-1, k + 1), gram_table,
                                     per_sample_weights=weights.view(-1, k + 1), mode="sum").view_as(alpha)

    size = inv_chol.size  # < n_nonzero when every pursuit ended early; later z are 0
    coefficients = inv_chol.upper_product(size, z[:, :size])  # γ_I = L⁻ᵀ z, (P, size, N)
    selected = (bag_rows[..., :size] - table_offset[..., None]).long()  # (P, N, size)
    codes = torch.zeros_like(projections).scatter_add_(-1, selected, coefficients.mT)
    return codes, int(dependent.sum()) if early_exit else dependent.sum()


#: Device types where the pursuit reads its active count back to the host at each step (cheap
#: there) to stop early; elsewhere it runs without host synchronisation.
EARLY_EXIT_DEVICES = frozenset({"cpu"})


class LargestMagnitude:
    """``alpha.abs().argmax(-1)`` (the first index of the largest magnitude), faster on the CPU.

    There, argmax over a short last dimension is not vectorised (several times the cost of amax:
    ``benchmarks/RESULTS.md``, "Design measurements"). Non-negative floats order like their bit patterns as integers, so the index is
    found with vectorised integer operations instead: the magnitudes' bits, their row maximum m,
    then the largest of ``[bits == m] · (K − index)`` — the same index, ties and inf included.
    (With several NaNs of different payloads the one with the largest bit pattern wins, not the
    first; features are checked finite before they get here.)
    """

    _BITS = {torch.float32: (torch.int32, 0x7FFF_FFFF), torch.float64: (torch.int64, 0x7FFF_FFFF_FFFF_FFFF)}

    def __init__(self, like: Tensor) -> None:
        self.bit_trick = like.device.type == "cpu" and like.dtype in self._BITS
        if self.bit_trick:
            int_dtype, self.mask = self._BITS[like.dtype]
            n_atoms = like.shape[-1]
            self.scratch = torch.empty(like.shape, dtype=int_dtype, device=like.device)
            self.reverse_index = torch.arange(n_atoms, 0, -1, dtype=int_dtype, device=like.device)  # K − index

    def __call__(self, alpha: Tensor) -> Tensor:
        if not self.bit_trick:
            return alpha.abs().argmax(-1)
        bits = torch.bitwise_and(alpha.view(self.scratch.dtype), self.mask, out=self.scratch)
        largest = bits.amax(-1, keepdim=True)
        # bits − m + 1 is 1 at the maxima and ≤ 0 elsewhere; clamped, it selects K − index.
        bits.sub_(largest - 1).clamp_min_(0).mul_(self.reverse_index)
        return (alpha.shape[-1] - bits.amax(-1)).long()


def warn_dependent(n_dependent: int | Tensor) -> None:
    """Warn once about pursuits that stopped on a dependent atom (a count, or a 0-d tensor read
    back here: after the work, not inside it)."""
    n_dependent = int(n_dependent)
    if n_dependent:
        warnings.warn(
            f"OMP stopped early for {n_dependent} signal(s): the next atom was linearly dependent "
            "on the atoms already selected (duplicate or collinear atoms); their codes have fewer "
            "than n_nonzero non-zeros",
            LinearDependenceWarning,
            stacklevel=3,
        )
