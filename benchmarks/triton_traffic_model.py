"""Traffic and time model of one Batch-OMP pass (one K-SVD iteration's sparse coding) on an H200.

Prints the tables of benchmarks/RESULTS.md, "Fused Triton Batch-OMP". Counts follow the kernel in
gpuksvd/sparse/triton_omp.py exactly (padded rows,
masked lanes); bandwidths are nominal or widely measured values, marked as assumptions.

    python benchmarks/triton_traffic_model.py
"""
from __future__ import annotations

from dataclasses import dataclass

# --- H200 (GH100, 132 SMs) assumptions --------------------------------------------------------
SMS = 132
CLOCK = 1.98e9                 # boost clock, Hz
HBM = 4.8e12                   # B/s, nominal
L2_BW = 7.0e12                 # B/s, L2 hit bandwidth to the SMs (measurements range 5.5-10)
L2_BYTES = 50e6                # L2 capacity (H100/H200: 50 MB; ~40 MB usable for one working set)
L1_BW = SMS * 128 * CLOCK      # B/s, 128 B/clk/SM L1 hits: ≈ 33 TB/s
L1_BYTES = 220e3               # L1 usable next to 8 KB of shared memory (256 KB unified), per SM
LANES = SMS * 128 * CLOCK      # fp32 lane-operations per second (FMA = 1): ≈ 33.5 T/s
TF32_MACS = 494e12 / 2         # dense TF32 tensor-core MAC/s
FP32 = 4


@dataclass
class Scale:
    name: str
    p: int
    k: int
    n: int
    t: int
    c: int


SCALES = [Scale("EN-B6", 196, 200, 3629, 50, 200), Scale("RN18", 196, 256, 3629, 64, 256),
          Scale("WRN50", 196, 1024, 3629, 256, 1024)]


