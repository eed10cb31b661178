#!/usr/bin/env bash
# Builds tq (with the GPU runtime) and the GPU tests here and stages them, with the shared
# libraries the device machine lacks, in .gpurt/ of the checkout the device tool sends
# (default: this one; GPURT_DEST=/path overrides). Then, on the device:
#   run(command=".gpurt/serve_device.sh", carry=[".gpurt"])
set -euo pipefail
DEST=${GPURT_DEST:-$PWD}
cmake -S . -B build-cuda -G Ninja -DTQ_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
nice cmake --build build-cuda -j2 --target tq_cli test_gpu_runtime
STAGE=$(mktemp -d)
cp build-cuda/tq build-cuda/test_gpu_runtime "$STAGE/"
# the shared libraries of the host build that the device image may not have (not CUDA's:
# the device has the toolkit; serve_device.sh finds libcublas there)
for lib in $(ldd build-cuda/tq build-cuda/test_gpu_runtime | awk '/=> \//{print $3}' | sort -u); do
  case $(basename "$lib") in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcublas*|libcudart*) ;;
    *) cp -L "$lib" "$STAGE/" ;;
  esac
done
mkdir -p "$DEST/.gpurt"
rm -f "$DEST/.gpurt/"*
# compressed: the binaries and OpenBLAS are ~65 MB, over what one device call carries
tar -C "$STAGE" -cf - . | xz -T2 -6 > "$DEST/.gpurt/bundle.tar.xz"
rm -rf "$STAGE"
cp bench/gpu/pytorch_anchor.py bench/gpu/serve_device.sh "$DEST/.gpurt/"
grep -qx '/.gpurt/' "$DEST/.git/info/exclude" 2>/dev/null || echo '/.gpurt/' >> "$DEST/.git/info/exclude"
du -sh "$DEST/.gpurt"; ls -la "$DEST/.gpurt"
