#!/usr/bin/env bash
# The prepared GPU check, one device call (about 6-9 minutes on an H200):
#   CUDA tests against float64 CPU references, then both benchmarks, appending to RESULTS.md.
# Run from the repository root on the GPU machine, e.g. through the device tool:
#   bash benchmarks/gpu_check.sh
# Nothing to carry: the machine's image has torch, timm, torchmetrics, safetensors, scikit-learn,
# scikit-image; these steps do not import Hydra, and the benchmarks use random backbone weights.
# $OUT (the device tool's output folder) receives the logs and the updated RESULTS.md.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" GPUKSVD_CACHE="${GPUKSVD_CACHE:-/tmp/gpuksvd_cache}"
OUT="${OUT:-/tmp/gpuksvd_out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/sparse tests/detector 2>&1 | tee "$OUT/tests.log"
# CPU side: 2 locations per core, so that all 16 cores work as they do in a real fit; the CPU peers
# that the image has (scikit-learn; dictlearn and SPAMS only if installed) on one process per core.
python3 benchmarks/ksvd_speed.py --cpu-locations 32 --torch-locations 32 --repeat 2 2>&1 | tee "$OUT/ksvd_speed.log"
python3 benchmarks/pipeline_speed.py --num-workers 8 2>&1 | grep -v "it/s]" | tee "$OUT/pipeline_speed.log"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
