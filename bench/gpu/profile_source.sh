#!/usr/bin/env bash
# On a GPU machine: per-SASS-instruction warp stall samples of one turbo3 decode launch
# (B=32, ctx=32768, default variant), as CSV in $OUT/source.csv.
set -uo pipefail
BIN=${BIN:-build-cuda}
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 240 $NCU --clock-control none -k regex:decode_kernel -c 1 --section SourceCounters \
  --section WarpStateStats -o /tmp/rep -f \
  "$BIN/bench_gpu_decode" --quick --types turbo3 --out /tmp/x.json > "$OUT/ncu_src.log" 2>&1
$NCU -i /tmp/rep.ncu-rep --page source --print-source sass --csv > "$OUT/source.csv" 2>"$OUT/src.err"
$NCU -i /tmp/rep.ncu-rep --page details > "$OUT/details.txt" 2>&1
wc -l "$OUT/source.csv"; head -3 "$OUT/source.csv" | cut -c1-600
