/*
 * gpuksvd's native CPU kernels (gpuksvd/sparse/native.py builds and loads this file).
 *
 * Compiled once per dtype at first use: -DKERNEL_DOUBLE=0 (float32) or 1 (float64), with
 * -O3 -march=native; it exports gpuksvd_omp_{f32,f64} (Batch-OMP) and gpuksvd_atoms_{f32,f64}
 * (one K-SVD atom-update pass, approximate or exact). Plain C11 + GCC vector extensions, with a few
 * intrinsics behind #ifdef __AVX512F__ / __AVX2__ and a generic fallback: the vector width is
 * -DVEC_BYTES (64 = one AVX-512 register, 32 = AVX2), the register block -DMAX_BLOCK. No -ffast-math:
 * reductions are written with explicit partial sums (GCC's default -ffp-contract=fast does fuse
 * a*b+c into FMAs: deterministic on one machine, rounding-level different from a non-FMA build).
 *
 * Nothing is global: the workspace is allocated per call, so the tiles of gpuksvd.sparse.tiling
 * call these concurrently from their threads (ctypes releases the GIL). Per signal (OMP) and per
 * location (atom updates) the arithmetic does not depend on how the work is split into tiles.
 *
 * ---- Batch-OMP ------------------------------------------------------------------------------------
 *
 * One signal at a time, its whole state in L1/L2 (Rubinstein, Zibulevsky & Elad 2008, Alg. 3, in a
 * Cholesky-free "Gram-Schmidt" form). With G the K x K Gram matrix, alpha0 = D x and the selected
 * atoms I = (i_0 .. i_{k-1}), keep
 *
 *     Q = L^-1 G_{I,:}    (k x K, one row per step; L the Cholesky factor of G_II)
 *
 * Then every quantity of a step comes from Q without a triangular product:
 *
 *     w   = L^-1 G_{I,j} = Q[:, j]                 (k gathers)
 *     d   = sqrt(G_jj - w.w)                       (the new diagonal of L; row k of L = [w, d])
 *     z_k = alpha_j / d
 *     q_k = (G_j - sum_i w_i q_i) / d              (the new row of Q: row k of L^-1 times G_I)
 *     alpha <- alpha - z_k q_k                     (correlations with the new residual)
 *
 * and at the end gamma_I solves L^T gamma = z (one back substitution). This is the recurrence of the
 * torch path (gpuksvd/sparse/omp.py, which keeps L^-1 and forms q_k from rows of G weighted by row k
 * of L^-1); identical in exact arithmetic, the same (k+1) K multiply-adds per step for q_k, but no
 * per-step triangular products.
 *
 * One fused pass per step over alpha in register blocks: acc = G_j - sum_i w_i q_i, q_k = acc/d,
 * alpha -= z_k q_k, and the running first-index maximum of |alpha| for the next selection.
 *
 * Stopping rules, per signal, as the torch path: before step k with j = argmax |alpha| (first index),
 * stop if not alpha_j^2 > eps * max_k(alpha0_k^2); if tol is given, stop if not ||r||^2 > tol
 * (||r||^2 = ||x||^2 - sum z^2); stop and count a dependent atom if G_jj - w.w <= eps.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef KERNEL_DOUBLE
#define KERNEL_DOUBLE 0
#endif
#ifndef VEC_BYTES
#define VEC_BYTES 64
#endif
#ifndef MAX_BLOCK
#define MAX_BLOCK 8
#endif

/* Register blocks: the vectorised loops run over blocks of NB = 1 .. MAX_BLOCK vectors, NB a
 * compile-time constant in each specialised function (so its accumulators stay in registers).
 * FOR_WIDTHS(M) expands M(1) ... M(MAX_BLOCK): one specialisation per width. FOR_EACH_BLOCK(n_vec)
 * walks n_vec vectors in ceil(n_vec / MAX_BLOCK) blocks of (nearly) equal size, calling
 * BLOCK_CALL(NB, v0) (defined by the caller) for the block of NB vectors starting at vector v0. */
#if MAX_BLOCK > 8
#define FOR_WIDTHS_ABOVE_8(M) M(9) M(10) M(11) M(12) M(13) M(14) M(15) M(16)
#else
#define FOR_WIDTHS_ABOVE_8(M)
#endif
#define FOR_WIDTHS(M) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) FOR_WIDTHS_ABOVE_8(M)
#define BLOCK_CASE(NB) \
    case NB: BLOCK_CALL(NB, v0_); break;
#define FOR_EACH_BLOCK(n_vec)                                                                         \
    do {                                                                                              \
        int n_blocks_ = ((n_vec) + MAX_BLOCK - 1) / MAX_BLOCK;                                        \
        int v0_ = 0;                                                                                  \
        for (int blk_ = 0; blk_ < n_blocks_; blk_++) {                                                \
            int nb_ = ((n_vec) - v0_ + (n_blocks_ - blk_) - 1) / (n_blocks_ - blk_); /* spread evenly */ \
            switch (nb_) { FOR_WIDTHS(BLOCK_CASE) }                                                   \
            v0_ += nb_;                                                                               \
        }                                                                                             \
    } while (0)

#if KERNEL_DOUBLE
typedef double real;
typedef int64_t bits_t;
#define REAL_EPS DBL_EPSILON
#define ABS_MASK ((bits_t)0x7FFFFFFFFFFFFFFFLL)
#define EXPORT_NAME gpuksvd_omp_f64
#else
typedef float real;
typedef int32_t bits_t;
#define REAL_EPS FLT_EPSILON
#define ABS_MASK ((bits_t)0x7FFFFFFF)
#define EXPORT_NAME gpuksvd_omp_f32
#endif

#define LANES ((int)(VEC_BYTES / sizeof(real)))
typedef real vec __attribute__((vector_size(VEC_BYTES), aligned(VEC_BYTES)));
typedef bits_t vbits __attribute__((vector_size(VEC_BYTES), aligned(VEC_BYTES), may_alias));

#define INLINE static inline __attribute__((always_inline))

/* A vector of x. (Not (vec){0} + x: adding +0.0 is no no-op for -0.0 and would stay; x - 0.0 is one
 * and folds away.) */
INLINE vec splat(real x) { return x - (vec){0}; }
INLINE vbits splat_bits(bits_t x) { return (vbits){0} + x; }
INLINE vbits select_bits(vbits mask, vbits yes, vbits no) { return (yes & mask) | (no & ~mask); }

#if KERNEL_DOUBLE
#define IOTA_32 {0, 1, 2, 3}
#define IOTA_64 {0, 1, 2, 3, 4, 5, 6, 7}
#else
#define IOTA_32 {0, 1, 2, 3, 4, 5, 6, 7}
#define IOTA_64 {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
#endif
#if VEC_BYTES == 64
static const vbits IOTA = IOTA_64;
#elif VEC_BYTES == 32
static const vbits IOTA = IOTA_32;
#else
#error "VEC_BYTES must be 32 or 64"
#endif

INLINE vbits magnitude_bits(vec value) { return (vbits)value & ABS_MASK; }

