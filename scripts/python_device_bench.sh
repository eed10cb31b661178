#!/usr/bin/env bash
# Issue 15's device part, on a GPU machine: builds the Python package with the CUDA kernels
# (TQ_CUDA=ON), runs its CUDA tests (tests/python/test_hf_cuda.py: turboquant.hf.Cache on CUDA
# tensors vs DynamicCache) and the decode-throughput benchmark of generate() with our cache vs
# DynamicCache + SDPA on a random llama3-8b-shaped model, bf16, B = 16, 32k context
# (bench/python/hf_decode_bench.py). Results: $OUT/python_decode_b16_32k.json.
#
# The machine needs: nvcc (CUDA 12.4+), cmake >= 3.22, ninja, g++ >= 12, the -dev packages that
# scripts/setup.sh installs (OpenBLAS cblas.h, fmt, nlohmann-json, CLI11, xxHash, OpenMP), and a
# Python with torch (CUDA build), transformers >= 5, numpy, pytest, nanobind, scikit-build-core.
# Nothing is downloaded (pip runs with --no-build-isolation --no-deps). Memory at B=16, 32k:
# weights 16 GB + DynamicCache 64 GiB + our turbo3 cache 13 GiB: an 80 GB GPU is too small,
# an H100/H200 with 94+ GB is enough.
#
# A machine without those -dev packages (the lent H200 has no cblas.h or xxhash.h): run
# scripts/pack_device_deps.sh on a machine set up by scripts/setup.sh, carry build/devdeps along
# and set DEVDEPS=build/devdeps (the prefix goes to CMake and LD_LIBRARY_PATH).
#
#   scripts/python_device_bench.sh              # the full run (prefill ~1-2 min, then decode)
#   SMOKE=1 scripts/python_device_bench.sh      # 2 layers, B=2, 2k context: checks the plumbing
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
"$PY" -c "import torch, transformers, nanobind, scikit_build_core, pytest
assert torch.cuda.is_available(), 'torch sees no CUDA device'"
DEPS=()
if [[ -n ${DEVDEPS:-} ]]; then
  DD=$(cd "$DEVDEPS" && pwd)
  L=$DD/lib/x86_64-linux-gnu
  export LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  DEPS=("-Ccmake.define.CMAKE_PREFIX_PATH=$DD" "-Ccmake.define.CMAKE_LIBRARY_PATH=$L"
        "-Ccmake.define.CMAKE_INCLUDE_PATH=$DD/include"
        "-Ccmake.define.CMAKE_CXX_FLAGS=-I$DD/include")
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
echo "== build (TQ_CUDA=ON)" >&2
"$PY" -m pip install -q --no-build-isolation --no-deps --disable-pip-version-check \
  -Cbuild-dir=build/py-cuda -Ccmake.define.TQ_CUDA=ON \
  -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=native "${DEPS[@]}" .
"$PY" -c "import turboquant as tq; assert tq._core.HAS_CUDA and tq._core.cuda_available()"
echo "== CUDA tests" >&2
"$PY" -m pytest -q tests/python/test_hf_cuda.py tests/python/test_hf.py
echo "== decode throughput" >&2
if [[ ${SMOKE:-0} == 1 ]]; then
  "$PY" bench/python/hf_decode_bench.py --layers 2 --batch 2 --ctx 2048 --new 8 --repeats 1 \
    --types turbo3 --json "$OUT/python_decode_smoke.json"
else
  "$PY" bench/python/hf_decode_bench.py --batch 16 --ctx 32768 --new 32 --repeats 3 \
    --types turbo3,turbo4 --json "$OUT/python_decode_b16_32k.json"
fi
