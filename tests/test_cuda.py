"""The CUDA path against float64 CPU references (skipped without a GPU)."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import orthogonal_mp_gram

from gpuksvd import batch_omp, ksvd
from gpuksvd.model import PSDL, PSDLConfig
from gpuksvd.model_io import build_extractor

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def unit_rows(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_batch_omp_cuda_float64_matches_sklearn():
    gen = torch.Generator().manual_seed(0)
    dictionary = unit_rows(torch.randn(6, 48, 32, generator=gen, dtype=torch.float64))
    signals = torch.randn(6, 300, 32, generator=gen, dtype=torch.float64)
    codes = batch_omp(dictionary.cuda(), signals.cuda(), 8).cpu()
    worst = 0.0
    for p in range(6):
        d, x = dictionary[p].numpy(), signals[p].numpy()
        reference = orthogonal_mp_gram(d @ d.T, d @ x.T, n_nonzero_coefs=8).T
        worst = max(worst, np.abs(codes[p].numpy() - reference).max())
    assert worst <= 1e-8, f"max |cuda - sklearn| = {worst:.3g}"


def test_batch_omp_cuda_float32_close_to_cpu_float64_at_paper_shape():
    gen = torch.Generator().manual_seed(1)
    dictionary = unit_rows(torch.randn(16, 200, 200, generator=gen, dtype=torch.float64))
    signals = torch.randn(16, 1000, 200, generator=gen, dtype=torch.float64)
    reference = batch_omp(dictionary, signals, 50)
    codes = batch_omp(dictionary.float().cuda(), signals.float().cuda(), 50).cpu().double()
    rel = float(((codes - reference) @ dictionary).norm() / (reference @ dictionary).norm())
    assert rel <= 1e-3, f"float32 CUDA vs float64 CPU reconstruction differs by {rel:.3g}"


def test_ksvd_cuda_follows_cpu_float64():
    gen = torch.Generator().manual_seed(2)
    signals = torch.randn(8, 600, 64, generator=gen, dtype=torch.float64)
    cpu = ksvd(signals, 64, 16, n_iter=5)
    gpu = ksvd(signals.float().cuda(), 64, 16, n_iter=5)
    assert abs(gpu.history[-1] - cpu.history[-1]) <= 1e-3 * cpu.history[-1]
    chunked = ksvd(signals.float().cuda(), 64, 16, n_iter=5, max_memory=1)
    assert torch.allclose(chunked.dictionary, gpu.dictionary, atol=1e-4)


def test_detector_scores_agree_between_cpu_and_cuda():
    extractor = build_extractor("resnet18", ["layer2"], weights="random")
    model = PSDL(extractor, PSDLConfig(n_atoms=16, n_iter=2), (64, 64))
    gen = torch.Generator().manual_seed(3)
    train = [torch.randn(40, 128, 8, 8, generator=gen)]
    model.fit_features(train, progress=False)
    images = torch.randn(4, 3, 64, 64, generator=gen)
    cpu_maps = model.anomaly_maps(images)
    gpu_maps = model.cuda().anomaly_maps(images.cuda()).cpu()
    assert torch.allclose(gpu_maps, cpu_maps, rtol=1e-3, atol=1e-3)