/* Lane-wise maximum of integers (one instruction where the ISA has it). */
#if defined(__AVX512F__) && VEC_BYTES == 64
#include <immintrin.h>
#if KERNEL_DOUBLE
INLINE vbits max_bits(vbits a, vbits b) { return (vbits)_mm512_max_epi64((__m512i)a, (__m512i)b); }
#else
INLINE vbits max_bits(vbits a, vbits b) { return (vbits)_mm512_max_epi32((__m512i)a, (__m512i)b); }
#endif
#elif defined(__AVX2__) && VEC_BYTES == 32 && !KERNEL_DOUBLE
#include <immintrin.h>
INLINE vbits max_bits(vbits a, vbits b) { return (vbits)_mm256_max_epi32((__m256i)a, (__m256i)b); }
#else
INLINE vbits max_bits(vbits a, vbits b) { return select_bits(a > b, a, b); }
#endif

/* Horizontal maximum / minimum of the lanes (a shuffle tree). */
INLINE bits_t lanes_max(vbits x) {
    for (int half = LANES / 2; half > 0; half /= 2) {
        vbits index = (IOTA + half) & (LANES - 1);
        vbits y = __builtin_shuffle(x, index);
        x = max_bits(x, y);
    }
    return x[0];
}
INLINE bits_t lanes_min(vbits x) {
    for (int half = LANES / 2; half > 0; half /= 2) {
        vbits index = (IOTA + half) & (LANES - 1);
        vbits y = __builtin_shuffle(x, index);
        x = select_bits(y < x, y, x);
    }
    return x[0];
}

/* The first index of the largest |alpha|, given the largest magnitude's bit pattern (non-negative
 * floats order like their bit patterns as integers). The largest is there: scan to the first hit. */
#if defined(__AVX512F__) && VEC_BYTES == 64
#include <immintrin.h>
INLINE int first_index_of(const vec *restrict alpha, int n_vec, bits_t largest) {
    for (int v = 0; v < n_vec; v++) {
        vbits mag = magnitude_bits(alpha[v]);
#if KERNEL_DOUBLE
        unsigned hits = _mm512_cmpeq_epi64_mask((__m512i)mag, _mm512_set1_epi64(largest));
#else
        unsigned hits = _mm512_cmpeq_epi32_mask((__m512i)mag, _mm512_set1_epi32(largest));
#endif
        if (hits) return v * LANES + __builtin_ctz(hits);
    }
    return 0; /* not reached */
}
#elif defined(__AVX2__) && VEC_BYTES == 32
#include <immintrin.h>
INLINE int first_index_of(const vec *restrict alpha, int n_vec, bits_t largest) {
    for (int v = 0; v < n_vec; v++) {
        vbits hit = magnitude_bits(alpha[v]) == largest;
#if KERNEL_DOUBLE
        unsigned hits = (unsigned)_mm256_movemask_pd((__m256d)hit);
#else
        unsigned hits = (unsigned)_mm256_movemask_ps((__m256)hit);
#endif
        if (hits) return v * LANES + __builtin_ctz(hits);
    }
    return 0; /* not reached */
}
#else
INLINE int first_index_of(const vec *restrict alpha, int n_vec, bits_t largest) {
    vbits first = splat_bits((bits_t)1 << 30);
    for (int v = 0; v < n_vec; v++) {
        vbits hit = magnitude_bits(alpha[v]) == largest;
        first = select_bits(hit & (IOTA + (bits_t)(v * LANES) < first), IOTA + (bits_t)(v * LANES), first);
    }
    return (int)lanes_min(first);
}
#endif

INLINE int argmax_abs(const vec *restrict alpha, int n_vec) {
    vbits largest = splat_bits(0);
    for (int v = 0; v < n_vec; v++) {
        vbits m = magnitude_bits(alpha[v]);
        largest = max_bits(largest, m);
    }
    return first_index_of(alpha, n_vec, lanes_max(largest));
}

/* One register block of NB vectors starting at vector v0:
 *   acc = G_j - sum_{i<k} w_i q_i ; q_k = acc * inv_d ; alpha -= z_k q_k ; diag_sq -= q_k^2 ;
 *   running maximum of |alpha|. */
#define DEFINE_BLOCK(NB)                                                                              \
    INLINE void block_##NB(vec *restrict alpha, vec *restrict diag_sq, vec *restrict q_new,          \
                           const vec *restrict g_row, const vec *restrict q, size_t q_stride,        \
                           const real *restrict w, int k, real inv_d, real z, vbits *largest,         \
                           int v0) {                                                                  \
        vec acc[NB];                                                                                  \
        for (int b = 0; b < NB; b++) acc[b] = g_row[v0 + b];                                          \
        for (int i = 0; i < k; i++) {                                                                 \
            const vec *restrict qi = q + i * q_stride + v0;                                           \
            vec wi = splat(w[i]);                                                                     \
            for (int b = 0; b < NB; b++) acc[b] -= wi * qi[b];                                        \
        }                                                                                             \
        vbits m = *largest;                                                                           \
        for (int b = 0; b < NB; b++) {                                                                \
            vec qk = acc[b] * inv_d;                                                                  \
            q_new[v0 + b] = qk;                                                                       \
            diag_sq[v0 + b] -= qk * qk;                                                               \
            vec a = alpha[v0 + b] - z * qk;                                                           \
            alpha[v0 + b] = a;                                                                        \
            m = max_bits(m, magnitude_bits(a));                                                       \
        }                                                                                             \
        *largest = m;                                                                                 \
    }

FOR_WIDTHS(DEFINE_BLOCK)

/* The whole fused update over n_vec vectors, in blocks of at most MAX_BLOCK of (nearly) equal
 * size; returns the next atom, the first index of the largest |alpha|. */
INLINE int fused_update(vec *restrict alpha, vec *restrict diag_sq, vec *restrict q_new,
                        const vec *restrict g_row, const vec *restrict q, size_t q_stride,
                        const real *restrict w, int k, real inv_d, real z, int n_vec) {
    vbits largest = splat_bits(0);
#define BLOCK_CALL(NB, v0) block_##NB(alpha, diag_sq, q_new, g_row, q, q_stride, w, k, inv_d, z, &largest, v0)
    FOR_EACH_BLOCK(n_vec);
#undef BLOCK_CALL
    return first_index_of(alpha, n_vec, lanes_max(largest));
}

typedef struct {
    real *gram;     /* K x Kp, zero-padded rows */
    real *diag;     /* Kp: G_jj (1 in the padding) */
    real *alpha;    /* Kp */
    real *diag_sq;  /* Kp: G_jj - sum_i q_i[j]^2, the next diagonal of L if atom j is selected */
    real *q;        /* T x Kp */
    real *chol;     /* T (T + 1) / 2: packed rows of L, row k = [w, d] */
    real *z;        /* T */
    int *atoms;     /* T */
} workspace;

