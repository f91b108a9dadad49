"""Compile the fused Triton Batch-OMP for sm_90 (H100/H200) without a GPU; report ptxas's resource use.

Usage: python benchmarks/triton_compile_check.py [scale ...] [block_n=.. num_warps=.. alpha_unroll=.. alpha_update=..]
(scales: tiny, enb6, rn18, wrn50; float32 unless "-f64" is appended, e.g. enb6-f64). Needs no device: Triton's ASTSource + GPUTarget("cuda", 90)
lowers to PTX and the bundled ptxas assembles it; registers, spills and shared memory come from
``ptxas -v`` and the kernel metadata.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gpuksvd.sparse import triton_omp  # noqa: E402

SCALES = {  # name: (K, T)
    "tiny": (24, 6),
    "enb6": (200, 50),
    "rn18": (256, 64),
    "wrn50": (1024, 256),
}


def compile_for_sm90(n_atoms: int, n_nonzero: int, dtype: torch.dtype, has_tol: bool = False, **launch):
    plan = triton_omp.plan_launch(n_atoms, n_nonzero, dtype, **launch)
    ft = "fp64" if dtype == torch.float64 else "fp32"
    signature = {
        "gram_ptr": f"*{ft}", "proj_ptr": f"*{ft}", "sqn_ptr": f"*{ft}", "tol_ptr": f"*{ft}",
        "codes_ptr": f"*{ft}", "dep_ptr": "*i32", "fac_ptr": f"*{ft}", "idx_ptr": "*i32", "z_ptr": f"*{ft}",
        "dense_ptr": f"*{ft}",
        "N": "i32", "K": "i32", "T": "i32", "FAC_STRIDE": "i32", "n_blocks": "i32", "n_tiles": "i32",
        "BLOCK_N": "constexpr", "KP": "constexpr", "GS": "constexpr", "TP": "constexpr", "ALPHA_UNROLL": "constexpr", "ALPHA_DENSE": "constexpr",
        "DOT_K": "constexpr", "DOT_PRECISION": "constexpr",
        "HAS_TOL": "constexpr", "IS_FP64": "constexpr", "EPS": "constexpr",
    }
    constexprs = {"BLOCK_N": plan.block_n, "KP": plan.kp, "GS": plan.gs, "TP": plan.tp, "ALPHA_UNROLL": plan.alpha_unroll,
                  "ALPHA_DENSE": plan.alpha_dense, "DOT_K": plan.dot_k,
                  "DOT_PRECISION": "ieee" if dtype == torch.float64 else "tf32x3",
                  "HAS_TOL": has_tol, "IS_FP64": dtype == torch.float64,
                  "EPS": torch.finfo(dtype).eps}
    # What the JIT launcher would specialise: 16-byte-aligned pointers (fresh torch allocations)
    # and integer arguments divisible by 16.
    values = {"N": 3629, "K": n_atoms, "T": n_nonzero, "FAC_STRIDE": 16}
    attrs = {(i,): [["tt.divisibility", 16]] for i, (name, ty) in enumerate(signature.items())
             if ty.startswith("*") or (name in values and values[name] % 16 == 0)}
    src = ASTSource(fn=triton_omp._batch_omp_kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    start = time.time()
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": plan.num_warps,
                                                                          "maxnreg": plan.maxnreg,
                                                                          "num_stages": plan.num_stages})
    seconds = time.time() - start
    return plan, kernel, seconds


def ptxas_report(ptx: str) -> str:
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, "-arch=sm_90a", "-v", path, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True)
    text = out.stdout + out.stderr
    lines = [l.strip() for l in text.splitlines() if re.search(r"registers|spill|smem|bytes stack", l)]
    return " | ".join(lines)


def main(argv: list[str]) -> None:
    launch = dict(arg.split("=") for arg in argv if "=" in arg)
    launch = {key: value if key == "alpha_update" else int(value) for key, value in launch.items()}
    names = [arg for arg in argv if "=" not in arg] or ["tiny", "enb6", "rn18", "wrn50"]
    for name in names:
        base, _, suffix = name.partition("-")
        dtype = torch.float64 if suffix == "f64" else torch.float32
        n_atoms, n_nonzero = SCALES[base]
        for has_tol in (False, True):
            plan, kernel, seconds = compile_for_sm90(n_atoms, n_nonzero, dtype, has_tol, **launch)
            print(f"{name} tol={has_tol}: {plan}  compiled in {seconds:.1f} s, "
                  f"metadata.shared={kernel.metadata.shared} B")
            print("   ptxas:", ptxas_report(kernel.asm["ptx"]))


if __name__ == "__main__":
    main(sys.argv[1:])
