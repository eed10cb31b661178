#!/usr/bin/env bash
# End-to-end generation speed, f16 cache vs compressed caches (issue 6): a ~2k- and a ~8k-token
# prompt (the first 8380 / 32800 characters of data/eval.txt), 64 greedy tokens, 1 thread,
# types interleaved, REPS repeats; prints the median decode tok/s (wall clock and per CPU second
# of the process: on a shared machine the CPU-time figure is the less disturbed one) and the
# ratios to f16.
# Usage: scripts/e2e_decode_speed.sh [build] [types...]
set -euo pipefail
B=${1:-build}
shift || true
TYPES=${*:-f16 turbo3}
cd "$(dirname "$0")/.."
REPS=${REPS:-2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 8380 data/eval.txt > "$tmp/p2k.txt"
head -c 32800 data/eval.txt > "$tmp/p8k.txt"
for p in p2k p8k; do
  for r in $(seq "$REPS"); do
    for t in $TYPES; do
      "$B/tq" generate -f "$tmp/$p.txt" -n 64 --temp 0 -ctk "$t" -ctv "$t" -t 1 --json \
        2>/dev/null > "$tmp/$p.$t.$r.json"
    done
  done
done
python3 - "$tmp" "$REPS" $TYPES <<'PY'
import json, statistics, sys
tmp, reps, types = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print('| prompt tokens | cache | prefill tok/s | decode tok/s | vs f16 | decode tok/CPU-s | vs f16 |')
print('|---:|---|---:|---:|---:|---:|---:|')
for p in ('p2k', 'p8k'):
    base = cbase = None
    for t in types:
        rs = [json.load(open(f'{tmp}/{p}.{t}.{r}.json')) for r in range(1, reps + 1)]
        pf = statistics.median(r['prefill_tps'] for r in rs)
        dc = statistics.median(r['decode_tps'] for r in rs)
        cc = statistics.median(r['decode_cpu_tps'] for r in rs)
        if t == 'f16': base, cbase = dc, cc
        ratio = f'{dc / base:.2f}x' if base else '-'
        cratio = f'{cc / cbase:.2f}x' if cbase else '-'
        print(f"| {rs[0]['prompt_tokens']} | {t} | {pf:.1f} | {dc:.1f} | {ratio} | {cc:.1f} | {cratio} |")
PY
