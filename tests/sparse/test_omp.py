"""Batch-OMP against scikit-learn's orthogonal_mp_gram, per-location loops and float64, on both
kernels (the ``kernel`` fixture: torch and native)."""
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

from gpuksvd.sparse import LinearDependenceWarning, batch_omp
from gpuksvd.sparse.omp import LargestMagnitude, omp_bytes_per_location
from tests.support import problems
from tests.support.devices import DEVICES
from tests.support.kernels import TRITON, torch_codes


@pytest.fixture(params=["torch", "native", TRITON])
def kernel(request):
    """Every implementation of Batch-OMP: the reference tests run on each (the Triton kernel in
    Triton's interpreter, on the CPU)."""
    return request.param


random_problem = partial(problems.random_problem, n_locations=4, n_signals=60, n_features=24, n_atoms=32)


@pytest.mark.parametrize("n_nonzero", [1, 5, 12])
def test_matches_sklearn_on_every_location(n_nonzero, kernel):
    dictionary, signals = random_problem()
    codes = batch_omp(dictionary, signals, n_nonzero, kernel=kernel)
    worst = 0.0
    for p in range(dictionary.shape[0]):
        d, x = dictionary[p].numpy(), signals[p].numpy()
        reference = orthogonal_mp_gram(d @ d.T, d @ x.T, n_nonzero_coefs=n_nonzero).T
        worst = max(worst, np.abs(codes[p].numpy() - reference).max())
    assert worst <= 1e-8, f"max |batch_omp - sklearn| = {worst:.3g}"
    assert int((codes != 0).sum(-1).max()) == n_nonzero


def test_tol_matches_sklearn(kernel):
    dictionary, signals = random_problem(n_atoms=40)
    tol = 0.3 * float(signals[0].square().sum(-1).mean())
    codes = batch_omp(dictionary, signals, 20, tol=tol, kernel=kernel)
    worst = 0.0
    for p in range(dictionary.shape[0]):
        d, x = dictionary[p].numpy(), signals[p].numpy()
        reference = orthogonal_mp_gram(d @ d.T, d @ x.T, tol=tol, norms_squared=(x**2).sum(1)).T
        worst = max(worst, np.abs(codes[p].numpy() - reference).max())
    assert worst <= 1e-8, f"max |batch_omp(tol) - sklearn| = {worst:.3g}"
    residual = signals - codes @ dictionary
    assert bool((residual.square().sum(-1) <= tol + 1e-9).all())
    assert int((codes != 0).sum(-1).max()) < 20  # some signals stopped early


def test_batched_equals_per_location_loop_and_shared_dictionary(kernel):
    dictionary, signals = random_problem()
    codes = batch_omp(dictionary, signals, 6, kernel=kernel)
    for p in range(dictionary.shape[0]):
        single = batch_omp(dictionary[p : p + 1], signals[p : p + 1], 6, kernel=kernel)
        assert torch.allclose(single[0], codes[p], atol=1e-12, rtol=0)
    shared = batch_omp(dictionary[0], signals, 6, kernel=kernel)
    expected = batch_omp(dictionary[0].expand_as(dictionary).contiguous(), signals, 6, kernel=kernel)
    assert torch.equal(shared, expected)


