"""One atom-update pass: float64 references, exactness, streamed vs gathered, dead atoms, plans."""
import numpy as np
import pytest
import torch

from gpuksvd.sparse import batch_omp, update_atoms
from gpuksvd.sparse.atom_updates import plan_atom_updates, streamed_bytes_per_location


def coded_problem(seed, n_locations, n_signals, n_features, n_atoms, n_nonzero=3):
    """Gaussian signals, a random unit-norm dictionary and the signals' OMP codes, in float64."""
    gen = torch.Generator().manual_seed(seed)
    signals = torch.randn(n_locations, n_signals, n_features, generator=gen, dtype=torch.float64)
    dictionary = torch.randn(n_locations, n_atoms, n_features, generator=gen, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    return signals, dictionary, batch_omp(dictionary, signals, n_nonzero)


def test_exact_atom_pass_never_increases_error():
    gen = torch.Generator().manual_seed(5)
    signals = torch.randn(4, 200, 12, generator=gen, dtype=torch.float64)
    dictionary = torch.randn(4, 20, 12, generator=gen, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    for _ in range(3):
        codes = batch_omp(dictionary, signals, 3)
        before = (signals - codes @ dictionary).square().sum((1, 2))
        reported = update_atoms(signals, dictionary, codes, atom_update="exact")
        after = (signals - codes @ dictionary).square().sum((1, 2))
        assert bool((after <= before * (1 + 1e-12)).all()), f"error rose: {before} -> {after}"
        assert torch.allclose(reported, after, rtol=1e-10)  # the residual was kept in sync
        assert torch.allclose(dictionary.norm(dim=-1), torch.ones(4, 20, dtype=torch.float64))


def _reference_approximate_pass(signals, dictionary, codes):
    """One approximate K-SVD pass, one location and one atom at a time, in float64 NumPy."""
    dictionary, codes = dictionary.numpy().copy(), codes.numpy().copy()
    signals = signals.numpy()
    for p in range(signals.shape[0]):
        for k in range(dictionary.shape[1]):
            users = np.flatnonzero(codes[p, :, k])
            if users.size == 0:
                continue
            error = signals[p, users] - codes[p, users] @ dictionary[p] + np.outer(codes[p, users, k], dictionary[p, k])
            atom = error.T @ codes[p, users, k]
            dictionary[p, k] = atom / np.linalg.norm(atom)
            codes[p, users, k] = error @ dictionary[p, k]
    return torch.from_numpy(dictionary), torch.from_numpy(codes)


@pytest.mark.parametrize("streamed", [True, False])
def test_approximate_pass_matches_float64_reference(streamed):
    # Both ways of updating the atoms (streaming the whole residual, or gathering the users'
    # rows) must give the reference's atoms and codes.
    signals, dictionary, codes = coded_problem(2, n_locations=3, n_signals=120, n_features=10, n_atoms=16)
    expected_dictionary, expected_codes = _reference_approximate_pass(signals, dictionary, codes)
    reported = update_atoms(signals, dictionary, codes, stream_residual=streamed)
    assert (dictionary - expected_dictionary).abs().max() <= 1e-12
    assert (codes - expected_codes).abs().max() <= 1e-12
    assert torch.allclose(reported, (signals - codes @ dictionary).square().sum((1, 2)), rtol=1e-12)


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


@pytest.mark.parametrize("streamed", [True, False])
def test_atom_dead_at_one_location_mid_block_matches_reference(streamed):
    # A dead atom in the middle of a streamed block flushes the deferred corrections; the atoms
    # after it must still see the up-to-date residual (and the other location must be unaffected).
    signals, dictionary, codes = coded_problem(4, n_locations=2, n_signals=200, n_features=12, n_atoms=20)
    codes[0, :, 2] = 0.0  # atom 2 unused at location 0 only
    # The reference skips dead atoms; the dead atom itself is replaced by a signal, so compare the others.
    expected_dictionary, expected_codes = _reference_approximate_pass(signals, dictionary, codes)
    reported = update_atoms(signals, dictionary, codes, stream_residual=streamed)
    live = torch.ones(2, 20, dtype=torch.bool)
    live[0, 2] = False
    assert (dictionary - expected_dictionary)[live].abs().max() <= 1e-12
    assert (codes - expected_codes).abs().max() <= 1e-12
    assert torch.allclose(reported, (signals - codes @ dictionary).square().sum((1, 2)), rtol=1e-12)

def test_dead_atom_is_replaced_by_worst_signal_in_one_pass():
    gen = torch.Generator().manual_seed(1)
    signals = torch.randn(1, 40, 6, generator=gen, dtype=torch.float64)
    dictionary = torch.eye(6, dtype=torch.float64)[None].repeat(1, 1, 1)
    codes = batch_omp(dictionary, signals, 2)
    codes[0, :, 0] = 0.0  # atom 0 unused: updated first, so it sees the residual as it is now
    residual = signals - codes @ dictionary
    worst = int(residual[0].square().sum(-1).argmax())
    update_atoms(signals, dictionary, codes)
    expected = signals[0, worst] / signals[0, worst].norm()
    assert torch.allclose(dictionary[0, 0], expected, atol=1e-12)


def test_bad_codes_are_named():
    signals = torch.randn(2, 10, 4)
    dictionary = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match=r"codes must have shape \(2, 10, 6\)"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 5))
    with pytest.raises(ValueError, match="unknown atom_update"):
        update_atoms(signals, dictionary, torch.zeros(2, 10, 6), atom_update="svd")
