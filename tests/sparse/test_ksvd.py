"""K-SVD: monotone error, planted-dictionary recovery, fixed mode, chunking, reproducibility, on both
kernels (the ``kernel`` fixture: torch and native)."""
import importlib

import pytest
import torch

from gpuksvd.sparse import batch_omp, ksvd
from gpuksvd.sparse.atom_updates import plan_atom_updates, run_update_pass
from gpuksvd.sparse.omp import code_tiles, omp_tiles
from tests.support.devices import DEVICES
from tests.support.kernels import TRITON
from tests.support.problems import planted_problem

ksvd_module = importlib.import_module("gpuksvd.sparse.ksvd")  # the package's `ksvd` is the function


def test_recovers_planted_dictionary(kernel):
    true, signals = planted_problem()
    result = ksvd(signals, 24, 3, n_iter=30, init="random", generator=torch.Generator().manual_seed(1), kernel=kernel)
    cosine = (result.dictionary @ true.mT).abs().amax(1)  # best learned match of each true atom
    found = float((cosine >= 0.99).double().mean())
    assert found >= 0.9, f"only {found:.2%} of planted atoms recovered (|cos| ≥ 0.99)"


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
def test_error_falls_across_iterations(atom_update, kernel):
    _, signals = planted_problem(n_signals=400, noise=0.05)
    result = ksvd(signals, 24, 3, n_iter=8, atom_update=atom_update, kernel=kernel)
    assert len(result.history) == 8
    assert result.history[-1] < 0.7 * float(result.location_error[0].mean())
    assert result.history[-1] <= result.history[0]
    final = (signals - result.codes @ result.dictionary).square().sum() / signals.square().sum()
    assert abs(float(final.sqrt()) - result.history[-1]) < 1e-9  # history describes the returned codes


def test_fixed_dictionary_mode_leaves_dictionary_untouched():
    _, signals = planted_problem(n_signals=100)
    initial = torch.randn(24, 16, dtype=torch.float64)
    result = ksvd(signals, 24, 4, n_iter=0, init=initial)
    expected = (initial / initial.norm(dim=-1, keepdim=True)).expand(3, 24, 16)
    assert torch.equal(result.dictionary, expected)
    assert torch.equal(result.codes, batch_omp(result.dictionary, signals, 4))
    assert result.history == [] and result.location_error.shape == (1, 3)


def test_chunked_equals_unchunked(kernel):
    _, signals = planted_problem(n_locations=5, n_signals=200)
    whole = ksvd(signals, 24, 3, n_iter=3, kernel=kernel)
    chunked = ksvd(signals, 24, 3, n_iter=3, max_memory=100_000, kernel=kernel)  # OMP tiles of 67 signals
    assert torch.allclose(whole.dictionary, chunked.dictionary, atol=1e-10)
    assert torch.allclose(whole.codes, chunked.codes, atol=1e-10)


