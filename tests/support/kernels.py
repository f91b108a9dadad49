"""The Triton kernel as a test parameter: run in Triton's interpreter on the CPU (turned on by
``tests/conftest.py``), skipped where Triton is not installed or the interpreter is off."""
import importlib.util

import pytest


def _interpreting() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    from gpuksvd.sparse.triton_omp import interpreting

    return interpreting()


TRITON = pytest.param("triton", marks=pytest.mark.skipif(
    not _interpreting(), reason="needs Triton and its interpreter (TRITON_INTERPRET=1, set by tests/conftest.py)"))


def torch_codes(dictionary, signals, n_nonzero, tol=None, gram=None):
    """The torch path's Batch-OMP in one tile: codes (P, N, K) and the count of pursuits that
    stopped on a dependent atom (an int, or a 0-d tensor where the path reads nothing back)."""
    from gpuksvd.sparse.omp import code_tiles

    codes = signals.new_zeros(*signals.shape[:2], dictionary.shape[1])
    n_dependent = code_tiles(signals, dictionary, codes, n_nonzero, [(slice(None), slice(None))], gram=gram, tol=tol,
                             kernel="torch")
    return codes, n_dependent
