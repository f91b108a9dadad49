"""Fixtures shared by the engine's tests."""
import pytest


@pytest.fixture(params=["torch", "native"])
def kernel(request):
    """Both implementations of the kernels: every reference test runs on each
    (:mod:`gpuksvd.sparse.dispatch`). The native one is built on first use."""
    return request.param
