#!/usr/bin/env bash
# Before/after decode speed: two builds of bench_gpu_decode run alternately (B = 32,
# ctx = 32768), ROUNDS times each; the table gives each type's median over the runs of each
# build's median time (compare_runs.py).
#   usage: bench/gpu/compare.sh BEFORE_BIN_DIR AFTER_BIN_DIR [ROUNDS]   (OUT: default gpu-out/)
set -uo pipefail
BEFORE=$1 AFTER=$2 ROUNDS=${3:-5}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT/compare"
export LD_LIBRARY_PATH=$AFTER${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
T=${TYPES:-turbo3,turbo2,turbo4,q4_0,q8_0,bf16}
for r in $(seq 1 "$ROUNDS"); do
  timeout 120 "$BEFORE/bench_gpu_decode" --quick --types "$T" --out "$OUT/compare/before_$r.json" \
    2> "$OUT/compare/before_$r.log"
  timeout 120 "$AFTER/bench_gpu_decode" --quick --types "$T" --no-variants \
    --out "$OUT/compare/after_$r.json" 2> "$OUT/compare/after_$r.log"
done
python3 bench/gpu/compare_runs.py "$OUT/compare" | tee "$OUT/compare.txt"
