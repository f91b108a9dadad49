"""The exact update's leading singular pair against torch.linalg.svd of the explicit restricted
residual, block by block: the torch path's ``leading_pair`` and the native kernel's Lanczos.

The native kernel has no block-level entry point; a one-atom pass computes the same thing: with
K = 1 and every signal using the atom, the restricted residual ``E_k = X − γd + γd`` is the
signals themselves, so ``update_atoms`` on (X = E_k, d = old atom, γ = old codes) returns the
leading pair of E_k.
"""
import pytest
import torch

from gpuksvd.sparse import batch_omp, native
from gpuksvd.sparse.leading_pair import PowerHint, leading_pair

DTYPES = [torch.float64, torch.float32]


def svd_pair(restricted, old_codes, old_atom):
    """Reference: float64 SVD of the explicit restricted residual (P, M, C), signed so that
    ⟨γ_new, γ_old⟩ ≥ 0; the old atom and zero codes where E_k = 0."""
    restricted, old_codes, old_atom = restricted.double(), old_codes.double(), old_atom.double()
    left, singular, right_h = torch.linalg.svd(restricted, full_matrices=False)
    atom, codes = right_h[:, 0], left[..., 0] * singular[:, :1]
    sign = ((codes * old_codes).sum(-1, keepdim=True) >= 0).double() * 2 - 1
    nonzero = singular[:, :1] > 0
    return torch.where(nonzero, atom * sign, old_atom), codes * sign * nonzero


def torch_pair(restricted, old_codes, old_atom, stats):
    hint = PowerHint()
    result = leading_pair(restricted, old_codes, old_atom, hint=hint)
    stats.update(fallbacks=hint.fallbacks, direct=hint.direct)
    return result


def native_pair(restricted, old_codes, old_atom, stats):
    """The native kernel's pair through a one-atom pass (module docstring); dead (all-zero codes)
    locations keep their atom."""
    signals = restricted.contiguous()
    dictionary = old_atom[:, None, :].clone()
    codes = old_codes[..., None].clone()
    sq_error = signals.new_empty(len(signals))
    stats.update(native.update_atoms(signals, dictionary, codes, sq_error, exact=True, keep_dead=True))
    return dictionary[:, 0], codes[..., 0]


@pytest.fixture(params=["torch", "native"])
def pair(request):
    """(function, stats dict): the torch path's leading_pair or the native kernel's."""
    stats = {}
    function = torch_pair if request.param == "torch" else native_pair
    return (lambda *args: function(*args, stats)), stats


def random_block(n_locations, n_rows, n_features, seed=0, dtype=torch.float64, strength=3.0):
    """A restricted residual with a dominant direction near the old atom, its old codes and atom."""
    gen = torch.Generator().manual_seed(seed)
    left = torch.randn(n_locations, n_rows, 1, generator=gen, dtype=torch.float64)
    right = torch.randn(n_locations, 1, n_features, generator=gen, dtype=torch.float64)
    restricted = strength * left @ right / (n_rows * n_features) ** 0.5
    restricted += torch.randn(n_locations, n_rows, n_features, generator=gen, dtype=torch.float64) / n_rows ** 0.5
    old_atom = right[:, 0] + 0.5 * torch.randn(n_locations, n_features, generator=gen, dtype=torch.float64)
    old_atom /= old_atom.norm(dim=-1, keepdim=True)
    old_codes = torch.bmm(old_atom[:, None, :], restricted.mT).squeeze(1)
    return restricted.to(dtype), old_codes.to(dtype), old_atom.to(dtype)


def planted_blocks(dtype):
    """Restricted residuals of a few atoms of a K-SVD state on signals from a known sparse model,
    padded with zero rows to the widest location as the torch path's exact pass pads them."""
    gen = torch.Generator().manual_seed(0)
    true = torch.randn(3, 32, 24, generator=gen, dtype=torch.float64)
    true /= true.norm(dim=-1, keepdim=True)
    support = torch.rand(3, 600, 32, generator=gen).argsort(-1)[..., :4]
    values = torch.randn(3, 600, 4, generator=gen, dtype=torch.float64)
    true_codes = torch.zeros(3, 600, 32, dtype=torch.float64).scatter_(-1, support, values.sign() * (0.5 + values.abs()))
    signals = true_codes @ true + 0.02 * torch.randn(3, 600, 24, generator=gen, dtype=torch.float64)
    dictionary = torch.randn(3, 32, 24, generator=gen, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    codes = batch_omp(dictionary, signals, 4, kernel="torch")
    residual = signals - codes @ dictionary
    blocks = []
    for k in (0, 5, 17, 31):
        users = [torch.nonzero(codes[p, :, k]).flatten() for p in range(3)]
        width = max(len(u) for u in users)
        restricted = torch.zeros(3, width, 24, dtype=torch.float64)
        old_codes = torch.zeros(3, width, dtype=torch.float64)
        for p, u in enumerate(users):
            old_codes[p, : len(u)] = codes[p, u, k]
            restricted[p, : len(u)] = residual[p, u] + codes[p, u, k, None] * dictionary[p, k]
        blocks.append((restricted.to(dtype), old_codes.to(dtype), dictionary[:, k].to(dtype)))
    return blocks


def assert_matches(result, expected, dtype, scale=1.0):
    (atom, codes), (ref_atom, ref_codes) = result, expected
    tol = {torch.float64: 1e-10, torch.float32: 2e-5}[dtype] * scale
    atom_error = float((atom.double() - ref_atom).abs().max())
    code_scale = ref_codes.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    code_error = float(((codes.double() - ref_codes).abs() / code_scale).max())
    assert atom_error <= tol and code_error <= tol, (atom_error, code_error)
    assert torch.allclose(atom.norm(dim=-1), torch.ones(len(atom), dtype=atom.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 60, 24), (4, 20, 40), (3, 200, 112)])  # M > C, M < C, Lite0-like
