"""The fused Triton Batch-OMP kernel in Triton's interpreter (CPU, numpy semantics), against
scikit-learn's ``orthogonal_mp_gram`` (float64) and the torch path (``code_tiles(kernel="torch")``).

Sizes are tiny: the interpreter executes every tile operation in numpy, about 1 ms each. The
compiled kernel on a GPU is tested in ``test_triton_omp_cuda.py``.
"""
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

pytest.importorskip("triton", reason="Triton ships with the CUDA build of torch")

from tests.support.kernels import torch_codes  # noqa: E402
from tests.support.problems import random_problem  # noqa: E402
from gpuksvd.sparse.triton_omp import (ALPHA_WORDS_PER_THREAD, LaunchConfigError, factor_stride,  # noqa: E402
                                       fused_batch_omp, interpreting, plan_launch)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Orthogonal matching pursuit ended prematurely"),
    pytest.mark.skipif(not interpreting(), reason="Triton's interpreter is off (tests/conftest.py turns it on "
                       "unless GPUKSVD_TRITON_COMPILED=1, which runs test_triton_omp_cuda.py compiled)"),
]


problem = partial(random_problem, n_locations=2, n_signals=20, n_features=16, n_atoms=24)


def fused(dictionary, signals, n_nonzero, tol=None, **launch):
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    sq_norms = signals.square().sum(-1) if tol is not None else None
    return fused_batch_omp(gram, projections, n_nonzero, sq_norms, tol, **launch)


def sklearn_codes(dictionary, signals, n_nonzero=None, tol=None):
    """scikit-learn's codes, float64, per location: (P, N, K)."""
    out = []
    for d, x in zip(dictionary.double().numpy(), signals.double().numpy()):
        kwargs = dict(n_nonzero_coefs=n_nonzero) if tol is None else dict(tol=tol, norms_squared=(x**2).sum(1))
        out.append(orthogonal_mp_gram(d @ d.T, d @ x.T, **kwargs).T)
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("n_nonzero", [1, 5])
def test_float64_matches_sklearn_and_torch(n_nonzero):
    # K = 24: not a power of two (padded to 32); two zero signals; one tile per location.
    dictionary, signals = problem()
    signals[:, :2] = 0.0
    codes, n_dependent = fused(dictionary, signals, n_nonzero, block_n=32)
    reference = sklearn_codes(dictionary, signals, n_nonzero)
    expected, expected_dependent = torch_codes(dictionary, signals, n_nonzero)
    assert (codes - reference).abs().max() <= 1e-10
    assert (codes - expected).abs().max() <= 1e-12
    assert int(n_dependent) == expected_dependent == 0
    assert bool((codes[:, :2] == 0).all())
    assert int((codes != 0).sum(-1)[:, 2:].min()) == n_nonzero


