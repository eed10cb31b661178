#!/usr/bin/env bash
# Runs on the lent GPU machine, from the repository root: the CUDA tests, our decode/append
# benchmark and PyTorch SDPA on the same shapes, in one call. The test and benchmark binaries
# are built on the development machine (they need GoogleTest etc., absent there) and carried
# in .devbin/ (scripts: bench/gpu/stage.sh). Logs and JSON go to $OUT.
#   usage: bench/gpu/run_device.sh [--quick] [--types a,b,c] [--no-tests]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$PWD/.devbin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
QUICK=""; TYPES=""; TESTS=1
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=--quick ;;
    --types) TYPES="--types $2"; shift ;;
    --no-tests) TESTS=0 ;;
  esac
  shift
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv \
  | tee "$OUT/gpu.txt"
if [ $TESTS = 1 ]; then
  timeout 300 .devbin/test_cuda_attention 2>&1 | tee "$OUT/tests.log" | grep -E "rel.err|OK|FAILED|PASSED|SKIPPED|Failure|error" | tail -60
fi
timeout 400 .devbin/bench_gpu_decode --out "$OUT/ours.json" $QUICK $TYPES 2>&1 | tee "$OUT/bench.log"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/gpu/sdpa.py "$OUT/sdpa.json" $QUICK 2>&1 | tee "$OUT/sdpa.log"
python3 bench/gpu/merge.py "$OUT/ours.json" "$OUT/sdpa.json" "$OUT/gpu-decode.json" | tee "$OUT/table.txt"