@pytest.mark.parametrize("signals_per_tile", [60, 17])  # whole locations; each location split in 4
def test_tiled_equals_untiled(signals_per_tile, kernel):
    if kernel == "triton" and signals_per_tile == 17:
        pytest.skip("28 tiles take 13 s in Triton's interpreter; the tiling is the same for every kernel")
    dictionary, signals = random_problem(n_locations=7)
    whole = batch_omp(dictionary, signals, 8, kernel=kernel)
    budget = omp_bytes_per_location(60, 32, 8, torch.float64) * signals_per_tile // 60
    tiled = batch_omp(dictionary, signals, 8, max_memory=budget, kernel=kernel)
    assert torch.allclose(whole, tiled, atol=1e-12, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_agrees_with_float64(device, kernel):
    if device == "cuda" and kernel == "native":
        pytest.skip("the native kernel runs on the CPU")
    if kernel == "triton":
        pytest.skip("30 s in Triton's interpreter: test_triton_omp.py compares float32 with scikit-learn on a "
                    "smaller problem, test_triton_omp_cuda.py at the paper's shapes on a GPU")
    dictionary, signals = random_problem(n_locations=3, n_signals=200, n_features=64, n_atoms=64)
    codes64 = batch_omp(dictionary.to(device), signals.to(device), 16, kernel=kernel).cpu()
    codes32 = batch_omp(dictionary.float().to(device), signals.float().to(device), 16, kernel=kernel).cpu().double()
    # Compare reconstructions (robust to a rare different atom choice between near-ties).
    rec64, rec32 = codes64 @ dictionary, codes32 @ dictionary
    rel = float((rec32 - rec64).norm() / rec64.norm())
    assert rel <= 1e-4, f"float32 vs float64 relative reconstruction difference {rel:.3g}"
    same_support = float(((codes32 != 0) == (codes64 != 0)).all(-1).double().mean())
    assert same_support >= 0.99, f"only {same_support:.3f} of signals kept the same support"


def test_pursuit_without_early_exit_gives_the_same_codes(monkeypatch):
    # The GPU form of the torch pursuit (no per-step host read: all n_nonzero steps, masked) on
    # the CPU: zero signals end at step 0, exactly sparse ones after 3 of 8 steps, a dependent
    # atom stops one pursuit; the count comes back as a tensor.
    dictionary, signals = random_problem(n_locations=2, n_signals=30)
    signals[:, :3] = 0.0
    sparse = torch.zeros(2, 5, 32, dtype=torch.float64)
    sparse[:, :, [2, 9, 20]] = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    signals[:, 3:8] = sparse @ dictionary
    expected, expected_dependent = torch_codes(dictionary, signals, 8)
    monkeypatch.setattr("gpuksvd.sparse.omp.EARLY_EXIT_DEVICES", frozenset())
    codes, n_dependent = torch_codes(dictionary, signals, 8)
    assert torch.allclose(codes, expected, atol=1e-12, rtol=0)
    assert isinstance(n_dependent, torch.Tensor) and int(n_dependent) == expected_dependent
    assert torch.equal(codes[:, 3:8] != 0, sparse != 0)


def test_zero_signals_give_zero_codes(kernel):
    dictionary, signals = random_problem()
    signals[:, :5] = 0
    codes = batch_omp(dictionary, signals, 6, kernel=kernel)
    assert bool(torch.isfinite(codes).all())
    assert bool((codes[:, :5] == 0).all())
    assert bool((codes[:, 5:] != 0).any())


def test_exact_sparse_signals_are_recovered(kernel):
    dictionary, _ = random_problem(n_features=40, n_atoms=60)
    gen = torch.Generator().manual_seed(3)
    support = torch.rand(4, 50, 60, generator=gen).argsort(-1)[..., :3]
    true_codes = torch.zeros(4, 50, 60, dtype=torch.float64).scatter_(-1, support, 1.0 + torch.rand(4, 50, 3, generator=gen, dtype=torch.float64))
    codes = batch_omp(dictionary, true_codes @ dictionary, 3, kernel=kernel)
    assert torch.allclose(codes, true_codes, atol=1e-9)


def test_dependent_atoms_warn_instead_of_nan(kernel):
    # In exact arithmetic a dependent atom has zero correlation with the residual and is never
    # picked; rounding can still pick one. Emulate that deterministically: atom 1 is declared a
    # duplicate of atom 0 in the Gram matrix while the projections differ slightly.
    dictionary, signals = random_problem(n_locations=1, n_signals=1, n_features=8, n_atoms=12)
    dictionary[0, 1] = dictionary[0, 0]
    gram = dictionary @ dictionary.mT
    signals[0, 0] = 3 * dictionary[0, 0] + 1e-3 * dictionary[0, 5]
    dictionary[0, 1] = dictionary[0, 0] + 1e-3 * dictionary[0, 5] / 3  # projections disagree
    with pytest.warns(LinearDependenceWarning, match="linearly dependent"):
        codes = batch_omp(dictionary, signals, 4, gram=gram, kernel=kernel)
    assert bool(torch.isfinite(codes).all())


def test_duplicate_atoms_in_float32_stay_finite(kernel):
    dictionary, signals = random_problem(n_features=8, n_atoms=12, dtype=torch.float32)
    dictionary[:, 1] = dictionary[:, 0]
    dictionary[:, 2] = -dictionary[:, 3]
    codes = batch_omp(dictionary, 1e6 * signals, 8, kernel=kernel)
    assert bool(torch.isfinite(codes).all())


def test_no_warning_on_healthy_problem(kernel):
    dictionary, signals = random_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch_omp(dictionary, signals, 6, kernel=kernel)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_nonzero=0), "n_nonzero"),
        (dict(n_nonzero=25), r"min\(n_atoms, n_features\)"),
        (dict(n_nonzero=2.5), "n_nonzero"),
        (dict(gram=torch.zeros(2, 2, dtype=torch.float64)), "gram has shape"),
        (dict(tol=-1.0), "tol"),
        (dict(factor_layout="packed"), "factor_layout"),
        (dict(kernel="cuda"), "unknown kernel 'cuda'"),
        (dict(kernel="native", factor_layout="matrices"), "pass kernel='torch'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    dictionary, signals = random_problem()
    kwargs = {"n_nonzero": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        batch_omp(dictionary, signals, **kwargs)


def test_bad_shapes_and_dtypes_are_named():
    dictionary, signals = random_problem()
    with pytest.raises(ValueError, match=r"signals must be a tensor of shape \(P, N, C\)"):
        batch_omp(dictionary, signals[0], 4)
    with pytest.raises(ValueError, match="share one floating dtype"):
        batch_omp(dictionary.float(), signals, 4)
    with pytest.raises(ValueError, match="P and C must agree"):
        batch_omp(dictionary[:, :, :10], signals, 4)


@pytest.mark.filterwarnings("ignore:Orthogonal matching pursuit ended prematurely")  # sklearn, on the zero signals
def test_both_factor_layouts_give_the_same_codes():
    # The CPU uses a signals-last factor, CUDA the matrix one: check the CUDA layout here too,
    # also when every pursuit stops early (tol, zero signals), before the matrices' capacity.
    dictionary, signals = random_problem(n_atoms=40)
    signals[:, :5] = 0.0
    tol = 0.6 * float(signals.square().sum(-1).max())
    signals_last = batch_omp(dictionary, signals, 12, factor_layout="signals-last", kernel="torch")
    signals_last_tol = batch_omp(dictionary, signals, 12, tol=tol, factor_layout="signals-last", kernel="torch")
    matrices = batch_omp(dictionary, signals, 12, factor_layout="matrices", kernel="torch")
    matrices_tol = batch_omp(dictionary, signals, 12, tol=tol, factor_layout="matrices", kernel="torch")
    assert torch.allclose(signals_last, matrices, atol=1e-12, rtol=0)
    assert int((matrices_tol != 0).sum(-1).max()) < 8  # all pursuits ended before the first capacity
    assert torch.allclose(signals_last_tol, matrices_tol, atol=1e-12, rtol=0)
    d, x = dictionary[0].numpy(), signals[0].numpy()
    reference = orthogonal_mp_gram(d @ d.T, d @ x.T, n_nonzero_coefs=12).T
    assert np.abs(matrices[0].numpy() - reference).max() <= 1e-8


def test_kernels_agree_in_float32():
    # Different rounding may resolve a rare near-tie between atoms differently: compare supports
    # and reconstructions (float64 agreement is the sklearn tests'). Both count the same
    # dependent atoms on gpuksvd's duplicate-atom construction.
    dictionary, signals = random_problem(n_signals=300, n_features=48, n_atoms=64, dtype=torch.float32)
    native = batch_omp(dictionary, signals, 16, kernel="native")
    torch_path = batch_omp(dictionary, signals, 16, kernel="torch")
    same_support = float(((native != 0) == (torch_path != 0)).all(-1).double().mean())
    assert same_support >= 0.99, f"only {same_support:.3f} of signals kept the same support"
    rel = float(((native - torch_path) @ dictionary).norm() / (torch_path @ dictionary).norm())
    assert rel <= 1e-4, f"native vs torch float32 reconstructions differ by {rel:.3g}"


def test_small_valued_signals_are_coded_like_unit_ones(kernel):
    dictionary, signals = random_problem()
    unit = batch_omp(dictionary, signals, 6, kernel=kernel)
    small = batch_omp(dictionary, 1e-6 * signals, 6, kernel=kernel)
    assert torch.allclose(small * 1e6, unit, rtol=1e-9, atol=1e-12)
    assert int((small != 0).sum(-1).min()) == 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_largest_magnitude_is_argmax_of_abs(dtype):
    # The CPU finds the atom with integer operations on the bit patterns; it must pick exactly
    # what alpha.abs().argmax(-1) picks: the first of ties, across signs, zeros, inf and NaN.
    gen = torch.Generator().manual_seed(3)
    alpha = torch.randn(3, 50, 37, generator=gen, dtype=torch.float64).to(dtype)
    alpha[0, 0] = 0.0  # all zero: index 0
    alpha[0, 1, [4, 9]] = torch.tensor([-7.0, 7.0], dtype=dtype)  # tie across signs: first wins
    alpha[0, 2, [30, 2]] = 5.0  # tie: index 2
    alpha[1, 0, 11] = -float("inf")
    alpha[1, 1, 6] = float("nan")
    alpha[2, :, 36] = -1e30  # largest magnitude at the last index
    alpha[2, 5] = torch.finfo(dtype).tiny * torch.arange(37, dtype=dtype)  # subnormal-scale values
    expected = alpha.abs().argmax(-1)
    finder = LargestMagnitude(alpha)
    assert finder.bit_trick
    assert torch.equal(finder(alpha), expected)
    assert torch.equal(finder(-alpha), expected)


def test_empty_inputs_give_empty_codes(kernel):
    dictionary = torch.randn(3, 8, 4)
    assert batch_omp(dictionary, torch.randn(3, 0, 4), 2, kernel=kernel).shape == (3, 0, 8)
    assert batch_omp(dictionary[:0], torch.randn(0, 5, 4), 2, kernel=kernel).shape == (0, 5, 8)


def unit_rows(x):
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_matches_sklearn_on_each_device(device):
    gen = torch.Generator().manual_seed(0)
    dictionary = unit_rows(torch.randn(6, 48, 32, generator=gen, dtype=torch.float64))
    signals = torch.randn(6, 300, 32, generator=gen, dtype=torch.float64)
    codes = batch_omp(dictionary.to(device), signals.to(device), 8).cpu()
    worst = 0.0
    for p in range(6):
        d, x = dictionary[p].numpy(), signals[p].numpy()
        reference = orthogonal_mp_gram(d @ d.T, d @ x.T, n_nonzero_coefs=8).T
        worst = max(worst, np.abs(codes[p].numpy() - reference).max())
    assert worst <= 1e-8, f"max |{device} - sklearn| = {worst:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_float32_close_to_float64_at_paper_shape(device):
    gen = torch.Generator().manual_seed(1)
    n_locations = 16 if device == "cuda" else 2  # the paper's K = C = 200, T = 50; fewer locations on the CPU
    dictionary = unit_rows(torch.randn(n_locations, 200, 200, generator=gen, dtype=torch.float64))
    signals = torch.randn(n_locations, 1000, 200, generator=gen, dtype=torch.float64)
    reference = batch_omp(dictionary, signals, 50)
    codes = batch_omp(dictionary.float().to(device), signals.float().to(device), 50).cpu().double()
    rel = float(((codes - reference) @ dictionary).norm() / (reference @ dictionary).norm())
    assert rel <= 1e-3, f"float32 {device} vs float64 CPU reconstruction differs by {rel:.3g}"