/* One signal. Returns 1 when its pursuit stopped on a linearly dependent atom. */
static int code_one(const workspace *ws, int K, int Kp, int T, const real *restrict projection,
                    int use_tol, real sq_norm, real tol, real *restrict code) {
    const int n_vec = Kp / LANES;
    real *restrict alpha = ws->alpha;
    real *restrict chol = ws->chol;
    real *restrict z = ws->z;
    int *restrict atoms = ws->atoms;
    memcpy(alpha, projection, (size_t)K * sizeof(real));
    for (int c = K; c < Kp; c++) alpha[c] = 0;
    memcpy(ws->diag_sq, ws->diag, (size_t)Kp * sizeof(real));

    int j = argmax_abs((const vec *)alpha, n_vec);
    const real stop_level = REAL_EPS * (alpha[j] * alpha[j]); /* eps * max_k alpha0_k^2 */
    real residual_sq = sq_norm;
    int dependent = 0;
    int size = 0;
    for (int k = 0; k < T; k++) {
        const real alpha_j = alpha[j];
        if (!(alpha_j * alpha_j > stop_level)) break;
        if (use_tol && !(residual_sq > tol)) break;
        const real diag_sq = ws->diag_sq[j];
        if (diag_sq <= REAL_EPS) {
            dependent = 1;
            break;
        }
        real *restrict w = chol + (size_t)k * (k + 1) / 2; /* row k of L: w = Q[:, j], then d */
        for (int i = 0; i < k; i++) w[i] = ws->q[(size_t)i * Kp + j];
        const real d = (real)sqrt((double)diag_sq);
        const real inv_d = 1 / d;
        const real z_k = alpha_j * inv_d;
        w[k] = d;
        z[k] = z_k;
        atoms[k] = j;
        size = k + 1;
        residual_sq -= z_k * z_k;
        if (k + 1 < T)
            j = fused_update((vec *)alpha, (vec *)ws->diag_sq, (vec *)(ws->q + (size_t)k * Kp),
                             (const vec *)(ws->gram + (size_t)j * Kp), (const vec *)ws->q, (size_t)n_vec,
                             w, k, inv_d, z_k, n_vec);
    }

    /* gamma: L^T gamma = z, back substitution by rows of L (z is overwritten by gamma). */
    for (int m = size - 1; m >= 0; m--) {
        const real *restrict row = chol + (size_t)m * (m + 1) / 2;
        const real gamma = z[m] / row[m];
        z[m] = gamma;
        for (int i = 0; i < m; i++) z[i] -= gamma * row[i];
    }
    memset(code, 0, (size_t)K * sizeof(real));
    for (int m = 0; m < size; m++) code[atoms[m]] += z[m];
    return dependent;
}