def test_float32_matches_sklearn_and_torch():
    # The bar: the supports of scikit-learn in float64, codes within 1e-5 relative.
    dictionary, signals = problem(n_features=24, n_atoms=32, seed=1)
    codes, _ = fused(dictionary.float(), signals.float(), 6, block_n=32)
    assert codes.dtype == torch.float32
    reference = sklearn_codes(dictionary, signals, 6)
    assert torch.equal(codes != 0, reference != 0), "same supports as scikit-learn (float64)"
    scale = reference.abs().amax(-1, keepdim=True)
    assert float(((codes.double() - reference).abs() / scale).max()) <= 1e-5
    expected, _ = torch_codes(dictionary.float(), signals.float(), 6)
    assert torch.equal(codes != 0, expected != 0)
    assert float((codes - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_tol_stops_pursuits_early():
    dictionary, signals = problem(seed=2)
    tol = 0.3 * float(signals.square().sum(-1).mean())
    n_nonzero = 12  # more than needed: tol ends every pursuit first (scikit-learn ignores it with tol)
    codes, _ = fused(dictionary, signals, n_nonzero, tol, block_n=32)
    expected, _ = torch_codes(dictionary, signals, n_nonzero, tol)
    reference = sklearn_codes(dictionary, signals, tol=tol)
    assert (codes - expected).abs().max() <= 1e-12
    assert (codes - reference).abs().max() <= 1e-10
    residual = signals - codes @ dictionary
    assert bool((residual.square().sum(-1) <= tol + 1e-9).all())
    assert int((codes != 0).sum(-1).max()) < n_nonzero


def test_ties_take_the_first_index():
    # Orthonormal atoms (G = I exactly): α⁰ = x and every update is exact, so the order of the
    # atoms is decided by ties alone, across signs, as torch's abs().argmax() and numpy do.
    n = 16
    dictionary = torch.eye(n, dtype=torch.float32).expand(2, n, n).contiguous()
    signals = torch.zeros(2, 3, n)
    signals[0, 0, [9, 3, 5, 12]] = torch.tensor([2.0, -2.0, 2.0, 1.0])
    signals[0, 1, [15, 0]] = torch.tensor([-1.0, 1.0])
    signals[1, 2, [7, 6, 8]] = torch.tensor([3.0, 3.0, -3.0])
    codes, _ = fused(dictionary, signals, 2, block_n=4)
    supports = [sorted(row.nonzero().flatten().tolist()) for row in codes.reshape(-1, n)]
    assert supports == [[3, 5], [0, 15], [], [], [], [6, 7]]
    assert torch.equal(codes.reshape(-1, n)[0, [3, 5]], torch.tensor([-2.0, 2.0]))


def test_exact_sparse_signals_stop_early_and_are_recovered():
    # 2-sparse signals coded with n_nonzero = 6: after two atoms α vanishes (relative stop), so
    # every pursuit, and the tile loop, ends early. Location 1 is all zeros (ends at step 0).
    dictionary, _ = problem(n_features=20, n_atoms=28, seed=3)
    gen = torch.Generator().manual_seed(4)
    true = torch.zeros(2, 12, 28, dtype=torch.float64)
    support = torch.rand(12, 28, generator=gen).argsort(-1)[:, :2]
    true[0].scatter_(-1, support, 1.0 + torch.rand(12, 2, generator=gen, dtype=torch.float64))
    signals = true @ dictionary
    codes, n_dependent = fused(dictionary, signals, 6, block_n=16)
    assert torch.allclose(codes, true, atol=1e-9)
    assert int((codes[0] != 0).sum(-1).max()) == 2 and bool((codes[1] == 0).all())
    expected, expected_dependent = torch_codes(dictionary, signals, 6)
    assert torch.allclose(codes, expected, atol=1e-12) and int(n_dependent) == expected_dependent


def test_persistent_programs_and_partial_tiles():
    # N = 37 signals in tiles of 16 (the last one partial), 6 tiles over 2 programs: each
    # program reuses its scratch slot for 3 tiles.
    dictionary, signals = problem(n_signals=37, n_atoms=20, n_features=12, seed=5)
    codes, _ = fused(dictionary, signals, 4, block_n=16, n_programs=2)
    expected, _ = torch_codes(dictionary, signals, 4)
    assert (codes - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("alpha_unroll", [2])
def test_unrolled_alpha_update_matches(alpha_unroll):
    # Two Gram rows in flight per iteration; odd step counts exercise the masked second row.
    dictionary, signals = problem(n_signals=9, seed=8)
    codes, _ = fused(dictionary, signals, 5, block_n=8, alpha_unroll=alpha_unroll)
    expected, _ = torch_codes(dictionary, signals, 5)
    assert (codes - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_alpha_update_matches(dtype):
    # The tensor-core variant (tl.dot is np.matmul in the interpreter, so its tf32x3 rounding is
    # a GPU-only check): 20 signals in tiles of 16 over 2 programs (scratch zeroed between
    # tiles), zero signals, tol, K = 24 padded to 32.
    dictionary, signals = problem(n_signals=20, seed=6, dtype=dtype)
    signals[:, :2] = 0.0
    tol = 0.2 * float(signals.square().sum(-1).mean())
    codes, _ = fused(dictionary, signals, 6, tol, block_n=16, alpha_update="dense", n_programs=2)
    expected, _ = torch_codes(dictionary, signals, 6, tol)
    assert torch.equal(codes != 0, expected != 0)
    bound = 1e-12 if dtype == torch.float64 else 1e-5 * float(expected.abs().max())
    assert float((codes - expected).abs().max()) <= bound


def test_dependent_atoms_are_counted_and_stay_finite():
    # Atom 1 duplicates atom 0 in the Gram matrix while the projections differ slightly, so the
    # pursuit picks it and stops on d² ≈ 0.
    dictionary, signals = problem(n_locations=1, n_signals=2, n_features=8, n_atoms=12, seed=0)
    dictionary[0, 1] = dictionary[0, 0]
    gram = dictionary @ dictionary.mT
    signals[0, 0] = 3 * dictionary[0, 0] + 1e-3 * dictionary[0, 5]
    dictionary[0, 1] = dictionary[0, 0] + 1e-3 * dictionary[0, 5] / 3
    projections = signals @ dictionary.mT
    codes, n_dependent = fused_batch_omp(gram, projections, 4, block_n=2)
    expected, expected_dependent = torch_codes(dictionary, signals, 4, gram=gram)
    assert int(n_dependent) == expected_dependent >= 1
    assert bool(torch.isfinite(codes).all())
    assert (codes - expected).abs().max() <= 1e-12


def test_no_host_reads_of_device_values(monkeypatch):
    # CUDA-graph readiness: the launcher (and the interpreter under it) never reads a tensor's
    # value on the host. Any .item(), bool(), int(), float() or .tolist() on a tensor raises.
    dictionary, signals = problem(n_locations=1, n_signals=4, n_atoms=16, n_features=8)
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    sq_norms = signals.square().sum(-1)

    def host_read(*args, **kwargs):
        raise AssertionError("host read of a tensor value")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    codes, n_dependent = fused_batch_omp(gram, projections, 3, sq_norms, 0.1, block_n=4)
    monkeypatch.undo()
    assert isinstance(n_dependent, torch.Tensor) and n_dependent.ndim == 0
    expected, _ = torch_codes(dictionary, signals, 3, tol=0.1)
    assert (codes - expected).abs().max() <= 1e-12


def test_launch_plans_respect_compiled_triton_constraints():
    def pow2(n):
        return n & (n - 1) == 0

    for n_atoms, n_nonzero, dtype in [(200, 50, torch.float32), (256, 64, torch.float32),
                                      (1024, 256, torch.float32), (200, 50, torch.float64), (24, 1, torch.float32)]:
        plan = plan_launch(n_atoms, n_nonzero, dtype)
        assert all(pow2(v) for v in (plan.block_n, plan.kp, plan.tp, plan.num_warps))
        assert plan.kp >= n_atoms and plan.tp >= n_nonzero
        assert plan.alpha_words_per_thread <= ALPHA_WORDS_PER_THREAD
        assert factor_stride(n_nonzero) % 16 == 0 and factor_stride(n_nonzero) >= n_nonzero * (n_nonzero + 1) // 2
    assert plan_launch(200, 50, torch.float32).block_n == 32       # EN-B6: 32 signals, 16 warps
    assert plan_launch(1024, 256, torch.float32).block_n == 8      # WRN50
    with pytest.raises(LaunchConfigError, match="power of two"):
        plan_launch(200, 50, torch.float32, block_n=24)
    with pytest.raises(LaunchConfigError, match="spill"):
        plan_launch(1024, 256, torch.float32, block_n=64, num_warps=4)
    with pytest.raises(LaunchConfigError, match="num_warps"):
        plan_launch(200, 50, torch.float32, num_warps=32)
    dense = plan_launch(256, 64, torch.float32, alpha_update="dense")
    assert dense.block_n >= 16 and dense.dot_k >= 16 and dense.kp >= 16  # tl.dot: every dim ≥ 16
    assert dense.dot_k * dense.kp * 4 * dense.num_stages <= 227 * 1024   # shared memory per block
    small = plan_launch(12, 4, torch.float32, alpha_update="dense")
    assert small.kp == 16 and small.dot_k == 16
    with pytest.raises(LaunchConfigError, match="block_n ≥ 16"):
        plan_launch(1024, 256, torch.float32, alpha_update="dense")


def test_bad_arguments_are_named():
    dictionary, signals = problem(n_locations=1, n_signals=2)
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    with pytest.raises(ValueError, match="n_nonzero"):
        fused_batch_omp(gram, projections, 0)
    with pytest.raises(ValueError, match="gram has shape"):
        fused_batch_omp(gram[:, :5], projections, 2)
    with pytest.raises(ValueError, match="share float32 or float64"):
        fused_batch_omp(gram.float(), projections, 2)
    with pytest.raises(ValueError, match="sq_norms"):
        fused_batch_omp(gram, projections, 2, tol=0.1)
