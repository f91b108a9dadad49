"""The growing inverse Cholesky factor L⁻¹ of Batch-OMP, one per (location, signal).

Each OMP step needs two products with the leading k×k block, ``L⁻¹ g`` and ``L⁻ᵀ w``, for
every signal. The vectors come and go signals-last, shape (P, k, N); what is fastest differs by
device, so the storage does too:

* CUDA: matrices ``(P, N, k, k)`` and batched matrix products (one launch per product).
* CPU: signals last, ``(P, T, T, N)``, and one fused multiply-add over all signals per row or
  column of the factor. BLAS would make one call per 1×k by k×k product, which costs more than
  the arithmetic; here every operation runs over N contiguous values and only the triangle is
  touched (the measurements are in ``benchmarks/RESULTS.md``, "Design measurements").

Both give the same numbers up to rounding order; ``factor_layout`` in
:func:`~gpuksvd.sparse.batch_omp` picks one explicitly (for benchmarks and tests).
"""
from __future__ import annotations

import torch
from torch import Tensor

_GROWTH = 8

#: Storage layouts of the factor: ``"auto"`` picks signals-last on the CPU, matrices elsewhere.
FACTOR_LAYOUTS = ("auto", "matrices", "signals-last")


def check_factor_layout(layout: str) -> None:
    if layout not in FACTOR_LAYOUTS:
        raise ValueError(f"unknown factor_layout {layout!r}: choose one of {', '.join(FACTOR_LAYOUTS)}")


def inverse_factor(n_locations: int, n_signals: int, n_nonzero: int, like: Tensor, layout: str = "auto"):
    """The factor store in ``layout`` (see :data:`FACTOR_LAYOUTS`) for ``like``'s device and dtype."""
    if layout == "auto":
        layout = "signals-last" if like.device.type == "cpu" else "matrices"
    kind = SignalsLastFactor if layout == "signals-last" else MatrixFactor
    return kind(n_locations, n_signals, n_nonzero, like)


class MatrixFactor:
    """L⁻¹ as (P, N, c, c) matrices; the capacity c grows in blocks of _GROWTH so that the k×k
    block read at each step has a row stride close to k, without a copy per step."""

    def __init__(self, n_locations: int, n_signals: int, n_nonzero: int, like: Tensor) -> None:
        self.n_nonzero = n_nonzero
        size = min(n_nonzero, _GROWTH)
        self.data = like.new_zeros(n_locations, n_signals, size, size)
        self.filled = 0

    def lower_product(self, k: int, g: Tensor) -> Tensor:
        """L⁻¹[:k, :k] g for g of shape (P, k, N); the result has the same shape."""
        return (g.mT[..., None, :] @ self.data[..., :k, :k].mT).squeeze(-2).mT

    def upper_product(self, k: int, w: Tensor) -> Tensor:
        """L⁻ᵀ[:k, :k] w for w of shape (P, k, N); the result has the same shape."""
        return (w.mT[..., None, :] @ self.data[..., :k, :k]).squeeze(-2).mT

    def set_row(self, k: int, diagonal: Tensor, off_diagonal: Tensor | None = None, scale: Tensor | None = None) -> None:
        """Row k of L⁻¹: ``[off_diagonal · scale, diagonal]``, with ``off_diagonal`` of shape
        (P, k, N) (None when k = 0) and ``diagonal`` and ``scale`` of shape (P, N)."""
        if k == self.data.shape[-1]:
            grown = self.data.new_zeros(*self.data.shape[:-2], min(self.n_nonzero, k + _GROWTH),
                                        min(self.n_nonzero, k + _GROWTH))
            grown[..., :k, :k] = self.data
            self.data = grown
        self.data[..., k, k] = diagonal
        if off_diagonal is not None:
            self.data[..., k, :k] = (off_diagonal * scale[:, None]).mT
        self.filled = k + 1

    def row(self, k: int) -> Tensor:
        """Row k, entries 0..k, of shape (P, k + 1, N)."""
        return self.data[..., k, : k + 1].mT

    @property
    def size(self) -> int:
        """Rows written so far (the capacity may be larger)."""
        return self.filled


class SignalsLastFactor:
    """L⁻¹ as (P, T, T, N): entry (i, l) of every signal's factor is one contiguous row.

    Only the lower triangle is ever written or read, so the store is not zeroed. (Packing the
    triangle twice, by rows and by columns, was measured slower: ``benchmarks/RESULTS.md``.)
    """

    def __init__(self, n_locations: int, n_signals: int, n_nonzero: int, like: Tensor) -> None:
        self.data = like.new_empty(n_locations, n_nonzero, n_nonzero, n_signals)
        self.filled = 0

    def lower_product(self, k: int, g: Tensor) -> Tensor:
        # Column by column, w[i] += L[i, col] g[col] for the rows i ≥ col; the first column
        # initialises w (no zero fill).
        w = torch.mul(self.data[:, :k, 0], g[:, :1])
        for col in range(1, k):
            w[:, col:].addcmul_(self.data[:, col:k, col], g[:, col : col + 1])
        return w

    def upper_product(self, k: int, w: Tensor) -> Tensor:
        # Row by row, u[l] += L[row, l] w[row] for the columns l ≤ row; the last row, the only
        # one that spans all k columns, initialises u.
        u = torch.mul(self.data[:, k - 1, :k], w[:, k - 1 : k])
        for row in range(k - 1):
            u[:, : row + 1].addcmul_(self.data[:, row, : row + 1], w[:, row : row + 1])
        return u

    def set_row(self, k: int, diagonal: Tensor, off_diagonal: Tensor | None = None, scale: Tensor | None = None) -> None:
        self.data[:, k, k] = diagonal
        if off_diagonal is not None:
            torch.mul(off_diagonal, scale[:, None], out=self.data[:, k, :k])
        self.filled = k + 1

    def row(self, k: int) -> Tensor:
        return self.data[:, k, : k + 1]

    @property
    def size(self) -> int:
        return self.filled
