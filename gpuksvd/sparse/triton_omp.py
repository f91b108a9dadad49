"""Fused Batch-OMP in Triton: one kernel launch codes every (location, signal) pair.

``kernel="triton"`` of :func:`~gpuksvd.sparse.batch_omp` and :func:`~gpuksvd.sparse.ksvd` (opt-in:
see ``benchmarks/RESULTS.md``, "Fused Triton Batch-OMP", for the design, the traffic model and
what a GPU run has and has not measured). Algorithm: Batch-OMP of Rubinstein, Zibulevsky & Elad
(2008, Alg. 3, Gram form) with the inverse Cholesky factor L⁻¹, exactly as the torch path
:func:`gpuksvd.sparse.omp._gram_omp` (same selection, same stopping rules, same arithmetic up to
rounding order). Per signal, with ``G`` the location's Gram matrix and ``α = α⁰ = D x`` initially, step k:

    j    = argmax_a |α_a|                 first index on ties (torch's ``abs().argmax()``)
    stop if α_j² ≤ eps·max_a(α⁰_a²)       (relative: zero signals stop at once)
    stop if ‖r‖² ≤ tol                    (optional, ‖r‖² = ‖x‖² − Σ z²)
    g    = G[I, j]                        (k gathered Gram entries)
    w    = L⁻¹ g,  u = L⁻ᵀ w              ONE pass over the rows of L⁻¹ (see below)
    d²   = G_jj − wᵀw;  stop (linearly dependent, counted) if d² ≤ eps
    z_k  = α_j / d
    row k of L⁻¹ = [−uᵀ/d, 1/d]
    α   −= z_k · Σ_{i≤k} L⁻¹[k, i] · G[I_i, :]      (k+1 gathered Gram rows)

and at the end ``γ_I = L⁻ᵀ z`` scattered into the codes. Stopped signals contribute nothing.

The two triangular products share one pass over the factor: ``w_i = L⁻¹[i, :] · g`` needs only
row i, and ``u = L⁻ᵀ w = Σ_i w_i · L⁻¹[i, :]`` accumulates the same row, so each row of L⁻¹ is
read once per step instead of twice (the torch code reads it twice).

Kernel layout (``_batch_omp_kernel``)
-------------------------------------
One program owns a tile of BLOCK_N signals of ONE location at a time (persistent grid: program
``pid`` takes tiles ``pid, pid + n_programs, ...``; by default one 16-warp program per SM, so
that the signals sharing an SM's L1, and the location's Gram rows cached there, belong to one
location) and runs their whole pursuit in one device-side loop.

On chip (registers) across all steps of a tile:
    α                 (BLOCK_N, KP)   the correlations, updated in place
    selected atoms    (BLOCK_N, TP)   int32, −1 for steps where the signal was stopped
    stop level, ‖r‖², active and dependent flags   (BLOCK_N,)
Per step, transient: g, u, one factor row, the new factor row (BLOCK_N, TP), one gathered
Gram row (BLOCK_N, KP). EN-B6 (BLOCK_N = 32, KP = 256, TP = 64, 16 warps): α 32 KB, selected
8 KB, transients 48 KB of the program's 256 KB register file (128 registers × 512 threads).

In a global scratch owned by the program (one slot per program, reused tile after tile: a few
tens of MB in all, meant to stay in L2, read with ``.cg`` so that it does not evict the Gram
rows from L1):
    L⁻¹      packed lower triangle, rows padded to multiples of 4 values (16-byte aligned,
             vectorised loads): ``factor_stride(T)`` values per signal (EN-B6: 1360 = 5.3 KB,
             170 KB per 32-signal tile: too big for registers, and Triton has no explicit
             shared memory)
    I, z     (BLOCK_N, TP) the selected atoms and z, read back as scalars per row in the
             α update and the final γ (cheaper than extracting a column of a register tile)
Values written in one phase and read by other threads of the program in a later one are
separated by ``tl.debug_barrier()`` (CUDA ``__syncthreads``, which also makes the block's
global writes visible to the whole block): after the new factor row / I_k / z_k stores, at
the start of every tile, and around the dense update's scratch. The interpreter runs programs
one after another and treats the barrier as a no-op, so these are reasoned, not tested, here.

Two forms of the α update (``alpha_update``):
    "gather"  (default) per signal, k+1 Gram rows, exact fp32 FMAs in torch's order. Data
              movement: T²K/2 values per signal, served by L1 when the location's G fits
              there (EN-B6: 160 KB), by L2 otherwise (RN18: 256 KB; WRN50: 4 MB).
    "dense"   per tile, the coefficients scattered over all atoms, α −= C̃ G as a tensor-core
              ``tl.dot`` in tf32x3 (≈ fp32 accuracy): G is read once per tile-step for all
              BLOCK_N signals, at K/k times the MACs. For RN18-like K where G misses L1.

Constraints compiled Triton enforces and the interpreter does not (checked by
:func:`plan_launch`, which raises :class:`LaunchConfigError`; calibrated with ptxas for sm_90a
for sm_90a with ``ptxas -v`` on the kernel compiled ahead of time for ``GPUTarget("cuda", 90)``):
    * every ``tl.arange`` extent is a power of two: K and T are padded to KP, TP and masked;
      BLOCK_N and num_warps are powers of two;
    * ``tl.dot`` (dense update only) needs every dimension ≥ 16: BLOCK_N ≥ 16, DOT_K ≥ 16,
      KP ≥ 16; fp32 ``tl.dot`` defaults to TF32 (10-bit mantissa), so tf32x3 is explicit;
    * registers: 64K 32-bit per SM, ≤ 255 per thread. The α tile's words per thread,
      BLOCK_N·KP·(itemsize/4)/(32·num_warps), are kept ≤ 16, which ptxas compiles to 128
      registers with ≤ 28 bytes of spill (gathered update); 32 words per thread spill ≥ 200
      bytes. The kernel is compiled with maxnreg = 128 (gathered) or up to 255 (dense);
    * shared memory (H100/H200: 228 KB per SM, 227 KB per block): 8 KB for reductions and
      layout conversions (gathered); the dense update's pipelined Gram chunks
      DOT_K·KP·4·num_stages ≤ 160 KB (102 KB measured at KP = 256);
    * fp32 ``sqrt``/``/`` are approximate in compiled Triton: ``sqrt_rn``/``div_rn`` are used
      for float32 (IEEE, like torch); float64 ``sqrt`` and ``/`` are IEEE already;
    * Python floats become fp32 kernel arguments: ``tol`` is passed as a one-element tensor of
      the working dtype, and eps as a constexpr power of two (exact in either dtype).

No host synchronisation: the launcher reads no device value (no ``.item()``, no ``int(...)``);
the pursuit's early exit is a device-side ``while`` on the tile's active count, and the number
of dependent pursuits is returned as a 0-d device tensor. The whole call can be captured in a
CUDA graph.

Where it runs: CUDA tensors run the compiled kernel. With ``TRITON_INTERPRET=1`` in the
environment *before triton is first imported* (Triton decorates its own library functions
then), the same kernel runs in Triton's numpy interpreter on CPU tensors: for tests, on small
sizes (about a millisecond per tile operation). The test suite sets it in ``tests/conftest.py``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor


# ----------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------

@triton.jit
def _batch_omp_kernel(
    gram_ptr,        # (P, K, GS) the Gram matrices, rows zero-padded to GS = K rounded up to
                     #     4 columns: a constexpr row stride, a multiple of 4, lets compiled
                     #     Triton use 16-byte row loads; columns ≥ GS are masked (no traffic)
    proj_ptr,        # (P, N, K) contiguous, α⁰ = signals @ dictionaryᵀ
    sqn_ptr,         # (P, N) squared signal norms (read only when HAS_TOL)
    tol_ptr,         # (1,) tol in the working dtype (read only when HAS_TOL; a tensor so that a
                     #     float64 tol is not rounded to the fp32 of Triton's float arguments)
    codes_ptr,       # (P, N, K) output, zero-filled by the caller; only the support is written
    dep_ptr,         # (P, N) int32 output: 1 where the pursuit stopped on a dependent atom
    fac_ptr,         # (n_programs, BLOCK_N, FAC_STRIDE) scratch: packed, padded L⁻¹ rows
    idx_ptr,         # (n_programs, BLOCK_N, TP) int32 scratch: selected atoms
    z_ptr,           # (n_programs, BLOCK_N, TP) scratch: z
    dense_ptr,       # (n_programs, BLOCK_N, KP) zero-filled scratch (ALPHA_DENSE only): the
                     #     step's α-update coefficients scattered over all atoms
    N, K, T,         # signals per location, atoms, n_nonzero (runtime: one compile per padding)
    FAC_STRIDE,      # values per signal in fac_ptr: factor_stride(T), a multiple of 16
    n_blocks,        # ceil(N / BLOCK_N): signal tiles per location
    n_tiles,         # P · n_blocks
    BLOCK_N: tl.constexpr,      # signals per tile (power of two)
    KP: tl.constexpr,           # K padded to a power of two
    GS: tl.constexpr,           # Gram row stride: K rounded up to a multiple of 4
    TP: tl.constexpr,           # T padded to a power of two
    ALPHA_UNROLL: tl.constexpr,  # Gram rows loaded per iteration of the α update (1 or 2)
    ALPHA_DENSE: tl.constexpr,  # α update as a dense tile product on tensor cores (see below)
    DOT_K: tl.constexpr,        # reduction chunk of the dense product (≥ 16, power of two)
    DOT_PRECISION: tl.constexpr,  # "tf32x3" (float32: ≈ fp32 accuracy) or "ieee" (float64)
    HAS_TOL: tl.constexpr,
    IS_FP64: tl.constexpr,
    EPS: tl.constexpr,          # finfo(dtype).eps (a power of two: exact in any float type)
):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    dtype = proj_ptr.dtype.element_ty

    rloc = tl.arange(0, BLOCK_N)                 # signal within the tile
    kc = tl.arange(0, KP)                        # atom
    tc = tl.arange(0, TP)                        # step / factor column
    k_ok = kc < K
    g_ok = kc < GS                               # constexpr bound: constant over groups of 4

    # This program's scratch slot: a scalar base pointer (int64: n_programs · BLOCK_N ·
    # FAC_STRIDE can pass 2³¹ at WRN50) plus int32 offsets within the slot, so that no tile of
    # 64-bit pointers stays live across the loops (register pressure).
    fac_slot = fac_ptr + pid.to(tl.int64) * BLOCK_N * FAC_STRIDE
    idx_slot = idx_ptr + pid.to(tl.int64) * BLOCK_N * TP
    z_slot = z_ptr + pid.to(tl.int64) * BLOCK_N * TP
    fac_row0 = rloc * FAC_STRIDE                 # (BLOCK_N,) offset of each signal's factor
    slot_row0 = rloc * TP
    dense_slot = dense_ptr + pid.to(tl.int64) * BLOCK_N * KP
    dense_row0 = rloc * KP
    dk = tl.arange(0, DOT_K)

    for tile in range(pid, n_tiles, n_programs):
        # The previous tile's last reads of the scratch must be done before it is rewritten.
        tl.debug_barrier()
        loc = tile // n_blocks
        rows = (tile % n_blocks) * BLOCK_N + rloc
        row_ok = rows < N
        first = loc.to(tl.int64) * N + (tile % n_blocks) * BLOCK_N   # flat index of row 0
        gram_loc = gram_ptr + loc.to(tl.int64) * K * GS
        proj_tile = proj_ptr + first * K
        codes_tile = codes_ptr + first * K

        alpha = tl.load(proj_tile + rloc[:, None] * K + kc[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        stop_level = EPS * tl.max(alpha * alpha, axis=1)     # relative stopping level
        active = row_ok
        dependent = rloc < 0                                  # all False
        if HAS_TOL:
            residual_sq = tl.load(sqn_ptr + first + rloc, mask=row_ok, other=0.0)
            tol = tl.load(tol_ptr)
        selected = tl.full((BLOCK_N, TP), -1, tl.int32)      # I, −1 where none

        k = 0
        n_active = tl.sum(active.to(tl.int32), axis=0)
        while (k < T) & (n_active > 0):       # device-side early exit: no host sync
            # -- atom selection: first index of the largest |α| ------------------------------
            # Padded columns hold exactly 0 (α⁰ and G are zero or masked there) and come last,
            # so they can only win when every |α| is 0, and then the first index (0) wins.
            _, atom = tl.max(tl.abs(alpha), axis=1, return_indices=True,
                             return_indices_tie_break_left=True)            # int32 (BLOCK_N,)
            alpha_atom = tl.sum(tl.where(kc[None, :] == atom[:, None], alpha, 0.0), axis=1)
            active = active & (alpha_atom * alpha_atom > stop_level)
            if HAS_TOL:
                active = active & (residual_sq > tol)

            # -- w = L⁻¹ g and u = L⁻ᵀ w in one pass over the factor rows -------------------
            diag_sq = tl.load(gram_loc + atom * (GS + 1), mask=active, other=1.0)
            g = tl.load(gram_loc + selected * GS + atom[:, None],
                        mask=(selected >= 0) & active[:, None], other=0.0)    # G[I, j]
            u = tl.zeros((BLOCK_N, TP), dtype)
            w_sq = tl.zeros((BLOCK_N,), dtype)
            for i in range(0, k):
                # Row i of the packed factor: rows are padded to multiples of 4 values, so that
                # every row starts 16-byte aligned (vectorised loads) and the mask, its padded
                # width 4(q+1) with q = i // 4, is constant over groups of 4. Rows 4q … 4q+3
                # take 4(q+1) values each, so rows before 4q take 16(1 + … + q) = 8q(q+1).
                q = i // 4
                row_start = 8 * q * (q + 1) + 4 * (q + 1) * (i - 4 * q)
                # ".cg": cached in L2 only, so that the factor stream does not evict the
                # location's Gram rows from L1 (they are re-read by every α update).
                fac = tl.load(fac_slot + fac_row0[:, None] + row_start + tc[None, :],
                              mask=(tc[None, :] < 4 * (q + 1)) & active[:, None], other=0.0,
                              cache_modifier=".cg")
                w = tl.sum(fac * g, axis=1)                                   # w_i (BN,)
                w_sq += w * w
                u += w[:, None] * fac
            diag_sq = diag_sq - w_sq
            newly_dependent = active & (diag_sq <= EPS)
            dependent = dependent | newly_dependent
            active = active & (diag_sq > EPS)

            # -- the new factor row, z_k, bookkeeping ---------------------------------------
            safe = tl.where(active, diag_sq, 1.0)
            if IS_FP64:
                inv_diag = 1.0 / tl.sqrt(safe)                 # IEEE in float64
            else:
                inv_diag = tl.math.div_rn(1.0, tl.math.sqrt_rn(safe))
            inv_diag = tl.where(active, inv_diag, 0.0)         # stopped: zero row, z_k = 0
            z_k = alpha_atom * inv_diag
            new_row = tl.where(tc[None, :] < k, -u * inv_diag[:, None],
                               tl.where(tc[None, :] == k, inv_diag[:, None], 0.0))
            qk = k // 4
            row_k = fac_row0 + 8 * qk * (qk + 1) + 4 * (qk + 1) * (k - 4 * qk)   # (BLOCK_N,)
            tl.store(fac_slot + row_k[:, None] + tc[None, :], new_row,
                     mask=(tc[None, :] < 4 * (qk + 1)) & row_ok[:, None])
            atom_or_none = tl.where(active, atom, -1)
            tl.store(idx_slot + slot_row0 + k, atom_or_none, mask=row_ok)
            tl.store(z_slot + slot_row0 + k, z_k, mask=row_ok)
            selected = tl.where(tc[None, :] == k, atom_or_none[:, None], selected)
            if HAS_TOL:
                residual_sq -= z_k * z_k
            tl.debug_barrier()   # row k, I_k and z_k are read below by other threads

            # -- α −= z_k · Σ_{i≤k} L⁻¹[k, i] G[I_i, :] (not after the last step) -----------
            if ALPHA_DENSE:
                if k + 1 < T:
                    # Dense form, for large K (RN18, WRN50): the tile's coefficients are scattered
                    # over all KP atoms, C̃ (BLOCK_N, KP), and α −= C̃ G runs as a tensor-core product
                    # streaming G in (DOT_K, GS) chunks: G is read once per tile-step and shared by
                    # the BLOCK_N signals, instead of (k+1) rows per signal (K/k more MACs, on
                    # tensor cores; tf32x3 keeps ≈ fp32 accuracy). Every step rewrites all support
                    # positions (a stopped signal's coefficients are 0), so no re-zeroing per step.
                    coef = z_k[:, None] * new_row                                # (BN, TP)
                    tl.store(dense_slot + dense_row0[:, None] + selected, coef,
                             mask=(selected >= 0) & row_ok[:, None])
                    tl.debug_barrier()   # the scattered coefficients are read by other threads
                    for r in range(0, KP, DOT_K):
                        rr = r + dk
                        coef_chunk = tl.load(dense_slot + dense_row0[:, None] + rr[None, :])   # (BN, DOT_K)
                        gram_chunk = tl.load(gram_loc + rr[:, None] * GS + kc[None, :],
                                             mask=(rr < K)[:, None] & g_ok[None, :], other=0.0)  # (DOT_K, KP)
                        alpha = tl.dot(-coef_chunk, gram_chunk, alpha, input_precision=DOT_PRECISION)
            else:
                if k + 1 < T:
                    for i in range(0, k + 1, ALPHA_UNROLL):
                        # ALPHA_UNROLL independent Gram-row loads in flight per iteration; the
                        # subtractions stay in order i = 0, 1, … (torch's rounding order).
                        weight = tl.load(fac_slot + row_k + i, mask=active, other=0.0) * z_k
                        atom_i = tl.load(idx_slot + slot_row0 + i, mask=active, other=0)
                        gram_row = tl.load(gram_loc + atom_i[:, None] * GS + kc[None, :],
                                           mask=active[:, None] & g_ok[None, :], other=0.0)
                        if ALPHA_UNROLL == 2:
                            second = active & (i + 1 <= k)
                            weight2 = tl.load(fac_slot + row_k + i + 1, mask=second, other=0.0) * z_k
                            atom_i2 = tl.load(idx_slot + slot_row0 + i + 1, mask=second, other=0)
                            gram_row2 = tl.load(gram_loc + atom_i2[:, None] * GS + kc[None, :],
                                                mask=second[:, None] & g_ok[None, :], other=0.0)
                            alpha -= weight[:, None] * gram_row
                            alpha -= weight2[:, None] * gram_row2
                        else:
                            alpha -= weight[:, None] * gram_row
            k += 1
            n_active = tl.sum(active.to(tl.int32), axis=0)

        # -- γ_I = L⁻ᵀ z = Σ_m z_m · L⁻¹[m, :], scattered into the codes ----------------------
        gamma = tl.zeros((BLOCK_N, TP), dtype)
        for m in range(0, k):
            z_m = tl.load(z_slot + slot_row0 + m, mask=row_ok, other=0.0)
            q = m // 4
            row_start = 8 * q * (q + 1) + 4 * (q + 1) * (m - 4 * q)
            fac = tl.load(fac_slot + fac_row0[:, None] + row_start + tc[None, :],
                          mask=(tc[None, :] < 4 * (q + 1)) & row_ok[:, None], other=0.0)
            gamma += z_m[:, None] * fac
        # Atoms of a pursuit are distinct while it is active (a repeated atom has d² ≈ 0 and
        # stops it as dependent), so the stores do not collide; stopped steps have −1.
        tl.store(codes_tile + rloc[:, None] * K + selected, gamma,
                 mask=(selected >= 0) & row_ok[:, None])
        tl.store(dep_ptr + first + rloc, dependent.to(tl.int32), mask=row_ok)
        if ALPHA_DENSE:
            # Leave the dense scratch zero for the next tile (after the last step's reads).
            tl.debug_barrier()
            tl.store(dense_slot + dense_row0[:, None] + selected, tl.zeros((BLOCK_N, TP), dtype),
                     mask=(selected >= 0) & row_ok[:, None])


def factor_stride(n_nonzero: int) -> int:
    """Values per signal of the packed factor with rows padded to multiples of 4 (the start of
    row T, see the factor loop of the kernel), rounded up to 16."""
    q = n_nonzero // 4
    total = 8 * q * (q + 1) + 4 * (q + 1) * (n_nonzero - 4 * q)
    return -(-total // 16) * 16


# ----------------------------------------------------------------------------------------------
# Launch planning: the compiled-Triton constraints, checked on the host
# ----------------------------------------------------------------------------------------------

class LaunchConfigError(ValueError):
    """A block-size choice that compiled Triton would reject or that would spill registers."""


#: Registers per thread the gathered kernel is compiled for (``maxnreg``): 128 fits one
#: 16-warp program (or two 8-warp programs) per SM in the 64K-register file.
MAX_REGISTERS = 128
#: 32-bit words of the α tile per thread that fit MAX_REGISTERS. Calibrated with ptxas for
#: sm_90a (benchmarks/triton_compile_check.py): 16 words per thread (α (32, 256) fp32 on 16 warps,
#: (16, 256) on 8, (8, 1024) on 16, float64 (16, 256) on 16) compile to 128 registers with
#: 0-28 bytes of spill per thread; 32 words spill 200 bytes to 1.2 KB (255 registers).
ALPHA_WORDS_PER_THREAD = 16
#: Shared memory Triton may use per program (reductions, layout conversions): 2–8 KB measured;
#: checked against a conservative bound well under H100/H200's 227 KB per block.
SHARED_BUDGET = 96 * 1024
#: Shared memory for the dense α update's pipelined Gram chunks (of 227 KB per block).
DOT_SHARED_BUDGET = 160 * 1024
REGISTERS_PER_SM = 65536


@dataclass(frozen=True)
class LaunchPlan:
    block_n: int
    kp: int
    gs: int                     # Gram row stride: K rounded up to 4
    tp: int
    num_warps: int
    alpha_unroll: int
    alpha_words_per_thread: int
    alpha_dense: bool           # α update as a dense tensor-core product (tl.dot)
    dot_k: int                  # its reduction chunk
    num_stages: int             # software-pipelining depth of the dense product's loads
    programs_per_sm: int        # what maxnreg allows in the 64K-register file
    maxnreg: int                # registers per thread the kernel is compiled for

    def scratch_bytes(self, n_programs: int, n_nonzero: int, itemsize: int) -> int:
        return n_programs * self.block_n * (factor_stride(n_nonzero) * itemsize + self.tp * (itemsize + 4))


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def plan_launch(n_atoms: int, n_nonzero: int, dtype: torch.dtype, *, block_n: int | None = None,
                num_warps: int | None = None, alpha_unroll: int = 1, alpha_update: str = "gather") -> LaunchPlan:
    """Block sizes for :func:`fused_batch_omp`, checked against compiled Triton's constraints.

    The α tile (BLOCK_N, KP) is the largest register-resident value: its words per thread,
    ``BLOCK_N · KP · (itemsize/4) / (32 · num_warps)``, must stay ≤ ALPHA_WORDS_PER_THREAD
    (the (BLOCK_N, TP) tiles are no larger, T ≤ K). Defaults: 16 warps, i.e. one program per
    SM, so that the signals sharing an SM's L1 (and its copy of the location's Gram rows) all
    belong to one location, and the largest BLOCK_N ≤ 64 that fits (EN-B6/RN18 float32: 32;
    WRN50: 8). Explicit values are validated; :class:`LaunchConfigError` otherwise.
    """
    if dtype not in (torch.float32, torch.float64):
        raise LaunchConfigError(f"float32 or float64 only, got {dtype}")
    words = torch.finfo(dtype).bits // 32
    kp = triton.next_power_of_2(n_atoms)
    tp = triton.next_power_of_2(n_nonzero)
    for name, value in (("block_n", block_n), ("num_warps", num_warps)):
        if value is not None and not _is_power_of_two(value):
            raise LaunchConfigError(f"{name} must be a power of two (tl.arange extents are), got {value}")
    if num_warps is not None and not 1 <= num_warps <= 16:
        raise LaunchConfigError(f"num_warps must be 1 … 16 (MAX_REGISTERS={MAX_REGISTERS} per thread "
                                f"× 32 · num_warps threads must fit 64K registers), got {num_warps}")
    if alpha_unroll not in (1, 2):
        raise LaunchConfigError(f"alpha_unroll must be 1 or 2, got {alpha_unroll}")
    if alpha_update not in ("gather", "dense"):
        raise LaunchConfigError(f"alpha_update must be 'gather' or 'dense', got {alpha_update!r}")
    dense = alpha_update == "dense"
    if dense:
        kp = max(kp, 16)  # tl.dot: every dimension ≥ 16

    def words_per_thread(bn: int, nw: int) -> int:
        return -(-bn * kp * words // (32 * nw))

    if num_warps is None:
        # Dense: 8 warps and up to 255 registers per thread (one program per SM either way).
        num_warps = 8 if dense else 16
    if block_n is None:
        block_n = 64
        while block_n > 1 and words_per_thread(block_n, num_warps) > ALPHA_WORDS_PER_THREAD:
            block_n //= 2
    if dense and block_n < 16:
        raise LaunchConfigError(f"the dense α update (tl.dot) needs block_n ≥ 16 (every dot dimension ≥ 16), "
                                f"got {block_n}: use more warps or the gathered update (at WRN50's K the "
                                f"dense update needs α in an L2 scratch, see benchmarks/RESULTS.md)")
    per_thread = words_per_thread(block_n, num_warps)
    if per_thread > ALPHA_WORDS_PER_THREAD:
        raise LaunchConfigError(
            f"the α tile ({block_n}, {kp}) of {dtype} takes {per_thread} words per thread on {num_warps} "
            f"warps, more than {ALPHA_WORDS_PER_THREAD}: it would spill registers (sm_90, maxnreg="
            f"{MAX_REGISTERS}). Use a smaller block_n or more warps."
        )
    if block_n * kp * 4 * words > SHARED_BUDGET:
        raise LaunchConfigError(f"a ({block_n}, {kp}) tile exceeds the shared-memory budget of a layout conversion")
    # The gathered update fits MAX_REGISTERS (calibrated); the dense one's tf32x3 product needs
    # more (hi/lo operand splits, MMA-layout accumulator): give it the whole register file of a
    # one-program-per-SM launch (≤ 255 per thread), which ptxas showed to spill at 128.
    maxnreg = MAX_REGISTERS if not dense else min(255, REGISTERS_PER_SM // (32 * num_warps))
    per_sm = max(1, REGISTERS_PER_SM // (maxnreg * 32 * num_warps))
    # The dense product's Gram chunks (DOT_K, KP) pass through shared memory, num_stages deep.
    dot_k, num_stages = min(32, kp), 3
    if dense:
        while dot_k > 16 and dot_k * kp * 4 * words * num_stages > DOT_SHARED_BUDGET:
            dot_k //= 2
        while num_stages > 1 and dot_k * kp * 4 * words * num_stages > DOT_SHARED_BUDGET:
            num_stages -= 1
        if dot_k * kp * 4 * words * num_stages > DOT_SHARED_BUDGET:
            raise LaunchConfigError(f"a ({dot_k}, {kp}) Gram chunk does not fit the shared-memory budget "
                                    f"({DOT_SHARED_BUDGET} B)")
    return LaunchPlan(block_n, kp, -(-n_atoms // 4) * 4, tp, num_warps, alpha_unroll, per_thread, dense,
                      dot_k, num_stages, per_sm, maxnreg)


def interpreting() -> bool:
    """Whether kernels run in Triton's numpy interpreter (``TRITON_INTERPRET=1``; it takes effect
    only if set before triton was first imported)."""
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older Triton
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: Programs (and scratch slots) in the interpreter: few, so that the persistent loop over tiles
#: is exercised by small tests.
INTERPRETER_PROGRAMS = 3


def fused_batch_omp(gram: Tensor, projections: Tensor, n_nonzero: int, sq_norms: Tensor | None = None,
                    tol: float | None = None, *, block_n: int | None = None, num_warps: int | None = None,
                    alpha_unroll: int = 1, alpha_update: str = "gather",
                    n_programs: int | None = None) -> tuple[Tensor, Tensor]:
    """Batch-OMP codes of every (location, signal) pair, one fused kernel launch.

    Same contract as ``gpuksvd.omp._gram_omp`` (the pursuit on precomputed Gram matrix and
    projections), without any host synchronisation.

    Parameters
    ----------
    gram : Tensor of shape (P, K, K)
        ``dictionary @ dictionaryᵀ`` per location (unit-norm atoms: unit diagonal).
    projections : Tensor of shape (P, N, K)
        ``α⁰ = signals @ dictionaryᵀ``; float32 or float64, the same dtype and device as gram.
    n_nonzero : int
        Atoms per signal T, 1 ≤ T ≤ K.
    sq_norms : Tensor of shape (P, N), needed with ``tol``
        Squared norms of the signals.
    tol : float, optional
        Stop a pursuit once its squared residual norm is ≤ tol.
    block_n, num_warps, alpha_unroll : int, optional
        Override :func:`plan_launch`'s choices (validated).
    alpha_update : {"gather", "dense"}
        "gather" (default): the α update reads the k+1 Gram rows of each signal's support, exact
        fp32 FMAs in torch's order. "dense": one tensor-core product per tile and step with the
        scattered coefficients (tl.dot, tf32x3 in float32), G shared by the tile's signals;
        meant for K ≥ 256 where G does not stay in L1 (see benchmarks/RESULTS.md). Needs block_n ≥ 16.
    n_programs : int, optional
        Persistent programs (= scratch slots). Default: SMs × programs per SM on CUDA,
        :data:`INTERPRETER_PROGRAMS` in the interpreter; never more than the tiles.

    Returns
    -------
    codes : Tensor of shape (P, N, K)
    n_dependent : 0-d int32 tensor on the same device
        Pursuits that stopped on a linearly dependent atom (no host sync here: ``int()`` it
        where a warning is wanted).

    Device: CUDA tensors run the compiled kernel. In the interpreter (:func:`interpreting`) the
    kernel takes CPU tensors (CUDA tensors would be copied to the host and back); CPU tensors
    without it raise.
    """
    if gram.ndim != 3 or projections.ndim != 3:
        raise ValueError(f"gram (P, K, K) and projections (P, N, K) expected, got {tuple(gram.shape)} "
                         f"and {tuple(projections.shape)}")
    n_locations, n_signals, n_atoms = projections.shape
    if gram.shape != (n_locations, n_atoms, n_atoms):
        raise ValueError(f"gram has shape {tuple(gram.shape)}, expected ({n_locations}, {n_atoms}, {n_atoms})")
    dtype = projections.dtype
    if dtype not in (torch.float32, torch.float64) or gram.dtype != dtype:
        raise ValueError(f"gram and projections must share float32 or float64, got {gram.dtype} and {dtype}")
    if gram.device != projections.device:
        raise ValueError(f"gram is on {gram.device} but projections on {projections.device}")
    if isinstance(n_nonzero, bool) or not isinstance(n_nonzero, int) or not 1 <= n_nonzero <= n_atoms:
        raise ValueError(f"n_nonzero must be an integer in [1, {n_atoms}], got {n_nonzero!r}")
    if tol is not None:
        if not tol >= 0:
            raise ValueError(f"tol must be a non-negative squared residual norm, got {tol!r}")
        if sq_norms is None or sq_norms.shape != (n_locations, n_signals):
            raise ValueError("tol needs sq_norms of shape (P, N)")
    device = projections.device
    interpret = interpreting()
    if device.type != "cuda" and not interpret:
        raise RuntimeError(f"the fused Triton Batch-OMP (kernel='triton') runs on CUDA tensors, got {device.type} "
                           "tensors: use kernel='auto' on the CPU (Triton's interpreter runs it on the CPU for "
                           "tests only: TRITON_INTERPRET=1 before triton is imported)")

    codes = torch.zeros_like(projections)
    dependent = torch.zeros(n_locations, n_signals, dtype=torch.int32, device=device)
    if n_locations == 0 or n_signals == 0:
        return codes, dependent.sum(dtype=torch.int32)

    plan = plan_launch(n_atoms, n_nonzero, dtype, block_n=block_n, num_warps=num_warps,
                       alpha_unroll=alpha_unroll, alpha_update=alpha_update)
    n_blocks = triton.cdiv(n_signals, plan.block_n)
    n_tiles = n_locations * n_blocks
    if n_programs is None:
        if not interpret:
            sms = torch.cuda.get_device_properties(device).multi_processor_count  # host query, no sync
            n_programs = sms * plan.programs_per_sm
        else:
            n_programs = INTERPRETER_PROGRAMS
    n_programs = max(1, min(int(n_programs), n_tiles))

    if plan.gs != n_atoms:  # rows padded with zeros to a multiple of 4 (16-byte row starts)
        gram = torch.nn.functional.pad(gram, (0, plan.gs - n_atoms))
    gram = gram.contiguous()
    projections = projections.contiguous()
    stride = factor_stride(n_nonzero)
    factor = torch.empty(n_programs, plan.block_n, stride, dtype=dtype, device=device)
    atoms = torch.empty(n_programs, plan.block_n, plan.tp, dtype=torch.int32, device=device)
    z = torch.empty(n_programs, plan.block_n, plan.tp, dtype=dtype, device=device)
    dense = (torch.zeros(n_programs, plan.block_n, plan.kp, dtype=dtype, device=device) if plan.alpha_dense
             else z)  # never read without ALPHA_DENSE
    if tol is not None:
        sq_norms = sq_norms.to(dtype).contiguous()
        tol_tensor = torch.full((1,), tol, dtype=dtype, device=device)
    else:
        sq_norms = tol_tensor = projections  # never read (HAS_TOL is False)

    _batch_omp_kernel[(n_programs,)](
        gram, projections, sq_norms, tol_tensor, codes, dependent, factor, atoms, z, dense,
        n_signals, n_atoms, n_nonzero, stride, n_blocks, n_tiles,
        BLOCK_N=plan.block_n, KP=plan.kp, GS=plan.gs, TP=plan.tp, ALPHA_UNROLL=plan.alpha_unroll,
        ALPHA_DENSE=plan.alpha_dense, DOT_K=plan.dot_k,
        DOT_PRECISION="ieee" if dtype == torch.float64 else "tf32x3", num_stages=plan.num_stages,
        HAS_TOL=tol is not None, IS_FP64=dtype == torch.float64, EPS=torch.finfo(dtype).eps,
        num_warps=plan.num_warps, maxnreg=plan.maxnreg,
    )
    return codes, dependent.sum(dtype=torch.int32)