static void *aligned(size_t n_bytes) {
    size_t rounded = (n_bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

/*
 * gram (P, K, K), projections (P, N, K), sq_norms (P, N) or NULL, codes (P, N, K): C-contiguous.
 * tol is used when sq_norms is not NULL. Returns the number of pursuits that stopped on a
 * linearly dependent atom, or -1 when the workspace could not be allocated.
 */
int64_t EXPORT_NAME(const real *gram, const real *projections, const real *sq_norms, double tol,
                    int64_t P, int64_t N, int64_t K64, int64_t T64, real *codes) {
    const int K = (int)K64, T = (int)T64;
    const int Kp = (K + LANES - 1) / LANES * LANES;
    workspace ws;
    ws.gram = aligned((size_t)K * Kp * sizeof(real));
    ws.alpha = aligned((size_t)Kp * sizeof(real));
    ws.diag = aligned((size_t)Kp * sizeof(real));
    ws.diag_sq = aligned((size_t)Kp * sizeof(real));
    ws.q = aligned((size_t)T * Kp * sizeof(real));
    ws.chol = aligned((size_t)T * (T + 1) / 2 * sizeof(real));
    ws.z = aligned((size_t)T * sizeof(real));
    ws.atoms = aligned((size_t)T * sizeof(int));
    int64_t n_dependent = 0;
    if (!ws.gram || !ws.diag || !ws.alpha || !ws.diag_sq || !ws.q || !ws.chol || !ws.z || !ws.atoms) {
        n_dependent = -1;
        goto done;
    }
    for (int64_t p = 0; p < P; p++) {
        const real *g = gram + p * K * K;
        for (int r = 0; r < K; r++) {
            memcpy(ws.gram + (size_t)r * Kp, g + (size_t)r * K, (size_t)K * sizeof(real));
            for (int c = K; c < Kp; c++) ws.gram[(size_t)r * Kp + c] = 0;
            ws.diag[r] = g[(size_t)r * K + r];
        }
        for (int c = K; c < Kp; c++) ws.diag[c] = 1;
        for (int64_t n = 0; n < N; n++) {
            const int64_t row = p * N + n;
            n_dependent += code_one(&ws, K, Kp, T, projections + row * K, sq_norms != NULL,
                                    sq_norms ? sq_norms[row] : 0, (real)tol, codes + row * K);
        }
    }
done:
    free(ws.gram);
    free(ws.alpha);
    free(ws.q);
    free(ws.chol);
    free(ws.diag);
    free(ws.diag_sq);
    free(ws.z);
    free(ws.atoms);
    return n_dependent;
}

/* ================================================================================================
 * K-SVD atom updates: one pass over the atoms of each location, one atom after another (each sees
 * the previous updates), touching only each atom's users (the signals whose code uses it).
 *
 * The residual E = X - codes D is formed once per location from the sparse codes (T rows of D per
 * signal, not a dense product), kept in a buffer padded to whole vectors, and updated atom by atom.
 * For atom k with old atom d, old codes g (non-zero on its users U, m of them):
 *
 * approximate (Rubinstein, Zibulevsky & Elad 2008, Alg. 5: one power step from the old codes)
 *     direction = E_U^T g + d |g|^2               (E_k^T g with E_k = E_U + g d^T)
 *     d'        = direction / |direction|         (d where the direction is 0)
 *     g'_u      = E_u . d' + g_u (d . d')         (E_k d' on the users)
 *     E_u      += g_u d - g'_u d'
 *
 * exact (Aharon, Elad & Bruckstein 2006: the leading singular pair of E_k)
 *     B   = E_k, gathered into a contiguous m x C block (it stays in L2 while it is iterated on)
 *     d'  = leading eigenvector of B^T B by Lanczos (leading_pair below), started from the
 *           approximate update's direction B^T g, checked explicitly: |B^T B d' - theta d'| <=
 *           8 eps theta. Sign: <g', g> >= 0, the approximate update's sign.
 *     g'  = B d';  E_u = B_u - g'_u d'
 *
 * A dead atom (no users at the location) is replaced by the worst-represented signal not yet taken
 * by another dead atom in this pass (largest |E_n|^2; first index), normalised, where that signal
 * is non-zero and has a positive error (else the atom is kept) -- or, with keep_dead, left as it is.
 * Supports are those of the codes at the start of the pass.
 * ================================================================================================ */
#if KERNEL_DOUBLE
#define ATOMS_NAME gpuksvd_atoms_f64
#else
#define ATOMS_NAME gpuksvd_atoms_f32
#endif

INLINE real lanes_sum(vec x) {
    for (int half = LANES / 2; half > 0; half /= 2) {
        vbits index = (IOTA + half) & (LANES - 1);
        x = x + __builtin_shuffle(x, index);
    }
    return x[0];
}

/* a . b over n_vec vectors, with four partial sums. */
INLINE real dot(const vec *restrict a, const vec *restrict b, int n_vec) {
    vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int v = 0;
    for (; v + 4 <= n_vec; v += 4) {
        s0 += a[v] * b[v];
        s1 += a[v + 1] * b[v + 1];
        s2 += a[v + 2] * b[v + 2];
        s3 += a[v + 3] * b[v + 3];
    }
    for (; v < n_vec; v++) s0 += a[v] * b[v];
    return lanes_sum((s0 + s1) + (s2 + s3));
}

/* Rows ahead whose cache lines are requested early: users' rows are scattered over the residual,
 * which does not fit in L2 (3 MB at EN-B6), and each row is a dozen lines. */
#define PREFETCH_ROWS 4

INLINE void prefetch_row(const real *row, int Cp, int for_write) {
    for (int c = 0; c < Cp; c += 64 / (int)sizeof(real)) {
        if (for_write)
            __builtin_prefetch(row + c, 1);
        else
            __builtin_prefetch(row + c, 0);
    }
}

/* out[v0 .. v0+NB) = sum_m weight_m E[row_m][v0 .. v0+NB), accumulated in registers. */
#define DEFINE_GATHER_SUM(NB)                                                                         \
    INLINE void gather_sum_##NB(vec *restrict out, const vec *restrict E, size_t stride,             \
                                const int *restrict rows, const real *restrict weight, int m,        \
                                int v0) {                                                             \
        vec acc[NB];                                                                                  \
        for (int b = 0; b < NB; b++) acc[b] = (vec){0};                                               \
        for (int i = 0; i < m; i++) {                                                                 \
            if (i + PREFETCH_ROWS < m)                                                                \
                for (int b = 0; b < NB; b++)                                                          \
                    __builtin_prefetch(E + (size_t)rows[i + PREFETCH_ROWS] * stride + v0 + b, 0);      \
            const vec *restrict row = E + (size_t)rows[i] * stride + v0;                              \
            vec wi = splat(weight[i]);                                                                \
            for (int b = 0; b < NB; b++) acc[b] += wi * row[b];                                       \
        }                                                                                             \
        for (int b = 0; b < NB; b++) out[v0 + b] = acc[b];                                            \
    }
FOR_WIDTHS(DEFINE_GATHER_SUM)

static void gather_sum(vec *restrict out, const vec *restrict E, size_t stride, const int *restrict rows,
                       const real *restrict weight, int m, int n_vec) {
#define BLOCK_CALL(NB, v0) gather_sum_##NB(out, E, stride, rows, weight, m, v0)
    FOR_EACH_BLOCK(n_vec);
#undef BLOCK_CALL
}

/* block[i][v0 .. v0+NB) = E[rows_i][v0 .. v0+NB) + g_i d, and start = sum_i g_i block_i, accumulated
 * in registers. */
#define DEFINE_GATHER_BLOCK(NB)                                                                       \
    INLINE void gather_block_##NB(vec *restrict block, vec *restrict start, const vec *restrict E,   \
                                  size_t stride, const int *restrict rows, const real *restrict g,   \
                                  const vec *restrict atom, int m, int n_vec, int v0) {             \
        vec acc[NB], d[NB];                                                                           \
        for (int b = 0; b < NB; b++) {                                                                \
            acc[b] = (vec){0};                                                                        \
            d[b] = atom[v0 + b];                                                                      \
        }                                                                                             \
        for (int i = 0; i < m; i++) {                                                                 \
            if (i + PREFETCH_ROWS < m)                                                                \
                for (int b = 0; b < NB; b += 64 / (int)sizeof(vec) > 0 ? 64 / (int)sizeof(vec) : 1)    \
                    __builtin_prefetch(E + (size_t)rows[i + PREFETCH_ROWS] * stride + v0 + b, 0);      \
            const vec *restrict row = E + (size_t)rows[i] * stride + v0;                              \
            vec *restrict out = block + (size_t)i * n_vec + v0;                                       \
            const vec gi = splat(g[i]);                                                               \
            for (int b = 0; b < NB; b++) {                                                            \
                const vec e = row[b] + gi * d[b];                                                     \
                out[b] = e;                                                                           \
                acc[b] += gi * e;                                                                     \
            }                                                                                         \
        }                                                                                             \
        for (int b = 0; b < NB; b++) start[v0 + b] = acc[b];                                          \
    }
FOR_WIDTHS(DEFINE_GATHER_BLOCK)

/* The exact update's gather: B = E_U + g d^T (m x n_vec, contiguous) and start = B^T g. */
static void gather_block(vec *restrict block, vec *restrict start, const real *E, size_t stride,
                         const int *restrict rows, const real *restrict g, const vec *restrict atom, int m,
                         int n_vec) {
#define BLOCK_CALL(NB, v0) gather_block_##NB(block, start, (const vec *)E, stride, rows, g, atom, m, n_vec, v0)
    FOR_EACH_BLOCK(n_vec);
#undef BLOCK_CALL
}

/* ---- the leading singular pair of a gathered block ------------------------------------------- */

/* Rows per group in gram_apply: 8 independent dot products keep the FMA units busy (4-cycle latency,
 * 2 per cycle), and w is read and written once per 8 rows. */
#define GROUP 8

/* Groups summed into a partial sum before it is added to w: a two-level summation, whose rounding
 * grows with sqrt(BLOCK_GROUPS) + sqrt(m / (GROUP BLOCK_GROUPS)) instead of sqrt(m / GROUP). */
#define BLOCK_GROUPS 8

/* y_r = B_r . q for the m rows of B (each n_vec vectors), and w = B^T y = B^T B q; partial is
 * n_vec vectors of scratch. */
