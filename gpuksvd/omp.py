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
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from ._chunks import location_chunks
from ._inverse_factor import inverse_factor


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
        Working-memory budget in bytes; locations are processed in chunks that fit it (same
        result as unchunked). Default: half the free CUDA memory, or 256 MiB on the CPU.

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
    dictionary = _check_dictionary(dictionary, signals)
    n_locations, n_signals, n_features = signals.shape
    n_atoms = dictionary.shape[1]
    _check_n_nonzero(n_nonzero, n_atoms, n_features)
    if gram is not None and gram.shape != (n_locations, n_atoms, n_atoms):
        raise ValueError(f"gram has shape {tuple(gram.shape)}, expected ({n_locations}, {n_atoms}, {n_atoms})")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be a non-negative squared residual norm, got {tol!r}")

    codes = signals.new_zeros(n_locations, n_signals, n_atoms)
    n_dependent = 0
    for chunk in location_chunks(n_locations, omp_bytes_per_location(n_signals, n_atoms, n_nonzero, signals.dtype),
                                 max_memory, signals.device):
        atoms = dictionary[chunk]
        chunk_gram = atoms @ atoms.mT if gram is None else gram[chunk]
        projections = signals[chunk] @ atoms.mT
        sq_norms = signals[chunk].square().sum(-1) if tol is not None else None
        codes[chunk], dependent = _gram_omp(chunk_gram, projections, n_nonzero, sq_norms, tol)
        n_dependent += dependent
    _warn_dependent(n_dependent)
    return codes


def omp_bytes_per_location(n_signals: int, n_atoms: int, n_nonzero: int, dtype: torch.dtype) -> int:
    """Peak working memory of :func:`_gram_omp` per location, in bytes (an upper estimate)."""
    itemsize = torch.finfo(dtype).bits // 8
    floats = n_signals * (4 * n_atoms + 2 * n_nonzero * n_nonzero + 6 * n_nonzero) + n_atoms * n_atoms
    return floats * itemsize + n_signals * n_nonzero * 8