def test_seeded_random_init_is_reproducible():
    _, signals = planted_problem(n_signals=100)
    first = ksvd(signals, 24, 3, n_iter=2, init="random", generator=torch.Generator().manual_seed(7))
    second = ksvd(signals, 24, 3, n_iter=2, init="random", generator=torch.Generator().manual_seed(7))
    other = ksvd(signals, 24, 3, n_iter=2, init="random", generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.dictionary, second.dictionary) and torch.equal(first.codes, second.codes)
    assert not torch.equal(first.dictionary, other.dictionary)


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
def test_dead_atom_is_replaced_by_worst_signal(kernel, atom_update):
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(1, 50, 8, generator=gen, dtype=torch.float64)
    init = torch.eye(8, dtype=torch.float64).repeat(2, 1)[:9]  # atom 8 duplicates atom 0
    init[8] = init[0]
    result = ksvd(signals, 9, 1, n_iter=1, init=init, kernel=kernel, atom_update=atom_update)
    norms = result.dictionary.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms))
    # The duplicate could never be selected; it must now point at a training signal.
    cos = (result.dictionary[0, 8] @ (signals[0] / signals[0].norm(dim=-1, keepdim=True)).T).abs().max()
    assert float(cos) > 1 - 1e-9


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
def test_dead_atoms_keep_leaves_unused_atoms_as_they_were(kernel, atom_update):
    # The PSDL authors' sparselandtools ApproximateKSVD: an unused atom is skipped (left unchanged).
    gen = torch.Generator().manual_seed(0)
    signals = torch.randn(2, 50, 8, generator=gen, dtype=torch.float64)
    init = torch.eye(8, dtype=torch.float64).repeat(2, 1)[:9]
    init[8] = init[0]  # a duplicate: never selected by the first coding, so dead in the first pass
    result = ksvd(signals, 9, 1, n_iter=1, init=init, dead_atoms="keep", kernel=kernel, atom_update=atom_update)
    assert torch.equal(result.dictionary[:, 8], init[8].expand(2, 8))
    assert not bool(result.codes[..., 8].any())
    replaced = ksvd(signals, 9, 1, n_iter=1, init=init, kernel=kernel, atom_update=atom_update)
    assert not torch.equal(replaced.dictionary[:, 8], init[8].expand(2, 8))


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
def test_native_and_torch_kernels_learn_the_same_dictionary(atom_update):
    _, signals = planted_problem(n_locations=3, n_signals=300)
    init = torch.eye(24, 16, dtype=torch.float64) + 0.1  # some atoms start unused: dead-atom path
    native = ksvd(signals, 24, 3, n_iter=4, init=init, atom_update=atom_update, kernel="native")
    torch_result = ksvd(signals, 24, 3, n_iter=4, init=init, atom_update=atom_update, kernel="torch")
    assert torch.allclose(native.dictionary, torch_result.dictionary, atol=1e-9)
    assert torch.allclose(native.codes, torch_result.codes, atol=1e-9)
    assert native.history == pytest.approx(torch_result.history, rel=1e-10)


@pytest.mark.parametrize("kernel", [TRITON])
def test_triton_and_torch_kernels_learn_the_same_dictionary(kernel):
    # The fused Triton OMP (in Triton's interpreter here) with the torch atom updates.
    _, signals = planted_problem(n_locations=2, n_signals=40, n_features=12, n_atoms=16)
    init = torch.eye(16, 12, dtype=torch.float64) + 0.1
    fused = ksvd(signals, 16, 3, n_iter=2, init=init, kernel=kernel)
    torch_result = ksvd(signals, 16, 3, n_iter=2, init=init, kernel="torch")
    assert torch.allclose(fused.dictionary, torch_result.dictionary, atol=1e-10)
    assert torch.allclose(fused.codes, torch_result.codes, atol=1e-10)
    assert fused.history == pytest.approx(torch_result.history, rel=1e-10)


def test_an_iteration_reads_nothing_back_on_the_gpu_path(monkeypatch):
    # The CUDA torch path, run on the CPU: OMP without the per-step early exit (the host read of
    # the active count), the streamed approximate update with dead atoms kept. Any host read of a
    # tensor value in the iteration raises, so it could be captured in a CUDA graph.
    monkeypatch.setattr("gpuksvd.sparse.omp.EARLY_EXIT_DEVICES", frozenset())
    _, signals = planted_problem(n_locations=2, n_signals=200)
    dictionary = torch.eye(24, 16, dtype=torch.float64).expand(2, 24, 16).contiguous() + 0.1
    dictionary /= dictionary.norm(dim=-1, keepdim=True)
    codes = signals.new_zeros(2, 200, 24)
    tiles = omp_tiles(2, 200, 24, 3, signals.dtype, None, signals.device)
    plan = plan_atom_updates(signals, 24, exact=False, stream_residual=True)
    sq_error = signals.new_zeros(2)
    expected = ksvd(signals, 24, 3, n_iter=1, init=dictionary[0].clone(), dead_atoms="keep", kernel="torch",
                    stream_residual=True)

    def host_read(*args, **kwargs):
        raise AssertionError("host read of a tensor value inside an iteration")

    with monkeypatch.context() as patched:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
            patched.setattr(torch.Tensor, name, host_read)
        n_dependent = code_tiles(signals, dictionary, codes, 3, tiles, kernel="torch")
        run_update_pass(signals, dictionary, codes, False, plan, sq_error, dead_atoms="keep")
    assert isinstance(n_dependent, torch.Tensor) and int(n_dependent) == 0
    assert torch.allclose(dictionary, expected.dictionary, atol=1e-12)
    assert torch.allclose(codes, expected.codes, atol=1e-12)


