#!/bin/bash
# The final polar-vq runs of docs/polarvq-results.md (after the preset sweep,
# scripts/polarvq_sweep.sh): codebooks on data/calib.txt with windows as long as the served
# context, then `tq compare` next to the scalar baselines, and the sample-count runs.
# Usage: scripts/polarvq_final.sh BUILD_DIR OUT_DIR STEP   (STEP: cal512 | cal2048 | cmp512 |
#        cmp2048 | samples | domain); -t 1 everywhere (shared 2-core machine).
set -u
B=${1:-build}; D=${2:-/tmp/tq-polarvq-final}; S=${3:-}; TQ=${TQ:-$PWD/$B/tq}; mkdir -p "$D"
PRESETS=quality,balanced,max,gqa,stage1
books() { echo "$D/c$1_0.tqcb,$D/c$1_1.tqcb,$D/c$1_2.tqcb,$D/c$1_3.tqcb,$D/c$1_4.tqcb"; }
T=f16,turbo2.5,turbo3,turbo3.5,turbo4,q4_0+h
T+=,polar-vq:quality,polar-vq:balanced,polar-vq:max,polar-vq:gqa,polar-vq:stage1
case "$S" in
  cal512)  # files c512_0..4 (order of PRESETS)
    "$TQ" calibrate -f data/calib.txt --samples ${SAMPLES512:-64} -c 512 --preset $PRESETS \
      --vq-points 2048 -t 1 --json -o "$D/c512_{}.tqcb" > "$D/c512_calib.json" ;;
  cal2048)
    "$TQ" calibrate -f data/calib.txt --samples ${SAMPLES2048:-16} -c 2048 --preset $PRESETS \
      --vq-points 2048 -t 1 --json -o "$D/c2048_{}.tqcb" > "$D/c2048_calib.json" ;;
  cmp512)
    "$TQ" compare -c 512 --chunks 2 -t 1 -q --types "$T" --codebooks "$(books 512)" \
      --csv docs/polarvq-c512.csv --plot docs/polarvq-c512.png > "$D/cmp512.txt" ;;
  cmp2048)
    "$TQ" compare -c 2048 --chunks 1 -t 1 -q --types "$T" --codebooks "$(books 2048)" \
      --csv docs/polarvq-c2048.csv --plot docs/polarvq-c2048.png > "$D/cmp2048.txt" ;;
  samples)  # balanced, windows of 128 tokens, 16 / 128 / 512 samples; -c 512 --chunks 4
    for s in 16 128 512; do
      "$TQ" calibrate --samples $s -c 128 --preset balanced --vq-points 2048 -t 1 --json \
        -o "$D/n$s.tqcb" > "$D/n$s.json"
    done
    "$TQ" perplexity -c 512 --chunks 4 --kld-base "$D/eval512.kld" --json -q -t 1 > "$D/n_f16.json"
    for s in 16 128 512; do
      "$TQ" perplexity -c 512 --chunks 4 --kld-base "$D/eval512.kld" --json -q -t 1 \
        -ctk polar-vq:balanced -ctv polar-vq:balanced --codebooks "$D/n$s.tqcb" > "$D/x_n$s.json"
    done ;;
  domain)  # balanced calibrated on code vs prose (-c 512 windows), evaluated on prose and code
    cat $(ls /usr/lib/python3.11/[abc]*.py | LC_ALL=C sort) > "$D/code_calib.txt"
    cat $(ls /usr/lib/python3.11/t*.py | LC_ALL=C sort) > "$D/code_eval.txt"
    "$TQ" calibrate -f "$D/code_calib.txt" --samples 64 -c 512 --preset balanced --vq-points 2048 \
      -t 1 --json -o "$D/code_bal.tqcb" > "$D/code_calib.json"
    ppl() { "$TQ" perplexity -f "$2" -c 512 --chunks 4 --kld-base "$3" --json -q -t 1 "${@:4}" > "$D/$1.json"; }
    BAL="-ctk polar-vq:balanced -ctv polar-vq:balanced --codebooks"
    ppl d_prose_f16 data/eval.txt "$D/eval512d.kld"
    ppl d_prose_by_prose data/eval.txt "$D/eval512d.kld" $BAL "$D/c512_1.tqcb"
    ppl d_prose_by_code data/eval.txt "$D/eval512d.kld" $BAL "$D/code_bal.tqcb"
    ppl d_code_f16 "$D/code_eval.txt" "$D/code512.kld"
    ppl d_code_by_prose "$D/code_eval.txt" "$D/code512.kld" $BAL "$D/c512_1.tqcb"
    ppl d_code_by_code "$D/code_eval.txt" "$D/code512.kld" $BAL "$D/code_bal.tqcb" ;;
  *) echo "usage: $0 BUILD_DIR OUT_DIR cal512|cal2048|cmp512|cmp2048|samples|domain" >&2; exit 2 ;;
esac