static void gram_apply(const vec *restrict B, int m, int n_vec, const vec *restrict q, real *restrict y,
                       vec *restrict w, vec *restrict partial) {
    for (int v = 0; v < n_vec; v++) w[v] = (vec){0};
    int r = 0;
    while (r + GROUP <= m) {
        for (int v = 0; v < n_vec; v++) partial[v] = (vec){0};
        for (int group = 0; group < BLOCK_GROUPS && r + GROUP <= m; group++, r += GROUP) {
            const vec *restrict b = B + (size_t)r * n_vec;
            vec acc[GROUP];
            for (int i = 0; i < GROUP; i++) acc[i] = (vec){0};
            for (int v = 0; v < n_vec; v++) {
                const vec qv = q[v];
                for (int i = 0; i < GROUP; i++) acc[i] += b[(size_t)i * n_vec + v] * qv;
            }
            vec s[GROUP];
            for (int i = 0; i < GROUP; i++) {
                y[r + i] = lanes_sum(acc[i]);
                s[i] = splat(y[r + i]);
            }
            for (int v = 0; v < n_vec; v++) {
                /* Pairwise: the group's 8 terms are summed before they reach the partial sum. */
                vec t0 = s[0] * b[v] + s[1] * b[(size_t)n_vec + v];
                vec t1 = s[2] * b[(size_t)2 * n_vec + v] + s[3] * b[(size_t)3 * n_vec + v];
                vec t2 = s[4] * b[(size_t)4 * n_vec + v] + s[5] * b[(size_t)5 * n_vec + v];
                vec t3 = s[6] * b[(size_t)6 * n_vec + v] + s[7] * b[(size_t)7 * n_vec + v];
                partial[v] += (t0 + t1) + (t2 + t3);
            }
        }
        for (int v = 0; v < n_vec; v++) w[v] += partial[v];
    }
    for (; r < m; r++) {
        const vec *restrict b = B + (size_t)r * n_vec;
        const real yr = dot(b, q, n_vec);
        y[r] = yr;
        const vec s = splat(yr);
        for (int v = 0; v < n_vec; v++) w[v] += s * b[v];
    }
}

/* Largest eigenvalue of the symmetric n x n matrix a (row-major, overwritten) and its unit
 * eigenvector, by cyclic Jacobi rotations in double. n is small (the Lanczos steps, at most
 * MAX_LANCZOS); vectors is n x n scratch. */
static double top_eigenpair(double *restrict a, int n, double *restrict vectors, double *restrict out) {
    for (int i = 0; i < n * n; i++) vectors[i] = 0;
    for (int i = 0; i < n; i++) vectors[i * n + i] = 1;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diagonal = 0;
        for (int p = 0; p < n; p++) {
            diagonal += a[p * n + p] * a[p * n + p];
            for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        }
        if (!(off > 1e-34 * diagonal)) break; /* |off-diagonal| below 1e-17 of the matrix: done */
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const double apq = a[p * n + q];
                if (apq == 0) continue;
                const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q of a and of vectors: a J */
                    const double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                    const double vkp = vectors[k * n + p], vkq = vectors[k * n + q];
                    vectors[k * n + p] = c * vkp - s * vkq;
                    vectors[k * n + q] = s * vkp + c * vkq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q: J^T (a J) */
                    const double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
    }
    int top = 0;
    for (int i = 1; i < n; i++)
        if (a[i * n + i] > a[top * n + top]) top = i;
    for (int i = 0; i < n; i++) out[i] = vectors[i * n + top];
    return a[top * n + top];
}

/* Lanczos steps per cycle before an explicit check and restart. From the approximate update's
 * direction, K-SVD blocks at EN-B6 and RN18 scale need 5-7 steps in float32 and ~12 in float64
 * (benchmarks/RESULTS.md); 48 leave room for slow spectra while the basis (48 x C) stays in L2. */
#define MAX_LANCZOS 48
/* Cycles (Lanczos run, explicit check, restart from the checked vector) before the LAPACK fallback. */
#define MAX_CYCLES 4
/* Convergence: |B^T B u - theta u| <= TOL_EPS eps theta. 8 eps gives atoms as close to a float64 SVD
 * as float32 LAPACK's own (64 eps was ~10x further, exact_peers prototype); the check's own rounding
 * floor is 1-3 eps in float32 and up to ~10 eps in float64 at M ~ 900 (FLOOR_FACTOR below). */
#define TOL_EPS 8

/* LAPACK ?syevr as scipy.linalg.cython_lapack exports it (Fortran arguments by pointer). */
typedef void (*syevr_fn)(char *jobz, char *range, char *uplo, int *n, real *a, int *lda, real *vl, real *vu,
                         int *il, int *iu, real *abstol, int *m, real *w, real *z, int *ldz, int *isuppz,
                         real *work, int *lwork, int *iwork, int *liwork, int *info);

/* Counters of the exact update, for tests and benchmarks. */
enum { STAT_SOLVED, STAT_STEPS, STAT_RESTARTS, STAT_FALLBACKS, N_STATS };

typedef struct {
    vec *basis;     /* MAX_LANCZOS x n_vec: the Lanczos vectors */
    vec *w;         /* n_vec */
    vec *u;         /* n_vec */
    vec *partial;   /* n_vec: gram_apply's scratch */
    real *y;        /* block rows: B u */
    double *t;      /* MAX_LANCZOS^2: the tridiagonal matrix, densely */
    double *t_vectors; /* MAX_LANCZOS^2 */
    double *ritz;   /* MAX_LANCZOS */
    double alpha[MAX_LANCZOS], beta[MAX_LANCZOS];
} lanczos_space;

/* Top eigenvector of the symmetric n x n matrix a (column-major = row-major) by LAPACK ?syevr into
 * out. Returns 0, or -1 when LAPACK failed or memory ran out. */
static int lapack_top_vector(syevr_fn syevr, real *a, int n, real *out) {
    char jobz = 'V', range = 'I', uplo = 'L';
    int il = n, iu = n, found = 0, lwork = -1, liwork = -1, info = 0, isuppz[2], iwork_query = 0;
    real vl = 0, vu = 0, abstol = 0, value = 0, work_query = 0;
    syevr(&jobz, &range, &uplo, &n, a, &n, &vl, &vu, &il, &iu, &abstol, &found, &value, out, &n, isuppz,
          &work_query, &lwork, &iwork_query, &liwork, &info);
    if (info != 0) return -1;
    lwork = (int)work_query + 1;
    liwork = iwork_query + 1;
    real *work = malloc((size_t)lwork * sizeof(real));
    int *iwork = malloc((size_t)liwork * sizeof(int));
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return -1;
    }
    syevr(&jobz, &range, &uplo, &n, a, &n, &vl, &vu, &il, &iu, &abstol, &found, &value, out, &n, isuppz, work,
          &lwork, iwork, &liwork, &info);
    free(work);
    free(iwork);
    return info == 0 && found == 1 ? 0 : -1;
}

/* The fallback for spectra the Lanczos cycles did not resolve (sigma_2 within ~1e-3 of sigma_1 in
 * float64, ties): LAPACK's symmetric eigensolver on the smaller Gram matrix of B (C x C, or m x m
 * and then u = B^T l / |B^T l|). Rare, so its O(m C min(m, C)) cost does not matter. */
