"""The sparse-coding engine: Batch-OMP and K-SVD for every location at once.

Tensors in, tensors out: no backbone, no data, no files. One orientation everywhere — signals
``(P, N, C)``, dictionaries ``(P, K, C)`` with atoms as unit-norm rows, codes ``(P, N, K)`` with
``signals ≈ codes @ dictionary`` at each location. The same code runs on the CPU and on CUDA.

Modules: :mod:`.dictionaries` (initial atoms), :mod:`.omp` (Batch-OMP) with its
:mod:`.inverse_factor`, :mod:`.atom_updates` (one pass of K-SVD atom updates) with the exact
update's :mod:`.leading_pair`, :mod:`.ksvd` (the learning loop), :mod:`.native` (the C kernels of
``kernels.c`` for the CPU, compiled on first use) and :mod:`.dispatch` (which kernel runs),
:mod:`.tiling` (memory budget, tiles of work), :mod:`.checks` (argument checks shared with the
callers that validate early).
"""
from .atom_updates import ATOM_UPDATES, update_atoms
from .checks import (DEAD_ATOMS, KERNELS, check_atom_update, check_dead_atoms, check_enough_signals, check_kernel,
                     check_n_iter)
from .dictionaries import (
    INITS,
    dct2d_dictionary,
    dct_dictionary,
    haar2d_dictionary,
    haar_dictionary,
    initial_dictionary,
    random_dictionary,
)
from .dispatch import resolve_kernel
from .inverse_factor import FACTOR_LAYOUTS
from .ksvd import KSVDResult, ksvd
from .native import NativeKernelUnavailable, NativeKernelWarning
from .omp import LinearDependenceWarning, batch_omp

__all__ = [
    "ATOM_UPDATES", "DEAD_ATOMS", "FACTOR_LAYOUTS", "INITS", "KERNELS", "KSVDResult", "LinearDependenceWarning",
    "NativeKernelUnavailable", "NativeKernelWarning", "batch_omp", "check_atom_update", "check_dead_atoms",
    "check_enough_signals", "check_kernel", "check_n_iter", "dct2d_dictionary", "dct_dictionary",
    "haar2d_dictionary", "haar_dictionary", "initial_dictionary", "ksvd", "random_dictionary", "resolve_kernel",
    "update_atoms",
]
