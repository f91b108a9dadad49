"""Which kernel runs for which tensors, and the options only the torch kernel has."""
import pytest
import torch

from gpuksvd.sparse import check_kernel
from gpuksvd.sparse.dispatch import check_torch_only, resolve_kernel


def test_auto_is_native_for_cpu_float32_and_float64_and_torch_elsewhere():
    assert resolve_kernel("auto", torch.zeros(2, dtype=torch.float32)) == "native"
    assert resolve_kernel("auto", torch.zeros(2, dtype=torch.float64)) == "native"
    assert resolve_kernel("auto", torch.zeros(2, dtype=torch.bfloat16)) == "torch"
    assert resolve_kernel("torch", torch.zeros(2)) == "torch"
    assert resolve_kernel("native", torch.zeros(2)) == "native"
    if torch.cuda.is_available():
        assert resolve_kernel("auto", torch.zeros(2, device="cuda")) == "torch"


def test_native_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="kernel='native' runs on CPU float32/float64 tensors.*kernel='auto'"):
        resolve_kernel("native", torch.zeros(2, dtype=torch.float16))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="runs on CPU"):
            resolve_kernel("native", torch.zeros(2, device="cuda"))


def test_unknown_kernels_are_named():
    with pytest.raises(ValueError, match="unknown kernel 'cuda': choose one of auto, torch, native, triton"):
        check_kernel("cuda")
    with pytest.raises(ValueError, match="unknown kernel"):
        resolve_kernel("gpu", torch.zeros(2))


def test_torch_only_options_need_the_torch_kernel():
    check_torch_only("torch", stream_residual=True, factor_layout=True)
    check_torch_only("native", stream_residual=False, factor_layout=False)
    with pytest.raises(ValueError, match="factor_layout chooses how the torch kernel works.*kernel='torch'"):
        check_torch_only("native", factor_layout=True)


def test_triton_runs_on_cuda_or_in_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # read at each call: the CPU now needs CUDA
    with pytest.raises(ValueError, match="kernel='triton' runs on CUDA float32/float64 tensors.*kernel='auto'"):
        resolve_kernel("triton", torch.zeros(2))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_kernel("triton", torch.zeros(2)) == "triton"
    with pytest.raises(ValueError, match="float32/float64"):
        resolve_kernel("triton", torch.zeros(2, dtype=torch.float16))
    if torch.cuda.is_available():
        assert resolve_kernel("triton", torch.zeros(2, device="cuda")) == "triton"


def test_triton_keeps_the_torch_atom_update_options():
    check_torch_only("triton", stream_residual=True)
    with pytest.raises(ValueError, match="factor_layout chooses how the torch kernel works.*triton kernel"):
        check_torch_only("triton", factor_layout=True)
