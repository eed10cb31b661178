#!/usr/bin/env bash
# The main job of `make run`: the cache types, then a `tq compare` table over a representative
# subset of cache types (f16 reference once; bpv, memory, PPL, KLD, top-1, decode tok/s) with
# its KLD-vs-bpv plot, then a short generation with a compressed cache. About 2 minutes on 2
# cores (measured: 2:00 wall, 81 s CPU, on a shared machine).
set -euo pipefail
B=${1:-build}
"$B/tq" types

echo
echo "== tq compare -c 512 --chunks 3 (data/eval.txt; plot: $B/compare-c512.png) =="
types=f16,q8_0,q4_0+h,turbo4,turbo3.5,turbo3,turbo2.5,polar,kivi2,turboquant_k3v4_nc,q8_0/turbo3
"$B/tq" compare -c 512 --chunks 3 --types "$types" --plot "$B/compare-c512.png"

# A short generation with a 3-bit cache (keys and values).
echo
echo "== tq generate -ctk turbo3 -ctv turbo3 =="
"$B/tq" generate -p "The three most useful Python data structures are" -n 48 -ctk turbo3 -ctv turbo3
