#!/usr/bin/env bash
# The prepared GPU check: one device call of at most 10 minutes on an H200. Each step has its own
# time limit (535 s in all, 560 s with the kill grace) so that a hang costs one step, not the call,
# and RESULTS.md is copied to $OUT after every step, so a late failure loses no table. Run from the repository root:
#   bash benchmarks/gpu_check.sh
# The device machine has torch (with Triton), timm, torchmetrics, safetensors, scikit-learn; these
# steps import no Hydra (the benchmarks use random backbone weights). $OUT (the device tool's output
# folder) receives every log and the updated RESULTS.md. Steps, most decisive first:
#   1. the compiled fused Triton OMP against the torch path (tests/sparse/test_triton_omp_cuda.py);
#   2. benchmarks/cuda_paths.py: torch vs Triton OMP at EN-B6 / RN18 / WRN50 (prints the faster),
#      one sync-free iteration eager vs captured as a CUDA graph, peak memory;
#   3. the CUDA tests of the engine and the detector against float64 CPU references;
#   4. benchmarks/ksvd_speed.py at EN-B6 and RN18 on CUDA and the CPU (32 locations, 2 per core;
#      WRN50 is timed on the GPU by cuda_paths.py);
#   5. benchmarks/pipeline_speed.py (feature extraction + fit + scoring).
# A step that fails is reported at the end; the script goes on to the next.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" GPUKSVD_CACHE="${GPUKSVD_CACHE:-/tmp/gpuksvd_cache}"
OUT="${OUT:-/tmp/gpuksvd_out}"
mkdir -p "$OUT"
failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
    tail -n 25 "$OUT/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ $rc -eq 0 ] || failed+=("$name(exit $rc)")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
step triton_compiled 90 env GPUKSVD_TRITON_COMPILED=1 python3 -m pytest -q -p no:cacheprovider tests/sparse/test_triton_omp_cuda.py
step cuda_paths 170 python3 benchmarks/cuda_paths.py --repeat 3
step cuda_tests 120 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/sparse tests/detector
step ksvd_speed 110 python3 benchmarks/ksvd_speed.py --scales en_b6 rn18_l3 --cpu-locations 32 --torch-locations 32 --repeat 2 --peer-scales
step pipeline_speed 45 python3 benchmarks/pipeline_speed.py --num-workers 8
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