static int lapack_fallback(syevr_fn syevr, const vec *restrict B, int m, int C, int n_vec, vec *restrict u) {
    const int Cp = n_vec * LANES;
    const real *b = (const real *)B;
    const int n = m < C ? m : C;
    real *gram = malloc((size_t)n * n * sizeof(real));
    real *vector = malloc((size_t)(m > C ? m : C) * sizeof(real));
    int status = -1;
    if (!gram || !vector || !syevr) goto done;
    if (m < C) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j <= i; j++) {
                real s = dot(B + (size_t)i * n_vec, B + (size_t)j * n_vec, n_vec);
                gram[(size_t)i * n + j] = gram[(size_t)j * n + i] = s;
            }
    } else {
        for (int i = 0; i < C; i++)
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int r = 0; r < m; r++) s += (double)b[(size_t)r * Cp + i] * b[(size_t)r * Cp + j];
                gram[(size_t)i * n + j] = gram[(size_t)j * n + i] = (real)s;
            }
    }
    if (lapack_top_vector(syevr, gram, n, vector) != 0) goto done;
    real *out = (real *)u;
    for (int c = 0; c < Cp; c++) out[c] = 0;
    if (m < C) {
        for (int r = 0; r < m; r++)
            for (int c = 0; c < C; c++) out[c] += vector[r] * b[(size_t)r * Cp + c];
        const real norm = (real)sqrt((double)dot(u, u, n_vec));
        if (!(norm > 0)) goto done;
        for (int c = 0; c < C; c++) out[c] /= norm;
    } else {
        for (int c = 0; c < C; c++) out[c] = vector[c];
    }
    status = 0;
done:
    free(gram);
    free(vector);
    return status;
}

/* A fixed pseudo-random unit vector (zero padding): the start where B^T g = 0 but B != 0. */
static void fixed_start(vec *restrict q, int C, int n_vec) {
    real *x = (real *)q;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (int c = 0; c < n_vec * LANES; c++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        x[c] = c < C ? (real)((double)(state >> 11) / 9007199254740992.0 - 0.5) : 0;
    }
    const real norm = (real)sqrt((double)dot(q, q, n_vec));
    for (int v = 0; v < n_vec; v++) q[v] = q[v] / norm;
}

/* u <- u / |u| (n_vec vectors). */
static void normalise(vec *restrict u, int n_vec) {
    const real inverse = (real)(1 / sqrt((double)dot(u, u, n_vec)));
    for (int v = 0; v < n_vec; v++) u[v] = u[v] * inverse;
}

/* The explicit check of a unit vector u: y = B u, w = B^T B u; returns |w - theta u| / theta with
 * theta = |y|^2 (its Rayleigh quotient), and theta. */
static double check_vector(const vec *restrict B, int m, int n_vec, lanczos_space *ls, double *theta_out,
                           int64_t *stats) {
    gram_apply(B, m, n_vec, ls->u, ls->y, ls->w, ls->partial);
    stats[STAT_STEPS]++;
    double theta = 0;
    for (int r = 0; r < m; r++) theta += (double)ls->y[r] * ls->y[r];
    double residual = 0;
    const real rt = (real)theta;
    for (int v = 0; v < n_vec; v++) {
        const vec e = ls->w[v] - rt * ls->u[v];
        residual += dot(&e, &e, 1);
    }
    *theta_out = theta;
    return theta > 0 ? sqrt(residual) / theta : 0;
}

/* One Lanczos run on B^T B from the unit vector basis[0]: at most `most` steps, until the Ritz
 * residual estimate beta_j |s_j| of the top Ritz pair falls below `target` theta. The Ritz vector,
 * normalised, goes to u. Returns whether the estimate got there. */
static int lanczos(const vec *restrict B, int m, int n_vec, int most, double target, lanczos_space *ls,
                   int64_t *stats) {
    vec *restrict w = ls->w;
    int size = 0, reached = 0;
    for (int j = 0; j < most; j++) {
        vec *restrict q = ls->basis + (size_t)j * n_vec;
        gram_apply(B, m, n_vec, q, ls->y, w, ls->partial);
        stats[STAT_STEPS]++;
        double a = dot(q, w, n_vec);
        const real ra = (real)a, rb = j > 0 ? (real)ls->beta[j - 1] : 0;
        const vec *restrict before = j > 0 ? q - n_vec : q;
        for (int v = 0; v < n_vec; v++) w[v] = w[v] - ra * q[v] - rb * before[v];
        /* Full reorthogonalisation, twice ("twice is enough"): the basis is at most 48 x C. */
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i <= j; i++) {
                const vec *restrict qi = ls->basis + (size_t)i * n_vec;
                const real c = dot(qi, w, n_vec);
                if (i == j) a += c;
                for (int v = 0; v < n_vec; v++) w[v] -= c * qi[v];
            }
        ls->alpha[j] = a;
        const double b = sqrt((double)dot(w, w, n_vec));
        ls->beta[j] = b;
        size = j + 1;
        for (int i = 0; i < size * size; i++) ls->t[i] = 0;
        for (int i = 0; i < size; i++) {
            ls->t[i * size + i] = ls->alpha[i];
            if (i + 1 < size) ls->t[i * size + i + 1] = ls->t[(i + 1) * size + i] = ls->beta[i];
        }
        const double theta = top_eigenpair(ls->t, size, ls->t_vectors, ls->ritz);
        if (!(theta > 0)) break; /* B^T B q = 0: only where B = 0, which the caller excludes */
        if (b * fabs(ls->ritz[size - 1]) <= target * theta) {
            reached = 1;
            break;
        }
        if (j + 1 == most) break;
        const real inv_b = (real)(1 / b);
        vec *restrict next = q + n_vec;
        for (int v = 0; v < n_vec; v++) next[v] = w[v] * inv_b;
    }
    vec *restrict u = ls->u;
    for (int v = 0; v < n_vec; v++) u[v] = (vec){0};
    for (int i = 0; i < size; i++) {
        const vec *restrict qi = ls->basis + (size_t)i * n_vec;
        const real s = (real)ls->ritz[i];
        for (int v = 0; v < n_vec; v++) u[v] += s * qi[v];
    }
    normalise(u, n_vec);
    return reached;
}

/* Power steps that polish a converged Lanczos vector: at most this many, while each one at least
 * halves the checked residual. */
#define MAX_POLISH 6
/* A polished vector whose residual stalls within this factor of the tolerance is accepted: it is the
 * rounding floor of the products with B (measured 1-3 eps in float32 and up to ~10 eps in float64 at
 * C = 200, m = 900), not an unresolved spectrum. */
#define FLOOR_FACTOR 4

/*
 * The leading right singular vector u of the m x C block B (rows of n_vec vectors, zero padding)
 * and the codes y = B u, with <y, g> >= 0. start = B^T g (the approximate update's direction),
 * overwritten. Returns 1 when B = 0 (u and y are then not written), 0 when solved, -1 on failure.
 *
 * Lanczos with full reorthogonalisation on B^T B (the block's Gram matrix is never formed), in
 * cycles of at most MAX_LANCZOS steps: a cycle ends when the top Ritz pair's residual estimate is
 * below half the tolerance (a quarter took one more step per atom, and the check rarely fails), then the Ritz vector is checked explicitly (one more product with
 * B^T B, which also gives y): converged when |B^T B u - theta u| <= TOL_EPS eps theta. A vector that
 * the estimate called converged but the check did not (the estimate does not see the products'
 * rounding) is polished by power steps; one whose cycle ran out of steps restarts from B^T B u.
 * When the residual stops falling before the tolerance (sigma_2 within ~1e-3 of sigma_1 in float64,
 * ties) or after MAX_CYCLES, LAPACK's eigensolver decides (lapack_fallback).
 */
