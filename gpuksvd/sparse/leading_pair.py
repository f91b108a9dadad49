"""The exact atom update's leading singular pair, for all locations at once (the torch path).

The exact K-SVD update (Aharon, Elad & Bruckstein 2006) replaces atom k by the leading right
singular vector of its restricted residual ``E_k = E + γ_k d_kᵀ`` on the atom's users, and its
codes by ``E_k d``. A full SVD of every location's M×C block per atom costs 10-80x the
approximate update; what is needed is only the top eigenpair of ``E_kᵀE_k``, and the
approximate update's direction ``E_kᵀγ_k`` is already a good start. So :func:`leading_pair`
runs a checked power iteration ``d ← E_kᵀE_k d`` from there, for all locations together:

1. The start ``v = E_kᵀγ_k``, scaled by its largest entry; ``θ₀`` its Rayleigh quotient. Later
   steps work on ``Ê = E_k/√θ₀`` (λ₁ ≥ 1 and ≈ 1 for a good start: no renormalisation between
   checks; a stride from ‖Ê‖²_F renormalises where growth could overflow).
2. Power steps ``v ← ÊᵀÊ v``: two products with the block (vectors as rows, ``v @ A``: BLAS's
   fast path for one vector); the C×C Gram matrix is never formed.
3. Convergence per location: ``‖ÊᵀÊu − θu‖ ≤ tol·θ`` with ``tol = 8·eps(dtype)``: atoms as close
   to a float64 SVD as float32 ``torch.linalg.svd``'s own (64 eps was ~10x further). Each check is
   one host sync of P numbers; the decisions are taken on the host.
4. Where to check: a :class:`PowerHint` shared by the atoms of a pass (their blocks have similar
   spectra) says after how many steps the previous atom passed and the last measured rate, so
   most atoms take one check.
5. A location converging slower than :data:`SLOW_RATE` per step (λ₂/λ₁ > 0.95: a tie or
   near-tie), or unconverged after ``most`` steps, gets ``torch.linalg.eigh`` of its own C×C
   Gram; one whose residual stalls within :data:`FLOOR_FACTOR` of the tolerance is at the
   products' rounding floor and is accepted.
6. Atom ``d = u``; codes ``γ = E_k d`` in the original scale (the least-squares codes of the new
   atom, ``σ₁u₁`` at convergence). Blocks with min(M, C) ≤ :data:`DIRECT_MAX` (e.g. M = 1) take
   eigh of their small Gram directly.

Sign (γdᵀ does not depend on it): ``⟨γ_new, γ_old⟩ ≥ 0``, i.e. ``d·(E_kᵀγ_old) ≥ 0``, the sign of
the approximate update's direction, on every device (LAPACK's SVD sign depends on the build).
Where ``E_k = 0``: the old atom and zero codes, as the approximate update.

The native kernel (``kernels.c``) computes the same pair by Lanczos iterations on the same
operator, with the same check and sign; the two agree to the tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Convergence tolerance: relative residual ‖Gu − θu‖/θ, in units of the dtype's eps.
TOL_EPS = 8.0
#: Convergence rate (relative residual per step) above which a location goes to eigh: λ₂/λ₁ > 0.95.
SLOW_RATE = 0.95
#: A residual that stops falling within this factor of the tolerance is the rounding floor of the
#: products with the block (measured 1-3 eps in float32, up to ~10 eps in float64 at M ≈ 900).
FLOOR_FACTOR = 4.0
#: Problems with min(M, C) at most this take a full eigh directly.
DIRECT_MAX = 16


@dataclass
class PowerHint:
    """What one atom's power iteration tells the next one's in the same pass, and counters.

    ``first``: the steps before the first check; ``rate``: the convergence rate per step (the
    largest seen at the last check that measured it). Counters (locations): ``solves``,
    ``checks`` (failed checks), ``fallbacks`` (eigh after slow convergence), ``direct`` (eigh of
    a small block).
    """

    first: int | None = None
    rate: float | None = None
    solves: int = 0
    checks: int = 0
    fallbacks: int = 0
    direct: int = 0


_STARTS: dict[tuple, Tensor] = {}


def _fixed_start(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A fixed pseudo-random unit vector of length n (deterministic), for zero starts."""
    key = (n, dtype, device)
    if key not in _STARTS:
        vector = torch.randn(n, generator=torch.Generator().manual_seed(20060101 + n), dtype=torch.float64)
        _STARTS[key] = (vector / vector.norm()).to(device, dtype)
    return _STARTS[key]