def test_random_blocks_match_svd(pair, dtype, shape):
    compute, _ = pair
    block = random_block(*shape, dtype=dtype)
    assert_matches(compute(*block), svd_pair(*block), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_planted_ksvd_blocks_match_svd_with_padding(pair, dtype):
    compute, _ = pair
    for restricted, old_codes, old_atom in planted_blocks(dtype):
        atom, codes = compute(restricted, old_codes, old_atom)
        assert_matches((atom, codes), svd_pair(restricted, old_codes, old_atom), dtype)
        assert not bool(codes[old_codes == 0].any())  # padding rows keep zero codes


def test_float32_is_as_accurate_as_float32_svd(pair):
    compute, _ = pair
    block = random_block(8, 190, 112, strength=1.5)  # σ₂/σ₁ ≈ 0.85
    ref_atom, _ = svd_pair(*block)
    ours = compute(*(t.float() for t in block))
    left, singular, right_h = torch.linalg.svd(block[0].float(), full_matrices=False)
    svd32 = right_h[:, 0] * torch.sign((left[..., 0] * block[1].float()).sum(-1, keepdim=True))
    ours_error = float((ours[0].double() - ref_atom).abs().max())
    svd_error = float((svd32.double() - ref_atom).abs().max())
    assert ours_error <= max(4 * svd_error, 1e-6), (ours_error, svd_error)


def one_hot_atoms(n_locations, n_features, dtype):
    """Unit atoms whose products with any code are exact, so that the native pass's residual
    arithmetic (E = X − γd, then E_k = E + γd) gives an exactly zero E_k where X = 0."""
    return torch.eye(n_features, dtype=dtype)[torch.arange(n_locations) % n_features]


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_residual_keeps_old_atom_and_zero_codes(pair, dtype):
    compute, _ = pair
    restricted, old_codes, _ = random_block(3, 40, 24, dtype=dtype)
    old_atom = one_hot_atoms(3, 24, dtype)
    restricted[1] = 0  # E_k = 0 with users
    atom, codes = compute(restricted, old_codes, old_atom)
    assert torch.equal(atom[1], old_atom[1]) and not bool(codes[1].any())
    expected = svd_pair(restricted[[0, 2]], old_codes[[0, 2]], old_atom[[0, 2]])
    assert_matches((atom[[0, 2]], codes[[0, 2]]), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_rows", [1, 2, 7])
def test_few_users(pair, dtype, n_rows):
    # The torch path takes eigh of the small Gram matrix; Lanczos ends when the Krylov space is whole.
    compute, stats = pair
    block = random_block(4, n_rows, 24, dtype=dtype)
    assert_matches(compute(*block), svd_pair(*block), dtype)
    assert stats.get("direct", 4) == 4 and stats.get("fallbacks", 0) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [0, 1, 2])
def test_rank_deficient_residuals(pair, dtype, rank):
    compute, _ = pair
    gen = torch.Generator().manual_seed(rank)
    n_locations, n_rows, n_features = 3, 50, 30
    restricted = (torch.randn(n_locations, n_rows, rank, generator=gen, dtype=torch.float64)
                  @ torch.randn(n_locations, rank, n_features, generator=gen, dtype=torch.float64))
    old_atom = one_hot_atoms(n_locations, n_features, torch.float64)
    old_codes = torch.randn(n_locations, n_rows, generator=gen, dtype=torch.float64)
    block = (restricted.to(dtype), old_codes.to(dtype), old_atom.to(dtype))
    atom, codes = compute(*block)
    if rank == 0:  # E_k = 0: the old atom, zero codes
        assert torch.equal(atom, block[2]) and not bool(codes.any())
        return
    ref_atom, ref_codes = svd_pair(*block)
    if rank == 1:
        assert_matches((atom, codes), (ref_atom, ref_codes), dtype)
    # Any rank: the rank-1 error equals the optimum ‖E_k‖² − σ₁².
    error = (restricted - codes.double()[..., None] * atom.double()[:, None, :]).square().sum((1, 2))
    best = (restricted - ref_codes[..., None] * ref_atom[:, None, :]).square().sum((1, 2))
    assert torch.allclose(error, best, rtol={torch.float64: 1e-10, torch.float32: 1e-4}[dtype],
                          atol=1e-10 * float(restricted.square().sum()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gap", [0.0, 1e-6, 1e-3])
def test_ties_and_near_ties_reach_the_optimum(pair, dtype, gap):
    """σ₂ = σ₁(1 − gap): the power iteration is slow or cannot separate them, and goes to eigh for
    float64 near-ties. Lanczos (the native kernel) resolves an isolated pair inside its Krylov space.
    The singular vector is ill-defined for near-ties, the optimum is not."""
    compute, stats = pair
    gen = torch.Generator().manual_seed(3)
    n_locations, n_rows, n_features = 3, 80, 64
    left, _ = torch.linalg.qr(torch.randn(n_locations, n_rows, n_features, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(n_locations, n_features, n_features, generator=gen, dtype=torch.float64))
    singular = torch.linspace(0.5, 0.01, n_features, dtype=torch.float64).repeat(n_locations, 1)
    singular[:, 0], singular[:, 1] = 1.0, 1.0 - gap
    restricted = left @ torch.diag_embed(singular) @ right.mT
    old_atom = (right[..., 0] + right[..., 1]) / 2 ** 0.5  # equally far from both
    old_codes = torch.bmm(old_atom[:, None, :], restricted.mT).squeeze(1)
    atom, codes = compute(restricted.to(dtype), old_codes.to(dtype), old_atom.to(dtype))
    sigma = codes.double().norm(dim=-1)
    assert torch.allclose(sigma, torch.ones_like(sigma), rtol={torch.float64: 1e-12, torch.float32: 1e-5}[dtype])
    if dtype == torch.float64 and gap in (1e-6, 1e-3) and "direct" in stats:  # the torch path
        assert stats["fallbacks"] > 0  # not resolved by the power iteration: eigh


def test_a_cluster_lanczos_cannot_resolve_goes_to_lapack():
    # σ₂ = σ₁(1 − 1e-13) on top of a cluster 1e-6 wide, C = 160 > the native kernel's Lanczos
    # basis (48): the iteration cannot separate the top pair to float64's tolerance; LAPACK's
    # eigensolver finds the optimum. (The torch path's fallback is tested with the near-ties.)
    stats = {}
    compute = lambda *args: native_pair(*args, stats)  # noqa: E731
    gen = torch.Generator().manual_seed(4)
    n_locations, n_rows, n_features = 2, 200, 160
    left, _ = torch.linalg.qr(torch.randn(n_locations, n_rows, n_features, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(n_locations, n_features, n_features, generator=gen, dtype=torch.float64))
    singular = 1 - 1e-6 * torch.linspace(0, 1, n_features, dtype=torch.float64).repeat(n_locations, 1)
    singular[:, 1] = 1 - 1e-13
    restricted = left @ torch.diag_embed(singular) @ right.mT
    old_atom = right.mean(-1) / right.mean(-1).norm(dim=-1, keepdim=True)
    old_codes = torch.bmm(old_atom[:, None, :], restricted.mT).squeeze(1)
    atom, codes = compute(restricted, old_codes, old_atom)
    assert torch.allclose(codes.norm(dim=-1), torch.ones(n_locations, dtype=torch.float64), rtol=1e-12)
    assert stats["fallbacks"] > 0


def test_float32_large_values_do_not_overflow(pair):
    compute, _ = pair
    restricted, old_codes, old_atom = random_block(3, 100, 40)
    scale = 1e6
    atom, codes = compute((restricted * scale).float(), (old_codes * scale).float(), old_atom.float())
    ref_atom, _ = svd_pair(restricted * scale, old_codes * scale, old_atom)
    assert torch.isfinite(atom).all() and torch.isfinite(codes).all()
    assert (atom.double() - ref_atom).abs().max() <= 2e-5


def test_one_check_per_atom_once_the_hint_is_learnt():
    # The torch path's PowerHint: atoms of one pass have similar spectra, so after the first
    # atom the checks land where they pass.
    hint = PowerHint()
    for seed in range(6):
        leading_pair(*random_block(4, 200, 64, seed=seed, dtype=torch.float32), hint=hint)
    assert hint.solves == 24 and hint.fallbacks == 0
    assert hint.checks <= 2 * 4, f"{hint.checks} failed checks for 6 atoms"