static int leading_pair(const vec *restrict B, int m, int C, int n_vec, const real *restrict g, vec *restrict start,
                        lanczos_space *ls, syevr_fn syevr, int64_t *stats) {
    const double tol = TOL_EPS * (double)REAL_EPS;
    vec *restrict u = ls->u, *restrict w = ls->w;
    real *restrict y = ls->y;
    double norm = sqrt((double)dot(start, start, n_vec));
    if (!(norm > 0)) {
        double frobenius = 0;
        for (int r = 0; r < m; r++) frobenius += dot(B + (size_t)r * n_vec, B + (size_t)r * n_vec, n_vec);
        if (!(frobenius > 0)) return 1;
        fixed_start(start, C, n_vec);
        norm = 1;
    }
    const real inv_norm = (real)(1 / norm);
    for (int v = 0; v < n_vec; v++) ls->basis[v] = start[v] * inv_norm;
    stats[STAT_SOLVED]++;
    const int most = C < MAX_LANCZOS ? C : MAX_LANCZOS;
    double previous = INFINITY, theta = 0;
    int converged = 0;
    for (int cycle = 0; cycle < MAX_CYCLES; cycle++) {
        if (cycle > 0) stats[STAT_RESTARTS]++;
        const int reached = lanczos(B, m, n_vec, most, 0.5 * tol, ls, stats);
        double residual = check_vector(B, m, n_vec, ls, &theta, stats);
        if (residual <= tol) {
            converged = 1;
            break;
        }
        if (reached) {
            for (int step = 0; step < MAX_POLISH; step++) {
                for (int v = 0; v < n_vec; v++) u[v] = w[v];
                normalise(u, n_vec);
                const double polished = check_vector(B, m, n_vec, ls, &theta, stats);
                if (polished <= tol) {
                    converged = 1;
                    break;
                }
                if (polished > 0.5 * residual) {
                    converged = polished <= FLOOR_FACTOR * tol;
                    break;
                }
                residual = polished;
            }
            break;
        }
        if (residual > 0.5 * previous) break; /* no longer converging: a (near-)tie */
        previous = residual;
        for (int v = 0; v < n_vec; v++) ls->basis[v] = w[v]; /* restart one power step further */
        normalise(ls->basis, n_vec);
    }
    if (!converged) {
        stats[STAT_FALLBACKS]++;
        if (lapack_fallback(syevr, B, m, C, n_vec, u) != 0) return -1;
        for (int r = 0; r < m; r++) y[r] = dot(B + (size_t)r * n_vec, u, n_vec);
    }
    /* Sign: <y, g> >= 0, i.e. u . (B^T g) >= 0, the approximate update's direction. */
    double along = 0;
    for (int r = 0; r < m; r++) along += (double)y[r] * g[r];
    if (along < 0) {
        for (int v = 0; v < n_vec; v++) u[v] = -u[v];
        for (int r = 0; r < m; r++) y[r] = -y[r];
    }
    return 0;
}

/* ---- the pass ---------------------------------------------------------------------------------- */

static void replace_dead_atom(const real *restrict x, const real *restrict E, int N, int C, int Cp,
                              unsigned char *restrict taken, real *restrict atom) {
    const int n_vec = Cp / LANES;
    int worst = 0;
    real worst_error = -2;
    for (int n = 0; n < N; n++) {
        const real error = taken[n] ? (real)-1
                                    : dot((const vec *)(E + (size_t)n * Cp), (const vec *)(E + (size_t)n * Cp), n_vec);
        if (error > worst_error) {
            worst_error = error;
            worst = n;
        }
    }
    taken[worst] = 1;
    const real *s = x + (size_t)worst * C;
    real sq = 0;
    for (int c = 0; c < C; c++) sq += s[c] * s[c];
    const real norm = (real)sqrt((double)sq);
    if (norm > 0 && worst_error > 0)
        for (int c = 0; c < C; c++) atom[c] = s[c] / norm;
}

/*
 * signals (P, N, C); dictionary (P, K, C) and codes (P, N, K) updated in place; sq_error (P,) gets
 * |X - codes D|^2_F per location after the pass. All C-contiguous. exact: leading singular pair
 * (else one power step); keep_dead: leave dead atoms as they are (else replace them); syevr: LAPACK's
 * ?syevr for the exact update's fallback (may be NULL for the approximate one); stats: N_STATS
 * counters, incremented. Returns 0, or -1 when out of memory or LAPACK failed.
 */