def _gram_omp(gram: Tensor, projections: Tensor, n_nonzero: int,
              sq_norms: Tensor | None = None, tol: float | None = None) -> tuple[Tensor, int]:
    """The Batch-OMP kernel on one chunk of locations.

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
    n_dependent : int
        Signals whose pursuit stopped on a linearly dependent atom.
    """
    n_locations, n_signals, n_atoms = projections.shape
    dtype, device = projections.dtype, projections.device
    eps = torch.finfo(dtype).eps
    alpha = projections.clone()
    inv_chol = inverse_factor(n_locations, n_signals, n_nonzero, projections)  # L⁻¹, a row per step
    z = projections.new_zeros(n_locations, n_signals, n_nonzero)
    selected = torch.zeros(n_locations, n_signals, n_nonzero, dtype=torch.long, device=device)
    active = torch.ones(n_locations, n_signals, dtype=torch.bool, device=device)
    dependent = torch.zeros_like(active)
    gram_rows = gram.reshape(n_locations, n_atoms * n_atoms)
    gram_diag = gram.diagonal(dim1=-2, dim2=-1)
    # The α update combines k+1 rows of G per signal: an embedding-bag sum over the rows of all
    # chunk locations stacked, (P·K, K), which reads G from cache instead of forming a dense
    # (N, K) × (K, K) product (K/k times fewer operations).
    gram_table = gram.reshape(n_locations * n_atoms, n_atoms)
    table_offset = (torch.arange(n_locations, device=device) * n_atoms).view(n_locations, 1, 1)
    residual_sq = sq_norms.clone() if tol is not None else None
    stop_level = eps * projections.square().amax(-1)  # (P, N)

    for k in range(n_nonzero):
        atom = alpha.abs().argmax(-1)  # (P, N)
        alpha_atom = alpha.gather(-1, atom[..., None]).squeeze(-1)
        # Signals already represented exactly (all-zero signals included) have no correlation
        # left. scikit-learn stops at alpha² < eps; relative to the signal's largest initial
        # correlation here, so that the codes of small-valued signals do not stop early.
        active &= (alpha_atom != 0) & (alpha_atom.square() >= stop_level)
        if residual_sq is not None:
            active &= residual_sq > tol
        diag_sq = gram_diag.gather(-1, atom)
        if k > 0:
            # G_{I,j} for the selected set I: entries (i, j) of the flattened Gram matrix.
            gram_col = gram_rows.gather(-1, (selected[..., :k] * n_atoms + atom[..., None]).flatten(1)
                                        ).view(n_locations, n_signals, k)
            w = inv_chol.lower_product(k, gram_col)
            diag_sq = diag_sq - w.square().sum(-1)
        newly_dependent = active & (diag_sq <= eps)
        dependent |= newly_dependent
        active &= ~newly_dependent
        if not bool(active.any()):
            break
        diag = torch.where(active, diag_sq, 1.0).sqrt()
        z_k = torch.where(active, alpha_atom / diag, 0.0)
        z[..., k] = z_k
        selected[..., k] = torch.where(active, atom, 0)
        # Row k of L⁻¹ is [−(L⁻ᵀw)ᵀ/d, 1/d]; stopped signals get the identity row and z_k = 0,
        # so they contribute nothing to the codes.
        off_diagonal = None
        if k > 0:
            u = inv_chol.upper_product(k, w)
            off_diagonal = torch.where(active[..., None], -u / diag[..., None], 0.0)
        inv_chol.set_row(k, off_diagonal, torch.where(active, 1.0 / diag, 1.0))
        if residual_sq is not None:
            residual_sq -= z_k.square()
        if k + 1 < n_nonzero:
            # α ← α − z_k · (row k of L⁻¹) G_I. Stopped signals have zero weights.
            weights = inv_chol.row(k) * z_k[..., None]
            rows = (selected[..., : k + 1] + table_offset).view(-1, k + 1)
            alpha -= F.embedding_bag(rows, gram_table, per_sample_weights=weights.reshape(-1, k + 1),
                                     mode="sum").view_as(alpha)

    size = inv_chol.size  # < n_nonzero when every pursuit ended early; later z are 0
    coefficients = inv_chol.upper_product(size, z[..., :size])  # γ_I = L⁻ᵀ z
    codes = torch.zeros_like(projections).scatter_add_(-1, selected[..., :size], coefficients)
    return codes, int(dependent.sum())


def _warn_dependent(n_dependent: int) -> None:
    if n_dependent:
        warnings.warn(
            f"OMP stopped early for {n_dependent} signal(s): the next atom was linearly dependent "
            "on the atoms already selected (duplicate or collinear atoms); their codes have fewer "
            "than n_nonzero non-zeros",
            LinearDependenceWarning,
            stacklevel=3,
        )


def _check_signal_shape(signals: Tensor) -> None:
    if not isinstance(signals, Tensor) or signals.ndim != 3:
        raise ValueError(
            f"signals must be a tensor of shape (P, N, C) (locations, signals, channels), got "
            f"{type(signals).__name__} of shape {tuple(getattr(signals, 'shape', ()))}"
        )


def _check_n_nonzero(n_nonzero: int, n_atoms: int, n_features: int) -> None:
    if isinstance(n_nonzero, bool) or not isinstance(n_nonzero, int) or not 1 <= n_nonzero <= min(n_atoms, n_features):
        raise ValueError(
            f"n_nonzero must be an integer in [1, min(n_atoms, n_features)] = [1, {min(n_atoms, n_features)}], "
            f"got {n_nonzero!r}"
        )


def _check_dictionary(dictionary: Tensor, signals: Tensor) -> Tensor:
    """Validate the (dictionary, signals) pair and return the dictionary as (P, K, C)."""
    _check_signal_shape(signals)
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
