#!/usr/bin/env bash
# Builds the CUDA test and benchmark here and stages them (with libgomp) in .devbin/ for the
# device run: run(command="bench/gpu/run_device.sh", carry=[".devbin"]).
set -euo pipefail
cmake -S . -B build-cuda -G Ninja -DTQ_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-cuda -j2 --target test_cuda_attention bench_gpu_decode
mkdir -p .devbin
cp build-cuda/test_cuda_attention build-cuda/bench_gpu_decode .devbin/
cp "$(ldconfig -p | awk '/libgomp.so.1 /{print $NF; exit}')" .devbin/
grep -qx '/.devbin/' .git/info/exclude || echo '/.devbin/' >> .git/info/exclude
ls -la .devbin
