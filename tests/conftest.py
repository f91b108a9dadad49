"""Session-wide test setup.

Triton's interpreter runs the fused Triton kernels on the CPU (``tests/sparse/test_triton_omp.py``).
It must be chosen before triton is first imported, because Triton decorates its own library
functions then, so it is set here, before any test module imports torch. The compiled kernels
are tested on a GPU in a separate process with ``GPUKSVD_TRITON_COMPILED=1``
(``benchmarks/gpu_check.sh``).
"""
import os

if os.environ.get("GPUKSVD_TRITON_COMPILED") != "1":
    os.environ["TRITON_INTERPRET"] = "1"