int64_t ATOMS_NAME(const real *signals, real *dictionary, real *codes, real *sq_error, int64_t P, int64_t N64,
                   int64_t K64, int64_t C64, int64_t exact, int64_t keep_dead, void *syevr, int64_t *stats) {
    const int N = (int)N64, K = (int)K64, C = (int)C64;
    const int Cp = (C + LANES - 1) / LANES * LANES, n_vec = Cp / LANES;
    if (N <= 0 || C <= 0) {
        for (int64_t p = 0; p < P; p++) sq_error[p] = 0;
        return 0;
    }
    real *E = aligned((size_t)N * Cp * sizeof(real));
    real *atoms = aligned((size_t)K * Cp * sizeof(real));
    real *fresh_atom = aligned((size_t)Cp * sizeof(real));
    int *count = aligned((size_t)(K + 1) * sizeof(int));
    int *start = aligned((size_t)(K + 1) * sizeof(int));
    unsigned char *taken = aligned((size_t)N + 1);
    int *users = NULL; /* each atom's users and their codes, sized by the non-zeros */
    real *values = NULL;
    int *slot = NULL; /* the non-zeros in row-major order: their positions in values */
    vec *block = NULL; /* exact: the gathered m x Cp block */
    size_t capacity = 0, block_rows = 0;
    lanczos_space ls = {0};
    int64_t status = 0;
    if (exact) {
        ls.basis = aligned((size_t)(MAX_LANCZOS + 1) * Cp * sizeof(real));
        ls.w = aligned((size_t)Cp * sizeof(real));
        ls.u = aligned((size_t)Cp * sizeof(real));
        ls.partial = aligned((size_t)Cp * sizeof(real));
        ls.y = aligned((size_t)N * sizeof(real) + 64);
        ls.t = aligned((size_t)MAX_LANCZOS * MAX_LANCZOS * sizeof(double));
        ls.t_vectors = aligned((size_t)MAX_LANCZOS * MAX_LANCZOS * sizeof(double));
        ls.ritz = aligned((size_t)MAX_LANCZOS * sizeof(double));
        if (!ls.basis || !ls.w || !ls.u || !ls.partial || !ls.y || !ls.t || !ls.t_vectors || !ls.ritz) {
            status = -1;
            goto done;
        }
    }
    if (!E || !atoms || !fresh_atom || !count || !start || !taken) {
        status = -1;
        goto done;
    }
    for (int c = C; c < Cp; c++) fresh_atom[c] = 0;
    for (int64_t p = 0; p < P; p++) {
        const real *x = signals + p * N * C;
        real *dict = dictionary + p * K * C, *code = codes + p * N * K;
        for (int k = 0; k < K; k++) {
            memcpy(atoms + (size_t)k * Cp, dict + (size_t)k * C, (size_t)C * sizeof(real));
            for (int c = C; c < Cp; c++) atoms[(size_t)k * Cp + c] = 0;
        }
        /* E = X - codes D from the sparse codes; each atom's users (increasing n) and their codes. */
        memset(count, 0, (size_t)(K + 1) * sizeof(int));
        for (int n = 0; n < N; n++) {
            real *restrict row = E + (size_t)n * Cp;
            memcpy(row, x + (size_t)n * C, (size_t)C * sizeof(real));
            for (int c = C; c < Cp; c++) row[c] = 0;
            for (int k = 0; k < K; k++) {
                const real gk = code[(size_t)n * K + k];
                if (gk != 0) {
                    count[k]++;
                    const vec s = splat(gk);
                    const vec *restrict atom = (const vec *)(atoms + (size_t)k * Cp);
                    for (int v = 0; v < n_vec; v++) ((vec *)row)[v] -= s * atom[v];
                }
            }
        }
        start[0] = 0;
        int widest = 0;
        for (int k = 0; k < K; k++) {
            start[k + 1] = start[k] + count[k];
            if (count[k] > widest) widest = count[k];
        }
        if ((size_t)start[K] > capacity) {
            free(users);
            free(values);
            free(slot);
            capacity = (size_t)start[K];
            users = aligned(capacity * sizeof(int));
            values = aligned(capacity * sizeof(real));
            slot = aligned(capacity * sizeof(int));
            if (!users || !values || !slot) {
                status = -1;
                goto done;
            }
        }
        if (exact && (size_t)widest > block_rows) {
            free(block);
            block_rows = (size_t)widest;
            block = aligned(block_rows * Cp * sizeof(real));
            if (!block) {
                status = -1;
                goto done;
            }
        }
        memcpy(count, start, (size_t)K * sizeof(int)); /* fill positions */
        for (int n = 0, j = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                real gk = code[(size_t)n * K + k];
                if (gk != 0) {
                    slot[j++] = count[k];
                    users[count[k]] = n;
                    values[count[k]++] = gk;
                }
            }
        memset(taken, 0, (size_t)N);

        for (int k = 0; k < K; k++) {
            const int m = start[k + 1] - start[k];
            const int *restrict rows = users + start[k];
            real *restrict g = values + start[k];
            vec *restrict old_atom = (vec *)(atoms + (size_t)k * Cp);
            vec *restrict fresh = (vec *)fresh_atom;
            if (m == 0) {
                if (!keep_dead) replace_dead_atom(x, E, N, C, Cp, taken, atoms + (size_t)k * Cp);
                continue;
            }
            real g_sq = 0;
            for (int i = 0; i < m; i++) g_sq += g[i] * g[i];
            if (exact) {
                /* B = E_U + g d^T, gathered, and start = B^T g on the way. */
                gather_block(block, fresh, E, (size_t)n_vec, rows, g, old_atom, m, n_vec);
                const int solved = leading_pair(block, m, C, n_vec, g, fresh, &ls, (syevr_fn)syevr, stats);
                if (solved < 0) {
                    status = -1;
                    goto done;
                }
                if (solved == 1) {
                    /* E_k = 0: the old atom and zero codes, as the approximate update; the users'
                     * residual rows become E_k = B (= 0) since the codes no longer represent g d^T. */
                    for (int i = 0; i < m; i++) {
                        vec *restrict row = (vec *)(E + (size_t)rows[i] * Cp);
                        const vec *restrict b = block + (size_t)i * n_vec;
                        for (int v = 0; v < n_vec; v++) row[v] = b[v];
                        g[i] = 0;
                    }
                    continue;
                }
                const vec *restrict u = ls.u;
                for (int i = 0; i < m; i++) {
                    vec *restrict row = (vec *)(E + (size_t)rows[i] * Cp);
                    if (i + PREFETCH_ROWS < m) prefetch_row(E + (size_t)rows[i + PREFETCH_ROWS] * Cp, Cp, 1);
                    const vec *restrict b = block + (size_t)i * n_vec;
                    const vec s = splat(ls.y[i]);
                    for (int v = 0; v < n_vec; v++) row[v] = b[v] - s * u[v];
                    g[i] = ls.y[i];
                }
                for (int v = 0; v < n_vec; v++) old_atom[v] = u[v];
                continue;
            }
            /* direction = E_U^T g + d |g|^2 */
            gather_sum(fresh, (const vec *)E, (size_t)n_vec, rows, g, m, n_vec);
            for (int v = 0; v < n_vec; v++) fresh[v] += old_atom[v] * g_sq;
            const real norm = (real)sqrt((double)dot(fresh, fresh, n_vec));
            if (norm > 0) {
                for (int v = 0; v < n_vec; v++) fresh[v] = fresh[v] / norm;
            } else {
                for (int v = 0; v < n_vec; v++) fresh[v] = old_atom[v];
            }
            const real overlap = dot(old_atom, fresh, n_vec); /* d . d' */
            for (int i = 0; i < m; i++) {
                vec *restrict row = (vec *)(E + (size_t)rows[i] * Cp);
                if (i + PREFETCH_ROWS < m) prefetch_row(E + (size_t)rows[i + PREFETCH_ROWS] * Cp, Cp, 1);
                const real g_new = dot(row, fresh, n_vec) + g[i] * overlap;
                const vec old_weight = splat(g[i]), new_weight = splat(g_new);
                for (int v = 0; v < n_vec; v++) row[v] = row[v] + old_weight * old_atom[v] - new_weight * fresh[v];
                g[i] = g_new;
            }
            for (int v = 0; v < n_vec; v++) old_atom[v] = fresh[v];
        }
        /* The new codes go back row by row (each atom's, scattered over N rows of K, would be a cache
         * miss per user); the supports are those read at the start. */
        for (int n = 0, j = 0; n < N; n++)
            for (int k = 0; k < K; k++)
                if (code[(size_t)n * K + k] != 0) code[(size_t)n * K + k] = values[slot[j++]];
        double total = 0;
        for (int n = 0; n < N; n++) total += dot((const vec *)(E + (size_t)n * Cp), (const vec *)(E + (size_t)n * Cp), n_vec);
        sq_error[p] = (real)total;
        for (int k = 0; k < K; k++) memcpy(dict + (size_t)k * C, atoms + (size_t)k * Cp, (size_t)C * sizeof(real));
    }
done:
    free(E);
    free(atoms);
    free(fresh_atom);
    free(count);
    free(start);
    free(users);
    free(values);
    free(slot);
    free(taken);
    free(block);
    free(ls.basis);
    free(ls.w);
    free(ls.u);
    free(ls.partial);
    free(ls.y);
    free(ls.t);
    free(ls.t_vectors);
    free(ls.ritz);
    return status;
}
