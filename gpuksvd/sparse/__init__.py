"""The sparse-coding engine: Batch-OMP and K-SVD for every location at once.

Tensors in, tensors out: no backbone, no data, no files. One orientation everywhere — signals
``(P, N, C)``, dictionaries ``(P, K, C)`` with atoms as unit-norm rows, codes ``(P, N, K)`` with
``signals ≈ codes @ dictionary`` at each location. The same code runs on the CPU and on CUDA.

Modules: :mod:`.dictionaries` (initial atoms), :mod:`.omp` (Batch-OMP) with its
:mod:`.inverse_factor`, :mod:`.atom_updates` (one pass of K-SVD atom updates), :mod:`.ksvd`
(the learning loop), :mod:`.tiling` (memory budget, tiles of work), :mod:`.checks` (argument
checks shared with the callers that validate early).
"""
from .atom_updates import ATOM_UPDATES, update_atoms
from .checks import check_atom_update, check_enough_signals, check_n_iter
from .dictionaries import (
    INITS,
    dct2d_dictionary,
    dct_dictionary,
    haar_dictionary,
    initial_dictionary,
    random_dictionary,
)
from .inverse_factor import FACTOR_LAYOUTS
from .ksvd import KSVDResult, ksvd
from .omp import LinearDependenceWarning, batch_omp

__all__ = [
    "ATOM_UPDATES", "FACTOR_LAYOUTS", "INITS", "KSVDResult", "LinearDependenceWarning", "batch_omp",
    "check_atom_update", "check_enough_signals", "check_n_iter", "dct2d_dictionary", "dct_dictionary",
    "haar_dictionary", "initial_dictionary", "ksvd", "random_dictionary", "update_atoms",
]
