"""The devices a test runs on: the CPU always, CUDA when there is a GPU (skipped otherwise)."""
import pytest
import torch

CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])
DEVICES = ["cpu", CUDA]
