#!/usr/bin/env bash
# One command for a GPU machine (the device tool's lent H100/H200, or any CUDA box): build the CUDA
# extension, run every test (GPU-marked ones included), time the GPU benchmarks, and leave logs and
# results in $OUT (default ./gpu-out). Usage: OUT=/some/dir bash tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
# --no-deps: the machine's torch and triton stay as they are.
FORCE_CUDA=${FORCE_CUDA:-1} $PY -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 \
  || { echo "BUILD FAILED"; tail -n 60 "$OUT/build.log"; exit 1; }
grep "voxrender setup" "$OUT/build.log" || true
$PY -m voxrender info | tee "$OUT/info.txt"

# Every test; on a GPU the Triton and CUDA tests run in this single pass.
$PY -m pytest -q -ra -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -n 40 || status=1

# Benchmarks: the side-by-side script (bandwidth floor included) and the pytest-benchmark suites.
date=$(date -u +%F)
$PY benchmarks/compare_projection.py --device cuda --date "$date" --machine "$(head -n 2 "$OUT/gpu.txt" | tail -n 1)" \
  --json "$OUT/cuda-$date.json" --markdown "$OUT/cuda-$date.md" 2>&1 | tail -n 40 || status=1
# Rasterization beside the torch brute force, PyTorch3D and nvdiffrast (each used if installed, else "not installed").
$PY benchmarks/compare_rasterize.py --device cuda --date "$date" --machine "$(head -n 2 "$OUT/gpu.txt" | tail -n 1)" \
  --json "$OUT/cuda-$date-rasterize.json" --markdown "$OUT/cuda-$date-rasterize.md" 2>&1 | tail -n 40 || status=1
# The voxel VAE's training images/s at 28^3 and 64^3 and the share of project_volume in each step.
$PY benchmarks/train_throughput.py --device cuda --date "$date" --machine "$(head -n 2 "$OUT/gpu.txt" | tail -n 1)" \
  --json "$OUT/cuda-$date-training.json" --markdown "$OUT/cuda-$date-training.md" 2>&1 | tail -n 20 || status=1
$PY -m pytest -q -p no:cacheprovider benchmarks --benchmark-enable -m gpu \
  --benchmark-json "$OUT/pytest-benchmark-cuda.json" >"$OUT/bench-suite.log" 2>&1 || status=1
tail -n 5 "$OUT/bench-suite.log"
echo "gpu_check: status $status; logs and results in $OUT"
exit $status
