#!/usr/bin/env bash
# Builds the CUDA kernels, their tests and the decode benchmark on a machine with nvcc (CUDA 12.8+;
# sm_90a machine code, compute_80 PTX). Needs the packages of scripts/setup.sh.
#   usage: bench/gpu/build.sh [BUILD_DIR]      (default build-cuda)
set -euo pipefail
BUILD=${1:-build-cuda}
cmake -S . -B "$BUILD" -G Ninja -DTQ_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target test_cuda_attention test_backend_ops_cuda \
  bench_gpu_decode
ls -la "$BUILD"/test_cuda_attention "$BUILD"/test_backend_ops_cuda "$BUILD"/bench_gpu_decode
