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

# The Markdown table.
python3 - "$OUT" <<'PY'
import json, glob, os, sys
out = sys.argv[1]
for ctx in sorted({int(os.path.basename(p).split('_')[0][1:]) for p in glob.glob(out + '/c*_*.json')}):
    ref = json.load(open(f'{out}/c{ctx}_ref.json'))
    print(f"\n### -c {ctx}, {ref['chunks']} chunks ({ref['tokens']} scored tokens)\n")
    print('| K = V | bpv K | bpv V | PPL | ΔPPL % | KLD mean | KLD p99 | top-1 % | KV bytes (one chunk) | vs f16 |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    types = os.environ.get('TYPES', 'f16 turbo2 turbo2.5 turbo3 turbo3.5 turbo4 turbo3p polar').split()
    for t in types:
        p = f'{out}/c{ctx}_{t}.json'
        if not os.path.exists(p):
            continue
        r = json.load(open(p))
        d = 100 * (r['ppl'] - ref['ppl']) / ref['ppl']
        print(f"| {t} | {r['bpv_k']:.3f} | {r['bpv_v']:.3f} | {r['ppl']:.4f} | {d:+.2f} | "
              f"{r['kld_mean']:.5f} | {r['kld_p99']:.4f} | {100 * r['top1']:.2f} | "
              f"{r['kv_bytes']:,} | {ref['kv_bytes'] / r['kv_bytes']:.2f}x |")
PY
