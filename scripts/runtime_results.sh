#!/usr/bin/env bash
# Measures the table of docs/runtime-results.md: for each context, an f16-cache reference run
# writes the KLD base, then every cache type (K = V) is compared against it.
# Usage: scripts/runtime_results.sh [build] [outdir]  → outdir/c<CTX>_<type>.json
set -euo pipefail
B=${1:-build}
OUT=${2:-/tmp/tq-results}
mkdir -p "$OUT"
TYPES=${TYPES:-"f16 turbo2 turbo2.5 turbo3 turbo3.5 turbo4 turbo3p polar"}
CTXS=${CTXS:-512:20 2048:5}
for spec in $CTXS; do
  ctx=${spec%%:*}; chunks=${spec##*:}
  base="$OUT/base_c$ctx.kld"
  rm -f "$base"
  "$B/tq" perplexity -c "$ctx" --chunks "$chunks" --kld-base "$base" --json -q ${THREADS:+-t $THREADS} \
    > "$OUT/c${ctx}_ref.json"
  for t in $TYPES; do
    echo "c=$ctx $t" >&2
    "$B/tq" perplexity -c "$ctx" --chunks "$chunks" -ctk "$t" -ctv "$t" --kld-base "$base" \
      --json -q ${THREADS:+-t $THREADS} > "$OUT/c${ctx}_$t.json"
  done
  rm -f "$base"
done
