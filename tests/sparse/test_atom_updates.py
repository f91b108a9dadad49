"""One atom-update pass against a float64 NumPy loop (one location, one atom at a time; the exact
update by NumPy's SVD of the explicit restricted residual), on every route: the torch kernel
streamed and gathered, the native kernel. Dead atoms replaced or kept; plans; bad arguments."""
import numpy as np
import pytest
import torch

from gpuksvd.sparse import batch_omp, update_atoms
from gpuksvd.sparse.atom_updates import list_users, plan_atom_updates, streamed_bytes_per_location
from tests.support.problems import planted_problem

#: The ways a pass can run: the torch kernel streaming or gathering the residual, the native kernel.
ROUTES = [pytest.param(dict(kernel="torch", stream_residual=True), id="torch-streamed"),
          pytest.param(dict(kernel="torch", stream_residual=False), id="torch-gathered"),
          pytest.param(dict(kernel="native"), id="native")]
EXACT_ROUTES = [pytest.param(dict(kernel="torch"), id="torch"), pytest.param(dict(kernel="native"), id="native")]


def coded_problem(seed, n_locations, n_signals, n_features, n_atoms, n_nonzero=3, planted=False):
    """Signals, a random unit-norm dictionary and the signals' OMP codes, in float64. Gaussian
    signals, or (``planted``) signals from a known sparse model plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    if planted:
        _, signals = planted_problem(n_locations, n_signals, n_features, n_atoms, n_nonzero, noise=0.02, generator=gen)
    else:
        signals = torch.randn(n_locations, n_signals, n_features, generator=gen, dtype=torch.float64)
    dictionary = torch.randn(n_locations, n_atoms, n_features, generator=gen, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    return signals, dictionary, batch_omp(dictionary, signals, n_nonzero, kernel="torch")


def reference_pass(signals, dictionary, codes, exact=False, dead_atoms="replace"):
    """One K-SVD pass, one location and one atom at a time, in float64 NumPy.

    Approximate: ``d ∝ E_kᵀγ_k``, ``γ_k = E_k d``. Exact: the leading singular pair of the
    explicit restricted residual ``E_k`` by ``np.linalg.svd``, signed so that ``⟨γ_new, γ_old⟩ ≥ 0``.
    A dead atom is skipped (``"keep"``) or takes the worst-represented signal not yet taken.
    """
    dictionary, codes = dictionary.double().numpy().copy(), codes.double().numpy().copy()
    signals = signals.double().numpy()
    for p in range(signals.shape[0]):
        taken = np.zeros(signals.shape[1], dtype=bool)
        supports = codes[p] != 0  # fixed for the pass
        for k in range(dictionary.shape[1]):
            users = np.flatnonzero(supports[:, k])
            if users.size == 0:
                if dead_atoms == "keep":
                    continue
                error = ((signals[p] - codes[p] @ dictionary[p]) ** 2).sum(1)
                error[taken] = -1
                worst = int(np.argmax(error))
                taken[worst] = True
                if error[worst] > 0:
                    dictionary[p, k] = signals[p, worst] / np.linalg.norm(signals[p, worst])
                continue
            old_codes = codes[p, users, k].copy()
            error = signals[p, users] - codes[p, users] @ dictionary[p] + np.outer(old_codes, dictionary[p, k])
            if exact:
                left, singular, right = np.linalg.svd(error, full_matrices=False)
                atom, new_codes = right[0], left[:, 0] * singular[0]
                if new_codes @ old_codes < 0:
                    atom, new_codes = -atom, -new_codes
            else:
                atom = error.T @ old_codes
                atom /= np.linalg.norm(atom)
                new_codes = error @ atom
            dictionary[p, k] = atom
            codes[p, users, k] = new_codes
    return torch.from_numpy(dictionary), torch.from_numpy(codes)


def with_dead_atoms(codes):
    """Atom 2 unused at location 0 only (mid-block for the streamed update), atom 7 everywhere."""
    codes = codes.clone()
    codes[0, :, 2] = 0.0
    codes[:, :, 7] = 0.0
    return codes


@pytest.mark.parametrize("dead_atoms", ["replace", "keep"])
@pytest.mark.parametrize("route", ROUTES)
def test_approximate_pass_matches_float64_reference(route, dead_atoms):
    signals, dictionary, codes = coded_problem(2, n_locations=3, n_signals=120, n_features=10, n_atoms=16)
    codes = with_dead_atoms(codes)
    expected_dictionary, expected_codes = reference_pass(signals, dictionary, codes, dead_atoms=dead_atoms)
    reported = update_atoms(signals, dictionary, codes, dead_atoms=dead_atoms, **route)
    assert (dictionary - expected_dictionary).abs().max() <= 1e-12
    assert (codes - expected_codes).abs().max() <= 1e-12
    assert torch.allclose(reported, (signals - codes @ dictionary).square().sum((1, 2)), rtol=1e-12)


@pytest.mark.parametrize("planted", [False, True], ids=["random", "planted"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("route", EXACT_ROUTES)
def test_exact_pass_matches_float64_svd_reference(route, dtype, planted):
    # Larger blocks than the torch path's direct-eigh size (M, C > 16): the iterations run.
    signals, dictionary, codes = coded_problem(3, n_locations=3, n_signals=400, n_features=24, n_atoms=32,
                                               n_nonzero=4, planted=planted)
    codes = with_dead_atoms(codes)
    signals, dictionary, codes = signals.to(dtype), dictionary.to(dtype), codes.to(dtype)
    expected_dictionary, expected_codes = reference_pass(signals, dictionary, codes, exact=True)
    reported = update_atoms(signals, dictionary, codes, atom_update="exact", **route)
    # float64: the SVD's own accuracy; float32: the rounding of float32 data carried over a pass.
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    atom_error = float((dictionary.double() - expected_dictionary).abs().max())
    code_error = float((codes.double() - expected_codes).abs().max() / expected_codes.abs().max())
    assert atom_error <= tol and code_error <= tol, (atom_error, code_error)
    assert torch.allclose(reported.double(), (signals - codes @ dictionary).square().sum((1, 2)).double(),
                          rtol=10 * tol)
    assert torch.allclose(dictionary.norm(dim=-1), torch.ones(3, 32, dtype=dtype))


@pytest.mark.parametrize("route", EXACT_ROUTES)
def test_exact_atom_pass_never_increases_error(route):
    gen = torch.Generator().manual_seed(5)
    signals = torch.randn(4, 200, 12, generator=gen, dtype=torch.float64)
    dictionary = torch.randn(4, 20, 12, generator=gen, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    for _ in range(3):
        codes = batch_omp(dictionary, signals, 3)
        before = (signals - codes @ dictionary).square().sum((1, 2))
        approximate_dictionary, approximate_codes = dictionary.clone(), codes.clone()
        update_atoms(signals, approximate_dictionary, approximate_codes, **route)
        reported = update_atoms(signals, dictionary, codes, atom_update="exact", **route)
        after = (signals - codes @ dictionary).square().sum((1, 2))
        assert bool((after <= before * (1 + 1e-12)).all()), f"error rose: {before} -> {after}"
        assert torch.allclose(reported, after, rtol=1e-10)  # the residual was kept in sync
        assert torch.allclose(dictionary.norm(dim=-1), torch.ones(4, 20, dtype=torch.float64))
        # Not a theorem over a pass, but it holds here: the exact pass beats the approximate one.
        approximate = (signals - approximate_codes @ approximate_dictionary).square().sum((1, 2))
        assert bool((after <= approximate * (1 + 1e-9)).all())


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
@pytest.mark.parametrize("route", ROUTES)
def test_keep_leaves_dead_atoms_bitwise_unchanged(route, atom_update):
    if atom_update == "exact" and route.get("stream_residual"):
        pytest.skip("the exact update gathers")
    signals, dictionary, codes = coded_problem(4, n_locations=2, n_signals=200, n_features=20, n_atoms=24)
    codes = with_dead_atoms(codes)
    before = dictionary.clone()
    expected_dictionary, expected_codes = reference_pass(signals, dictionary, codes, atom_update == "exact", "keep")
    update_atoms(signals, dictionary, codes, atom_update=atom_update, dead_atoms="keep", **route)
    assert torch.equal(dictionary[0, 2], before[0, 2]) and torch.equal(dictionary[:, 7], before[:, 7])
    assert not bool(codes[0, :, 2].any()) and not bool(codes[:, :, 7].any())
    assert (dictionary - expected_dictionary).abs().max() <= 1e-10
    assert (codes - expected_codes).abs().max() <= 1e-10


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
@pytest.mark.parametrize("route", EXACT_ROUTES)
def test_dead_atom_is_replaced_by_worst_signal_in_one_pass(route, atom_update):
    gen = torch.Generator().manual_seed(1)
    signals = torch.randn(1, 40, 6, generator=gen, dtype=torch.float64)
    dictionary = torch.eye(6, dtype=torch.float64)[None].repeat(1, 1, 1)
    codes = batch_omp(dictionary, signals, 2)
    codes[0, :, 0] = 0.0  # atom 0 unused: updated first, so it sees the residual as it is now
    residual = signals - codes @ dictionary
    worst = int(residual[0].square().sum(-1).argmax())
    update_atoms(signals, dictionary, codes, atom_update=atom_update, **route)  # dead_atoms="replace"
    expected = signals[0, worst] / signals[0, worst].norm()
    assert torch.allclose(dictionary[0, 0], expected, atol=1e-12)


def test_native_and_torch_exact_passes_agree_in_float32():
    signals, dictionary, codes = coded_problem(6, n_locations=2, n_signals=600, n_features=48, n_atoms=64,
                                               n_nonzero=8)
    signals, dictionary, codes = signals.float(), dictionary.float(), codes.float()
    results = []
    for kernel in ("torch", "native"):
        atoms, new_codes = dictionary.clone(), codes.clone()
        update_atoms(signals, atoms, new_codes, atom_update="exact", kernel=kernel)
        results.append((atoms, new_codes))
    (torch_atoms, torch_codes), (native_atoms, native_codes) = results
    assert (torch_atoms - native_atoms).abs().max() <= 1e-4
    assert (torch_codes - native_codes).abs().max() <= 1e-4 * codes.abs().max()


def test_update_tiles_follow_the_cache_budget():
    signals = torch.randn(10, 50, 8)
    per_location = streamed_bytes_per_location(50, 8, 8, torch.float32)
    cache = 3 * per_location
    plan = plan_atom_updates(signals, 8, False, cache_budget=cache)
    assert plan.streamed and plan.tiles == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    plan = plan_atom_updates(signals, 8, True, cache_budget=cache)  # exact updates gather, in memory
    assert not plan.streamed and plan.tiles == [slice(0, 10)]
    assert len(plan_atom_updates(signals, 8, False, max_memory=per_location, cache_budget=cache).tiles) == 10
    assert not plan_atom_updates(signals, 8, False, cache_budget=per_location - 1).streamed  # does not fit
    with pytest.raises(ValueError, match="stream_residual=True works with atom_update='approximate' only"):
        plan_atom_updates(signals, 8, True, stream_residual=True)
    # The native kernel: one location per tile, whatever the budget.
    plan = plan_atom_updates(signals, 8, True, kernel="native")
    assert plan.kernel == "native" and plan.tiles == [slice(p, p + 1) for p in range(10)]


def test_streamed_tiles_off_the_cpu_follow_the_memory_budget_not_the_cpus_cache(monkeypatch):
    # On a GPU no last-level cache bounds a tile: the CPU's cache share per core would cut the
    # locations into tiles of one or two and multiply the kernel launches.
    monkeypatch.setattr("gpuksvd.sparse.atom_updates.tile_cache_budget", lambda: 1)
    signals = torch.empty(10, 50, 8, device="meta")
    per_location = streamed_bytes_per_location(50, 8, 8, torch.float32)
    assert plan_atom_updates(signals, 8, False, stream_residual=True).tiles == [slice(0, 10)]
    plan = plan_atom_updates(signals, 8, False, stream_residual=True, max_memory=3 * per_location)
    assert plan.streamed and plan.tiles == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert not plan_atom_updates(signals, 8, False).streamed  # streaming stays opt-in there


def test_list_users_matches_stable_sort():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randn(3, 10, 50, generator=gen) * (torch.rand(3, 10, 50, generator=gen) < 0.3)
    users, counts = list_users(codes)
    expected = (codes == 0).to(torch.uint8).sort(dim=-1, stable=True).indices
    assert torch.equal(counts, (codes != 0).sum(-1))
    for p in range(3):
        for k in range(10):
            c = int(counts[p, k])
            assert torch.equal(users[p, k, :c], expected[p, k, :c])
            assert bool((users[p, k, c:] == 50).all())


def test_non_contiguous_tensors_are_updated_in_place_by_the_native_kernel():
    signals, dictionary, codes = coded_problem(7, n_locations=3, n_signals=100, n_features=10, n_atoms=16)
    expected_dictionary, expected_codes = reference_pass(signals, dictionary, codes, exact=True)
    strided_dictionary = dictionary.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    strided_codes = codes.transpose(0, 1).contiguous().transpose(0, 1)
    update_atoms(signals, strided_dictionary, strided_codes, atom_update="exact", kernel="native")
    assert (strided_dictionary - expected_dictionary).abs().max() <= 1e-10
    assert (strided_codes - expected_codes).abs().max() <= 1e-10


def test_bad_arguments_are_named():
    signals = torch.randn(2, 10, 4)
    dictionary = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match=r"codes must have shape \(2, 10, 6\)"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 5))
    with pytest.raises(ValueError, match="unknown atom_update"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 6), atom_update="svd")
    with pytest.raises(ValueError, match="unknown dead_atoms 'drop'.*'replace'.*'keep'"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 6), dead_atoms="drop")
    with pytest.raises(ValueError, match="unknown kernel 'c'"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 6), kernel="c")
    with pytest.raises(ValueError, match="stream_residual.*pass kernel='torch'"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 6), kernel="native", stream_residual=True)