def power_schedule(dtype: torch.dtype) -> tuple[int, int, int]:
    """Power steps before the first check (when no :class:`PowerHint` says better), between
    checks, and at most before the eigh fallback. From the approximate update's direction, K-SVD
    blocks need 3-12 steps to 8·eps(float32) and 11-36 to 8·eps(float64)
    (``benchmarks/RESULTS.md``, "The exact atom update")."""
    if torch.finfo(dtype).bits <= 32:
        return 5, 2, 40
    return 14, 4, 120


def leading_pair(restricted: Tensor, old_codes: Tensor, old_atom: Tensor, *, tol: float | None = None,
                 schedule: tuple[int, int, int] | None = None, hint: PowerHint | None = None
                 ) -> tuple[Tensor, Tensor]:
    """Leading singular pair of the restricted residuals, as the exact update's atom and codes.

    Parameters
    ----------
    restricted : Tensor of shape (P, M, C)
        ``E_k = E + γ_k d_kᵀ`` on the atom's users, zero rows elsewhere (padding).
    old_codes : Tensor of shape (P, M)
        ``γ_k``, zero on padding rows.
    old_atom : Tensor of shape (P, C)
    tol : float, optional
        Relative residual, default ``TOL_EPS·eps(dtype)`` (8 eps).
    schedule : (first, every, most), optional
        Default :func:`power_schedule`.
    hint : PowerHint, optional
        Shared by the atoms of one pass (updated in place): where to check first, the last rate,
        the counters.

    Returns
    -------
    new_atom : Tensor of shape (P, C), unit norm (the old atom where E_k = 0)
    new_codes : Tensor of shape (P, M), ``E_k d`` (zero on padding rows), ``⟨new, old_codes⟩ ≥ 0``
    """
    hint = PowerHint() if hint is None else hint
    n_locations, n_rows, n_features = restricted.shape
    finfo = torch.finfo(restricted.dtype)
    rows_t = restricted.mT
    if min(n_rows, n_features) <= DIRECT_MAX:
        hint.direct += n_locations
        if n_rows <= n_features:  # M×M side: u₁, then d = E_kᵀu₁ / ‖·‖
            value, left = _top_eigh(torch.bmm(restricted, rows_t))
            atom = torch.bmm(left[:, None, :], restricted)
            atom = atom / atom.norm(dim=-1, keepdim=True).clamp_min(finfo.tiny)
        else:
            value, atom = _top_eigh(torch.bmm(rows_t, restricted))
            atom = atom[:, None, :]
        codes = torch.bmm(atom, rows_t)  # (P, 1, M)
        nonzero = value > 0
        all_nonzero = False
    else:
        atom, codes, theta = _power_pair(restricted, old_codes, tol, schedule, hint)
        all_nonzero = min(theta) > 0  # θ₀ = 0 only where E_k = 0 (after the restart of a zero start)
        nonzero = torch.tensor([t > 0 for t in theta], device=restricted.device)
    # Sign: ⟨γ_new, γ_old⟩ ≥ 0 (= d·E_kᵀγ_old ≥ 0, the power step's sign).
    along = torch.bmm(codes, old_codes[:, :, None])  # (P, 1, 1)
    sign = 1 - 2 * (along < 0).to(atom.dtype)
    atom, codes = (atom * sign).squeeze(1), (codes * sign).squeeze(1)
    if all_nonzero:
        return atom, codes
    nonzero = nonzero.view(-1, 1)
    return torch.where(nonzero, atom, old_atom), codes * nonzero


