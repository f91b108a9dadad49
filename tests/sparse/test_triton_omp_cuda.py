"""The compiled fused Triton Batch-OMP on a CUDA GPU, against the torch path.

Skipped without a GPU, and in the interpreter that ``tests/conftest.py`` turns on; run it
compiled, in its own process (``benchmarks/gpu_check.sh`` does):
    GPUKSVD_TRITON_COMPILED=1 python -m pytest -q tests/sparse/test_triton_omp_cuda.py
"""
from functools import partial

import pytest
import torch

pytest.importorskip("triton", reason="Triton ships with the CUDA build of torch")

from tests.support.kernels import torch_codes  # noqa: E402
from tests.support.problems import random_problem  # noqa: E402
from gpuksvd.sparse.triton_omp import fused_batch_omp, interpreting, plan_launch  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(interpreting(), reason="compiled-kernel tests: run with GPUKSVD_TRITON_COMPILED=1"),
]

DEVICE = torch.device("cuda")


problem = partial(random_problem, dtype=torch.float32, device=DEVICE)


def compare(dictionary, signals, n_nonzero, tol=None, **launch):
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    sq_norms = signals.square().sum(-1) if tol is not None else None
    codes, n_dependent = fused_batch_omp(gram, projections, n_nonzero, sq_norms, tol, **launch)
    expected, expected_dependent = torch_codes(dictionary, signals, n_nonzero, tol=tol)
    same_support = float(((codes != 0) == (expected != 0)).all(-1).double().mean())
    reconstruction = codes.double() @ dictionary.double()
    reference = expected.double() @ dictionary.double()
    rel = float((reconstruction - reference).norm() / reference.norm().clamp_min(1e-30))
    return codes, expected, same_support, rel, int(n_dependent), expected_dependent


@pytest.mark.parametrize("n_atoms, n_features, n_nonzero, n_signals", [
    (200, 200, 50, 700),    # EN-B6 shapes (K not a power of two)
    (256, 256, 64, 700),    # RN18
    (1024, 1024, 256, 64),  # WRN50 (few signals: the torch reference is slow there)
    (24, 16, 1, 100),       # T = 1
])
def test_float32_matches_torch(n_atoms, n_features, n_nonzero, n_signals):
    dictionary, signals = problem(3, n_signals, n_features, n_atoms)
    signals[:, :3] = 0.0
    codes, _, same_support, rel, n_dep, exp_dep = compare(dictionary, signals, n_nonzero)
    assert same_support >= 0.99, same_support
    assert rel <= 1e-4, rel
    assert n_dep == exp_dep
    assert bool((codes[:, :3] == 0).all()) and bool(torch.isfinite(codes).all())


@pytest.mark.parametrize("launch", [dict(), dict(block_n=16, num_warps=8), dict(block_n=8, num_warps=4),
                                    dict(alpha_unroll=2), dict(alpha_update="dense", num_warps=16)])
def test_float64_and_launch_variants_match_torch(launch):
    dictionary, signals = problem(2, 333, 48, 80, dtype=torch.float64, seed=1)
    codes, expected, same_support, *_ = compare(dictionary, signals, 20, **launch)
    assert same_support == 1.0
    assert float((codes - expected).abs().max()) <= 1e-10


@pytest.mark.parametrize("n_atoms, n_nonzero", [(200, 50), (256, 64)])
def test_dense_tf32x3_alpha_update_matches_torch(n_atoms, n_nonzero):
    # tf32x3 on tensor cores: ≈ fp32 accuracy, so near-ties may rarely resolve differently.
    dictionary, signals = problem(3, 700, n_atoms, n_atoms, seed=3)
    _, _, same_support, rel, *_ = compare(dictionary, signals, n_nonzero, alpha_update="dense")
    assert same_support >= 0.99, same_support
    assert rel <= 1e-4, rel


def test_tol_matches_torch():
    dictionary, signals = problem(2, 500, 64, 96, dtype=torch.float64, seed=2)
    tol = 0.3 * float(signals.square().sum(-1).mean())
    codes, expected, same_support, *_ = compare(dictionary, signals, 30, tol=tol)
    assert same_support == 1.0 and float((codes - expected).abs().max()) <= 1e-10
    assert int((codes != 0).sum(-1).max()) < 30


def test_no_sync_and_cuda_graph_capture():
    dictionary, signals = problem(2, 300, 200, 200)
    gram, projections = dictionary @ dictionary.mT, signals @ dictionary.mT
    codes, _ = fused_batch_omp(gram, projections, 50)  # compile outside the checks
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again, _ = fused_batch_omp(gram, projections, 50)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(codes, again)

    static_gram, static_proj = gram.clone(), projections.clone()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fused_batch_omp(static_gram, static_proj, 50)  # warm-up on the capture stream
        with torch.cuda.graph(graph, stream=stream):
            graph_codes, graph_dependent = fused_batch_omp(static_gram, static_proj, 50)
    torch.cuda.current_stream().wait_stream(stream)
    _, signals2 = problem(2, 300, 200, 200, seed=7)
    static_proj.copy_(signals2 @ dictionary.mT)
    graph.replay()
    expected, _ = fused_batch_omp(gram, signals2 @ dictionary.mT, 50)
    torch.cuda.synchronize()
    assert torch.equal(graph_codes, expected)


def test_plans_used_here_fit_the_device():
    props = torch.cuda.get_device_properties(DEVICE)
    for n_atoms, n_nonzero in [(200, 50), (256, 64), (1024, 256)]:
        plan = plan_launch(n_atoms, n_nonzero, torch.float32)
        assert 32 * plan.num_warps * 128 * plan.programs_per_sm <= props.regs_per_multiprocessor
