#!/usr/bin/env bash
# Issue 13, criterion 3: passkey retrieval on Qwen2.5-Coder-1.5B at long context, 5 depths, the
# f16 cache, the 3.25-bpv plan and turbo2 / kivi2 / q4_0+h beside it — as resumable runs.
#
#   scripts/needle_campaign.sh LENGTH [LOG]      e.g. scripts/needle_campaign.sh 16384
#
# A 16k-token prompt costs ~12 min of one core and a 32k one ~40 min, so a length takes hours:
# every finished prompt is appended to LOG (default docs/needle-logs/qwen-LENGTH.jsonl, one JSON
# line each, `tq needle --log`) and a later call with the same LOG skips what it holds. Commit
# the log now and then; when a call finishes, its table is the result (also written as CSV and
# JSON next to the log). THREADS (default 1) and TRIALS (default 1) from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:?usage: scripts/needle_campaign.sh LENGTH [LOG]}
LOG=${2:-docs/needle-logs/qwen-$L.jsonl}
MODEL=models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf
[ -f "$MODEL" ] || { echo "needle_campaign: $MODEL missing: scripts/fetch_model.sh qwen2.5-coder-1.5b" >&2; exit 1; }
mkdir -p "$(dirname "$LOG")"
base=${LOG%.jsonl}
build/tq needle -m "$MODEL" -f data/eval.txt --lengths "$L" --depths 0,0.25,0.5,0.75,1 \
  --trials "${TRIALS:-1}" -t "${THREADS:-1}" \
  --types plan:docs/plan/qwen-plan325.json,turbo2,kivi2,q4_0+h \
  --log "$LOG" --csv "$base.csv" --json > "$base.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [print(r['label'], [c['accuracy'] for c in r['by_length']]) for r in d['rows']]" "$base.json" 2>/dev/null || true
