#!/usr/bin/env bash
# Prefill and decode speed with an f16 cache (docs/runtime-results.md): a ~512-token and a
# ~2048-token prompt (the first 2000 / 8380 characters of data/eval.txt), then 64 greedy tokens,
# with 1 and 2 threads, REPS repeats each (the median is reported).
# Usage: scripts/runtime_speed.sh [build]
set -euo pipefail
B=${1:-build}
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
TYPE=${TYPE:-f16}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 2000 data/eval.txt > "$tmp/p512.txt"
head -c 8380 data/eval.txt > "$tmp/p2048.txt"
for p in p512 p2048; do
  for t in 1 2; do
    for r in $(seq "$REPS"); do
      "$B/tq" generate -f "$tmp/$p.txt" -n 64 --temp 0 -ctk "$TYPE" -ctv "$TYPE" -t "$t" --json \
        2>/dev/null > "$tmp/$p.t$t.r$r.json"
    done
  done
done
python3 - "$tmp" "$REPS" "$TYPE" <<'PY'
import json, statistics, sys
tmp, reps, ty = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print(f'| cache | prompt tokens | threads | prefill tok/s | decode tok/s (64 tokens) |')
print('|---|---:|---:|---:|---:|')
for p in ('p512', 'p2048'):
    for t in (1, 2):
        rs = [json.load(open(f'{tmp}/{p}.t{t}.r{r}.json')) for r in range(1, reps + 1)]
        pf = statistics.median(r['prefill_tps'] for r in rs)
        dc = statistics.median(r['decode_tps'] for r in rs)
        print(f"| {ty} | {rs[0]['prompt_tokens']} | {t} | {pf:.1f} | {dc:.1f} |")
PY
