#!/usr/bin/env bash
# Runs the CUDA tests (GPU append/decode against the CPU codecs, the cross-backend test) and,
# with --sanitize, the same binaries under compute-sanitizer memcheck and racecheck. Logs go to
# OUT (default gpu-out/).
#   usage: bench/gpu/run_tests.sh [--sanitize]     (BIN: folder of the binaries, default build-cuda)
set -uo pipefail
BIN=${BIN:-build-cuda}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
rc=0
for t in test_cuda_attention test_backend_ops_cuda; do
  timeout 600 "$BIN/$t" > "$OUT/$t.log" 2>&1 || rc=1
  grep -E "max normalised|rel.err|OK \]|FAILED|PASSED|SKIPPED|Failure" "$OUT/$t.log" | tail -40
done
if [ "${1:-}" = --sanitize ]; then
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  for tool in memcheck racecheck; do
    for t in test_cuda_attention test_backend_ops_cuda; do
      timeout 900 "$SAN" --tool "$tool" --error-exitcode 3 "$BIN/$t" > "$OUT/$t.$tool.log" 2>&1 || rc=1
      echo "$t $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$t.$tool.log" | tail -1)"
    done
  done
fi
exit $rc