def pow2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def row_width(i: int) -> int:      # padded factor row (multiple of 4)
    return 4 * (i // 4 + 1)


def factor_stride(t: int) -> int:
    q = t // 4
    total = 8 * q * (q + 1) + 4 * (q + 1) * (t - 4 * q)
    return -(-total // 16) * 16


def fused_counts(s: Scale, block_n: int, programs: int) -> dict:
    """Per-iteration counts of the fused kernel (all P·N pursuits, full T steps)."""
    signals = s.p * s.n
    kp, tp, gs = pow2(s.k), pow2(s.t), -(-s.k // 4) * 4
    fac_reads = sum(row_width(i) for k in range(s.t) for i in range(k)) + sum(row_width(m) for m in range(s.t))
    fac_writes = sum(row_width(k) for k in range(s.t))
    gram_rows = sum(k + 1 for k in range(s.t - 1))           # α update: k+1 rows per step, not the last
    per_signal = {
        "hbm": (s.k + s.k + s.t) * FP32,                       # α⁰ read, codes zero-fill, support store
        "factor": (fac_reads + fac_writes) * FP32,             # scratch: L2 if it fits, else HBM
        "gram_rows": gram_rows * s.k * FP32,                   # gathered Gram rows (L1 or L2)
        "gram_gather": sum(range(s.t)) * 32,                   # g = G[I, j]: one 32-B sector each
        "lane_ops": gram_rows * kp                             # α update FMAs (all KP lanes issue)
                    + sum(2 * k * tp for k in range(s.t))      # factor pass: w dot + u update
                    + s.t * kp * 6                             # |α|, argmax, α_j extraction
                    + s.t * tp,                                # final γ = L⁻ᵀ z
    }
    totals = {key: value * signals for key, value in per_signal.items()}
    scratch = programs * block_n * factor_stride(s.t) * FP32
    gram_bytes = s.k * gs * FP32
    totals["scratch_bytes"] = scratch
    totals["gram_per_location"] = gram_bytes
    totals["factor_in_l2"] = scratch <= 0.8 * L2_BYTES
    # Rows are picked at random: the L1 hit fraction is about capacity / working set.
    totals["l1_hits"] = min(1.0, L1_BYTES / gram_bytes)
    return totals


def torch_floor(s: Scale) -> tuple[float, float]:
    """RESULTS.md's floor() for OMP: (GFLOP, GB)."""
    flops = 2 * s.p * s.n * (s.k * s.c + s.t * s.t * s.k / 2 + 2 * s.t**3 / 3) + 2 * s.p * s.k * s.k * s.c
    bytes_ = 4 * s.p * (3 * s.n * s.k * s.t + s.n * s.t**3 / 3)
    return flops / 1e9, bytes_ / 1e9


def predict(s: Scale, block_n: int) -> None:
    c = fused_counts(s, block_n, SMS)
    t_hbm = c["hbm"] / HBM
    t_factor = c["factor"] / (L2_BW if c["factor_in_l2"] else HBM)
    hits = c["l1_hits"]
    t_gram = max(hits * c["gram_rows"] / L1_BW, (1 - hits) * c["gram_rows"] / L2_BW) + c["gram_gather"] / L2_BW
    t_alu = c["lane_ops"] / LANES
    floor = max(t_hbm + t_factor, t_gram, t_alu)
    print(f"{s.name:6} block_n={block_n:>2}: scratch {c['scratch_bytes'] / 1e6:6.1f} MB "
          f"({'L2' if c['factor_in_l2'] else 'HBM'}), G/location {c['gram_per_location'] / 1e3:6.0f} KB "
          f"(~{100 * c['l1_hits']:.0f} % L1 hits)")
    print(f"        HBM (α⁰, codes) {c['hbm'] / 1e9:8.1f} GB   {t_hbm * 1e3:8.1f} ms")
    print(f"        factor scratch  {c['factor'] / 1e9:8.1f} GB   {t_factor * 1e3:8.1f} ms")
    print(f"        Gram rows       {c['gram_rows'] / 1e9:8.1f} GB   {t_gram * 1e3:8.1f} ms (+ g gathers "
          f"{c['gram_gather'] / 1e9:.1f} GB)")
    print(f"        lane-ops        {c['lane_ops'] / 1e12:8.2f} T    {t_alu * 1e3:8.1f} ms")
    print(f"        floor (largest term) {floor * 1e3:8.1f} ms; expected 2-3x the floor "
          f"(latency-bound gathers, barriers): {2 * floor * 1e3:.0f}-{3 * floor * 1e3:.0f} ms")
    gflop, gb = torch_floor(s)
    print(f"        RESULTS.md floor() for the torch OMP: {gflop:.0f} GFLOP, {gb:.0f} GB (HBM, no cache)")


def dense_update(s: Scale, tile: int = 16) -> None:
    """The "dense" α update of the kernel (tl.dot, tf32x3) in place of the gathered rows."""
    signals = s.p * s.n
    kp, gs = pow2(s.k), -(-s.k // 4) * 4
    tile_steps = signals / tile * (s.t - 1)
    gram_stream = tile_steps * s.k * gs * FP32                  # G once per tile-step, from L2
    macs = tile_steps * tile * kp * kp * 3                      # three TF32 passes
    print(f"{s.name:6} dense α update (tiles of {tile}): G stream {gram_stream / 1e9:7.0f} GB from L2 -> "
          f"{gram_stream / L2_BW * 1e3:6.1f} ms; {macs / 1e12:6.1f} T MAC -> {macs / TF32_MACS * 1e3:6.1f} ms "
          f"at the TF32 peak")


def wrn50_blocked(s: Scale, tile: int = 64, block: int = 16, candidates: int = 32) -> None:
    """The WRN50 formulation of DESIGN.md: dense tensor-core α update over tiles of `tile`
    signals, and a look-ahead blocked factor pass (block of `block` steps, `candidates` columns)."""
    signals = s.p * s.n
    tiles = signals / tile
    gs = -(-s.k // 4) * 4
    # α update: α (tile, K) −= C̃ (tile, K) @ G (K, K) in tf32x3; α in an L2 scratch.
    gram_stream = tiles * (s.t - 1) * s.k * gs * FP32            # G read once per tile-step
    alpha_rw = tiles * (s.t - 1) * 2 * tile * s.k * FP32         # α chunk read + write per step
    macs = tiles * (s.t - 1) * tile * s.k * s.k * 3              # three TF32 passes
    # factor, unblocked (one fused pass per step) vs look-ahead blocked
    unblocked = signals * sum(row_width(i) for k in range(s.t) for i in range(k)) * FP32
    blocked = 0
    for k0 in range(0, s.t, block):
        old = sum(row_width(i) for i in range(k0))                # one pass over the old rows
        w_u = 2 * k0 * candidates                                 # W_J, U_J written
        steps = min(block, s.t - k0)
        per_step = sum(2 * k0 + j * k0 + sum(row_width(k0 + r) for r in range(j)) for j in range(steps))
        blocked += old + w_u + per_step
    blocked *= signals * FP32
    print(f"WRN50 dense α update (tiles of {tile}, tf32x3): G stream {gram_stream / 1e12:.1f} TB + α "
          f"{alpha_rw / 1e12:.1f} TB from L2 -> {(gram_stream + alpha_rw) / L2_BW:.2f} s; "
          f"{macs / 1e15:.2f} P MAC -> {macs / TF32_MACS:.2f} s at the TF32 peak")
    print(f"WRN50 factor: unblocked fused pass {unblocked / 1e12:.1f} TB (HBM) -> {unblocked / HBM:.2f} s; "
          f"look-ahead blocks of {block} steps, {candidates} candidates, all hits: {blocked / 1e12:.1f} TB "
          f"-> {blocked / HBM:.2f} s")


def main() -> None:
    for s, block_n in zip(SCALES, (32, 32, 8)):
        predict(s, block_n)
    for s in SCALES[:2]:
        dense_update(s)
    wrn50_blocked(SCALES[2])


if __name__ == "__main__":
    main()