def test_callback_receives_each_iteration():
    _, signals = planted_problem(n_signals=100)
    seen = []
    ksvd(signals, 24, 3, n_iter=3, callback=lambda it, err: seen.append((it, err)))
    assert [it for it, _ in seen] == [1, 2, 3] and all(0 < err < 1 for _, err in seen)


@pytest.mark.parametrize("atom_update", ["approximate", "exact"])
@pytest.mark.parametrize("device", DEVICES)
def test_float32_follows_float64(device, atom_update):
    _, signals = planted_problem(n_signals=300)
    r64 = ksvd(signals.to(device), 24, 3, n_iter=3, atom_update=atom_update)
    r32 = ksvd(signals.float().to(device), 24, 3, n_iter=3, atom_update=atom_update)
    assert abs(r32.history[-1] - r64.history[-1]) <= 1e-3 * max(r64.history[-1], 1e-3) + 1e-5


def test_fewer_signals_than_atoms_says_what_to_do():
    signals = torch.randn(2, 10, 16)
    with pytest.raises(ValueError, match=r"n_atoms=24 but only N=10.*training images \(at least 24\)"):
        ksvd(signals, 24, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(atom_update="svd"), "atom_update"),
        (dict(n_iter=-1), "n_iter"),
        (dict(init="wavelet"), "unknown init"),
        (dict(init=torch.randn(3, 3)), "init tensor has shape"),
        (dict(n_nonzero=0), "n_nonzero"),
        (dict(factor_layout="packed"), "factor_layout"),
        (dict(atom_update="exact", stream_residual=True), "stream_residual"),
        (dict(kernel="fortran"), "unknown kernel"),
        (dict(dead_atoms="remove"), "unknown dead_atoms"),
        (dict(kernel="native", factor_layout="matrices"), "factor_layout.*pass kernel='torch'"),
        (dict(kernel="native", stream_residual=False), "stream_residual.*pass kernel='torch'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    signals = torch.randn(2, 40, 16)
    kwargs = {"n_atoms": 16, "n_nonzero": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        ksvd(signals, **kwargs)


def test_non_finite_signals_rejected():
    signals = torch.randn(2, 40, 16)
    signals[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ksvd(signals, 16, 4)


def test_one_sparse_coding_per_iteration(monkeypatch):
    calls = []
    original = ksvd_module.code_tiles
    monkeypatch.setattr(ksvd_module, "code_tiles", lambda *a, **k: calls.append(1) or original(*a, **k))
    _, signals = planted_problem(n_signals=100)
    ksvd(signals, 24, 3, n_iter=3)
    assert len(calls) == 3  # the initial coding serves the first iteration


def test_streamed_and_gathered_updates_learn_the_same_dictionary():
    _, signals = planted_problem(n_locations=4, n_signals=300)
    init = torch.eye(24, 16, dtype=torch.float64) + 0.1  # some atoms start unused: dead-atom path
    automatic = ksvd(signals, 24, 3, n_iter=4, init=init, kernel="torch")  # small problems stream on the CPU
    streamed = ksvd(signals, 24, 3, n_iter=4, init=init, stream_residual=True, kernel="torch")
    gathered = ksvd(signals, 24, 3, n_iter=4, init=init, stream_residual=False, kernel="torch")
    assert torch.equal(automatic.dictionary, streamed.dictionary)
    assert torch.allclose(streamed.dictionary, gathered.dictionary, atol=1e-10)
    assert torch.allclose(streamed.codes, gathered.codes, atol=1e-10)
    assert streamed.history == pytest.approx(gathered.history, rel=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_on_each_device_follows_float64_on_the_cpu(device):
    gen = torch.Generator().manual_seed(2)
    signals = torch.randn(8 if device == "cuda" else 3, 600, 64, generator=gen, dtype=torch.float64)
    cpu = ksvd(signals, 64, 16, n_iter=5)
    other = ksvd(signals.float().to(device), 64, 16, n_iter=5)
    assert abs(other.history[-1] - cpu.history[-1]) <= 1e-3 * cpu.history[-1]
    # One signal per tile on the GPU; on the CPU (thousands of tiny tiles would take minutes) a few dozen.
    tiled = ksvd(signals.float().to(device), 64, 16, n_iter=5, max_memory=1 if device == "cuda" else 1_000_000)
    assert torch.allclose(tiled.dictionary, other.dictionary, atol=1e-4)
