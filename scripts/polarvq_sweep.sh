#!/bin/bash
# Preset sweep of polar-vq on calibration text only (docs/polarvq-results.md, "Preset sweep"):
# fit on the first 80 % of data/calib.txt (by lines), measure KLD on the last 20 %.
# Calibration windows of 512 tokens (the served context of the -c 512 table).
# Usage: scripts/polarvq_sweep.sh TQ OUT_DIR NAME "PRESET,PRESET,..."
#   rows "NAME I PRESET [bpv_k,bpv_v,ppl,kld_mean,kld_p99,top1,seconds]" go to OUT_DIR/sweep.txt
set -u
TQ=$1; D=$2; N=$3; P=$4; mkdir -p "$D"
n=$(wc -l < data/calib.txt); k=$((n * 8 / 10))
[[ -f "$D/calib_fit.txt" ]] || head -n $k data/calib.txt > "$D/calib_fit.txt"
[[ -f "$D/calib_hold.txt" ]] || tail -n +$((k + 1)) data/calib.txt > "$D/calib_hold.txt"
row() { echo "$1 $(jq -c '[.bpv_k,.bpv_v,.ppl,.kld_mean,.kld_p99,.top1,.seconds]' "$2")"; }
ppl() { # out kldbase type [codebooks]
  local cb=""; [[ -n "${4:-}" ]] && cb="--codebooks $4"
  "$TQ" perplexity -f "$D/calib_hold.txt" -c 512 --chunks 4 --kld-base "$2" --json -q -t 1 \
    -ctk "$3" -ctv "$3" $cb > "$1"
}
"$TQ" calibrate -f "$D/calib_fit.txt" --samples 32 -c 512 --preset "$P" --vq-points 2048 -t 1 \
  --json -o "$D/${N}_{}.tqcb" > "$D/${N}_calib.json"
# one f16 reference for all sweeps (the first to get here makes it)
if mkdir "$D/f16.lock" 2>/dev/null; then
  ppl "$D/sw_f16.json" "$D/hold.kld" f16; touch "$D/f16.done"
fi
while [[ ! -f "$D/f16.done" ]]; do sleep 5; done
i=0; IFS=, read -ra PS <<< "$P"
for p in "${PS[@]}"; do
  t=polar-vq:${p%%+*}; [[ "$p" == *+* ]] && t=polar-vq:custom
  ppl "$D/${N}_$i.json" "$D/hold.kld" $t "$D/${N}_$i.tqcb"
  row "$N $i $p" "$D/${N}_$i.json" >> "$D/sweep.txt"; i=$((i + 1))
done
