#!/usr/bin/env bash
# Packs the C++ build's libraries that the lent GPU machine lacks (seen 2026-12-03: no cblas.h,
# no xxhash.h; it has cmake 4.4, nvcc 13.0, g++, fmt, nlohmann-json, CLI11, and Python 3.12 with
# torch 2.11+cu130, transformers 5.17, nanobind, scikit-build-core) into build/devdeps (41 MB), a
# prefix that scripts/python_device_bench.sh uses when DEVDEPS=build/devdeps is set: OpenBLAS
# (cblas.h, openblas_config.h, libopenblas.so.0 with libgfortran/libquadmath), xxHash, fmt,
# nlohmann-json and CLI11 (headers and CMake configs), copied from this machine's Debian packages
# (scripts/setup.sh installs them). Carry build/devdeps to the GPU machine with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-build/devdeps}
A=/usr/lib/x86_64-linux-gnu
rm -rf "$D"
mkdir -p "$D/include" "$D/lib/x86_64-linux-gnu/cmake" "$D/share/cmake"
L=$D/lib/x86_64-linux-gnu
CB=$(readlink -f /usr/include/x86_64-linux-gnu/cblas.h)
cp "$CB" "$D/include/cblas.h"
cp "$(dirname "$CB")/openblas_config.h" "$D/include/"
cp /usr/include/xxhash.h "$D/include/"
cp -r /usr/include/fmt /usr/include/nlohmann /usr/include/CLI "$D/include/"
cp -r $A/cmake/fmt "$L/cmake/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$D/share/cmake/"
cp -L "$(readlink -f $A/libopenblas.so)" "$L/libopenblas.so.0"
ln -s libopenblas.so.0 "$L/libopenblas.so"
cp -L /lib/x86_64-linux-gnu/libgfortran.so.5 /lib/x86_64-linux-gnu/libquadmath.so.0 "$L/"
cp -L $A/libxxhash.so.0 "$L/"
ln -s libxxhash.so.0 "$L/libxxhash.so"
cp -P $A/libfmt.so* "$L/"
du -sh "$D"
