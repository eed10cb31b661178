#!/usr/bin/env bash
# The decode/append benchmark of our kernels and PyTorch SDPA (bf16) on the same shapes, on any
# machine with a CUDA GPU (SDPA needs python3 with torch), and the merged table. Logs and JSON go
# to OUT (default gpu-out/).
#   usage: bench/gpu/run_bench.sh [--quick] [--types a,b,c]   (BIN: folder of bench_gpu_decode,
#          default build-cuda)
set -uo pipefail
BIN=${BIN:-build-cuda}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
QUICK=""; TYPES=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=--quick ;;
    --types) TYPES="--types $2"; shift ;;
  esac
  shift
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv \
  | tee "$OUT/gpu.txt"
timeout 400 "$BIN/bench_gpu_decode" --out "$OUT/ours.json" $QUICK $TYPES 2>&1 | tee "$OUT/bench.log"
PYTHONUNBUFFERED=1 timeout 300 python3 bench/gpu/sdpa.py "$OUT/sdpa.json" $QUICK 2>&1 | tee "$OUT/sdpa.log"
python3 bench/gpu/merge.py "$OUT/ours.json" "$OUT/sdpa.json" "$OUT/gpu-decode.json" | tee "$OUT/table.txt"