def _top_eigh(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Leading eigenpair of each small symmetric matrix (P, n, n) by torch.linalg.eigh."""
    values, vectors = torch.linalg.eigh(gram)
    return values[:, -1], vectors[..., -1]


def _power_pair(restricted: Tensor, old_codes: Tensor, tol: float | None, schedule: tuple[int, int, int] | None,
                hint: PowerHint) -> tuple[Tensor, Tensor, list[float]]:
    """Unit atom (P, 1, C), its codes E_k d (P, 1, M) and θ₀ per location (host floats; 0 where
    E_k = 0) by the checked power iteration (module docstring, steps 1-5).

    Check i ≥ 2 estimates each unconverged location's convergence rate from its last two relative
    residuals and runs the steps that the slowest one needs before the next check.
    """
    n_locations, _, n_features = restricted.shape
    device, dtype = restricted.device, restricted.dtype
    finfo = torch.finfo(dtype)
    tol = TOL_EPS * finfo.eps if tol is None else tol
    first, every, most = power_schedule(dtype) if schedule is None else schedule
    hint.solves += n_locations
    vector = torch.bmm(old_codes[:, None, :], restricted)  # (P, 1, C): E_kᵀγ_k, the first step
    vector = vector / vector.abs().amax(-1, keepdim=True).clamp_min(finfo.tiny)  # entries ≤ 1: no overflow
    codes = torch.bmm(vector, restricted.mT)
    start_sq = torch.bmm(vector, vector.mT).view(-1)
    codes_sq = torch.bmm(codes, codes.mT).view(-1)
    frobenius_sq = restricted.square().sum((1, 2))
    host = torch.stack((start_sq, codes_sq, frobenius_sq)).tolist()  # host sync
    bad = [p for p in range(n_locations) if host[1][p] == 0 and host[2][p] > 0]
    if bad:  # E_kᵀγ_k = 0 or E_k(E_kᵀγ_k) = 0 with E_k ≠ 0: restart there from a fixed vector
        where = torch.tensor(bad, device=device)
        fixed = _fixed_start(n_features, dtype, device).expand(len(bad), 1, n_features)
        vector = vector.index_copy(0, where, fixed)
        codes = torch.bmm(vector, restricted.mT)
        start_sq = torch.bmm(vector, vector.mT).view(-1)
        codes_sq = torch.bmm(codes, codes.mT).view(-1)
        host = torch.stack((start_sq, codes_sq, frobenius_sq)).tolist()
    theta = [c / s if c > 0 else 0.0 for s, c in zip(host[0], host[1])]
    inverse_root = [1 / math.sqrt(t) if t > 0 else 1.0 for t in theta]
    bound = max([f * r * r for f, r in zip(host[2], inverse_root)] + [1.0])
    stride = max(1, int((15 if finfo.bits <= 32 else 150) / max(math.log10(bound), 1e-3)))
    scale = torch.tensor(inverse_root, dtype=dtype, device=device).view(-1, 1, 1)
    scaled = restricted * scale
    scaled_t = scaled.mT
    vector = torch.bmm(codes, scaled) * scale

    def step(vector: Tensor) -> Tensor:
        return torch.bmm(torch.bmm(vector, scaled_t), scaled)

    steps, check_at = 2, max(first if hint.first is None else hint.first, 2)
    previous = None  # (relative residuals, steps) at the last check
    fallback: list[int] = []
    while True:
        since = 0
        while steps < check_at:
            if since == stride:
                vector = vector / vector.abs().amax(-1, keepdim=True).clamp_min(finfo.tiny)
                since = 0
            vector = step(vector)
            steps += 1
            since += 1
        unit = vector / vector.norm(dim=-1, keepdim=True).clamp_min(finfo.tiny)
        row_codes = torch.bmm(unit, scaled_t)  # (P, 1, M)
        value, product = torch.bmm(row_codes, row_codes.mT), torch.bmm(row_codes, scaled)  # θ/θ₀, ÊᵀÊu
        residual = torch.addcmul(product, value, unit, value=-1).norm(dim=-1).view(-1)
        relative = (residual / value.view(-1)).tolist()  # host sync; 0/0 = nan where E_k = 0: converged
        unconverged = [p for p, r in enumerate(relative) if r > tol]
        if not unconverged:
            # Where the next atom checks first: here, less the steps this one did not need.
            worst = max((r for r in relative if r == r), default=0.0)  # nan: E_k = 0
            spare = 0
            if hint.rate is not None and 0 < worst and 0 < hint.rate < 1:
                spare = int(math.log(tol / worst) / math.log(1 / hint.rate))
            hint.first = max(2, steps - spare)
            break
        hint.checks += len(unconverged)
        if steps >= most:
            fallback = unconverged
            break
        advance = every
        if previous is not None:
            span = steps - previous[1]
            rates = {p: (relative[p] / max(previous[0][p], finfo.tiny)) ** (1 / span) for p in unconverged}
            moving = [p for p in unconverged if rates[p] <= SLOW_RATE]
            if not moving:
                # Stalled: at the rounding floor (accepted) or a (near-)tie (eigh).
                fallback = [p for p in unconverged if relative[p] > FLOOR_FACTOR * tol]
                break
            hint.rate = max(rates[p] for p in moving)
            advance = max(1, min(most - steps, max(math.ceil(math.log(tol / relative[p]) / math.log(rates[p]))
                                                  for p in moving)))
        elif hint.rate is not None and hint.rate < 1:  # the last measured rate predicts the steps left
            advance = max(1, min(most - steps, math.ceil(math.log(tol / max(relative[p] for p in unconverged))
                                                         / math.log(hint.rate))))
        previous = (relative, steps)
        vector = product
        steps += 1
        check_at = steps + advance - 1
    codes = torch.bmm(unit, restricted.mT)  # E_k d in the original scale
    if fallback:
        where = torch.tensor(fallback, device=device)
        hint.fallbacks += len(fallback)
        sub = restricted.index_select(0, where)
        _, vectors = torch.linalg.eigh(torch.bmm(sub.mT, sub))
        unit = unit.index_copy(0, where, vectors[..., -1][:, None, :])
        codes = torch.bmm(unit, restricted.mT)
    return unit, codes, theta
