#!/usr/bin/env bash
# Runs on the lent GPU machine (staged by bench/gpu/serve_stage.sh into .gpurt/): the GPU
# runtime tests, `tq bench serve` for the llama3-8b shape at 32k context and the PyTorch anchor
# in one call. Logs and JSON go to $OUT.
#   usage: .gpurt/serve_device.sh [--no-tests] [--no-pytorch] [--types LIST] [--steps N]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
S=$PWD/.gpurt  # scripts and the bundle
G=/tmp/gpurt   # binaries and libraries, unpacked
mkdir -p $G && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
  $S/bundle.tar.xz $G || { echo "cannot unpack the bundle"; exit 1; }
TESTS=1; PYT=1; TYPES=bf16,q8_0,q4_0,turbo2,turbo3,turbo4; STEPS=20; BATCH=1,8,16,max
while [ $# -gt 0 ]; do
  case $1 in
    --no-tests) TESTS=0 ;;
    --no-pytorch) PYT=0 ;;
    --types) TYPES=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --batch) BATCH=$2; shift ;;
  esac
  shift
done
# cuBLAS: the toolkit's, else the one PyTorch's wheels carry
CUBLAS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | while read d; do
  [ -e "$d/libcublas.so.13" ] && echo "$d"; done | head -1)
if [ -z "$CUBLAS" ]; then
  CUBLAS=$(dirname "$(find /usr /opt -name 'libcublas.so.13*' 2>/dev/null | head -1)")
fi
export LD_LIBRARY_PATH=$G:$CUBLAS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "cublas from: $CUBLAS"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu,memory.used \
  --format=csv | tee "$OUT/gpu.txt"
ldd $G/tq | grep -E "not found|cublas" || true
if [ $TESTS = 1 ]; then
  timeout 150 $G/test_gpu_runtime 2>&1 | tee "$OUT/tests.log" | grep -vE "^\[ RUN|^\[       OK" | tail -40
fi
timeout 240 $G/tq bench serve --device cuda --synthetic llama3-8b --ctx 32768 --batch "$BATCH" \
  --types "$TYPES" --steps "$STEPS" --eager-too --out "$OUT/gpu-serve.json" 2>&1 | tee "$OUT/serve.log"
if [ $PYT = 1 ]; then
  PYTHONUNBUFFERED=1 timeout 170 python3 $S/pytorch_anchor.py "$OUT/pytorch.json" \
    --ctx 32768 --batch 1,8,16 --steps "$STEPS" 2>&1 | grep -v Warning | tee "$OUT/pytorch.log"
  # the anchor's rows into the benchmark's JSON (schema: "pytorch": [{"B", "ctx", "tok_s"}])
  [ -s "$OUT/pytorch.json" ] && [ -s "$OUT/gpu-serve.json" ] && python3 -c "
import json, sys
a = json.load(open(sys.argv[1])); a['pytorch'] = json.load(open(sys.argv[2]))['pytorch']
json.dump(a, open(sys.argv[1], 'w'), indent=1)" "$OUT/gpu-serve.json" "$OUT/pytorch.json"
fi
