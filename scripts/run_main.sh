#!/usr/bin/env bash
# The main job of `make run` (grows with the project).
set -euo pipefail
B=${1:-build}
"$B/tq" types
"$B/tq" distortion --dim 128 --n 20000

# A short generation with a 3-bit cache (keys and values).
echo
echo "== tq generate -ctk turbo3 -ctv turbo3 =="
"$B/tq" generate -p "The three most useful Python data structures are" -n 48 -ctk turbo3 -ctv turbo3

# Perplexity / KLD / top-1 of f16 vs turbo3 vs turbo4 at -c 512 (f16 writes the KLD base).
echo
echo "== tq perplexity -c 512 --chunks 4: f16 (reference) vs turbo3 vs turbo4 =="
base=$(mktemp -u /tmp/tq-kld-base.XXXXXX)
trap 'rm -f "$base" "$base.part"' EXIT
hdr=""
for t in f16 turbo3 turbo4; do
  "$B/tq" perplexity -c 512 --chunks 4 -ctk $t -ctv $t --kld-base "$base" -q $hdr
  hdr=--no-header
done
