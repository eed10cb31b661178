#!/bin/bash
# The FIRST runs behind docs/polarvq-results.md ("Earlier measurements": old presets, 128-token
# windows); the current sweep and tables: scripts/polarvq_sweep.sh, scripts/polarvq_final.sh.
# Originally: the preset sweep on a split of data/calib.txt, the
# main table on data/eval.txt, calibration domain (prose vs code) and sample count.
# Usage: scripts/polarvq_results.sh BUILD_DIR OUT_DIR   (rows are appended to OUT_DIR/*.txt)
set -u
B=${1:-build}; D=${2:-/tmp/tq-polarvq}; TQ=$PWD/$B/tq; mkdir -p "$D"
row() { echo "$1 $(jq -c '[.bpv_k,.bpv_v,.ppl,.kld_mean,.kld_p99,.top1,.seconds]' "$2")"; }
ppl() { # out text ctx chunks kldbase type [codebooks]
  local cb=""; [[ -n "${7:-}" ]] && cb="--codebooks $7"
  "$TQ" perplexity -f "$2" -c "$3" --chunks "$4" --kld-base "$5" --json -q -t 2 \
    -ctk "$6" -ctv "$6" $cb > "$1"
}

# 1. Sweep: fit on the first 80 % of data/calib.txt (by lines), measure on the last 20 %.
n=$(wc -l < data/calib.txt); k=$((n * 8 / 10))
head -n $k data/calib.txt > "$D/calib_fit.txt"
tail -n +$((k + 1)) data/calib.txt > "$D/calib_hold.txt"
P="quality,quality+key_block_tokens=64,balanced,balanced+mag_bits=3+vq_dim=32"
P+=",balanced+key_block_tokens=64,balanced+angle_bits=1+value_bits=3+vq_values=0"
P+=",max,max+key_block_tokens=64,gqa,gqa+mag_bits=5+value_bits=4"
"$TQ" calibrate -f "$D/calib_fit.txt" --samples 128 -c 128 --preset "$P" --vq-points 2048 -t 2 \
  --json -o "$D/sw_{}.tqcb" > "$D/sweep_calib.json"
ppl "$D/sw_f16.json" "$D/calib_hold.txt" 512 4 "$D/hold.kld" f16
i=0; IFS=, read -ra PS <<< "$P"
for p in "${PS[@]}"; do
  t=polar-vq:${p%%+*}; [[ "$p" == *+* ]] && t=polar-vq:custom
  ppl "$D/sw_$i.json" "$D/calib_hold.txt" 512 4 "$D/hold.kld" $t "$D/sw_$i.tqcb"
  row "$i $p" "$D/sw_$i.json" >> "$D/sweep.txt"; i=$((i + 1))
done

# 2. Main table: calibrate on data/calib.txt, evaluate on data/eval.txt at -c 512 and 2048.
"$TQ" calibrate -f data/calib.txt --samples 128 -c 128 --preset quality,balanced,max,gqa,stage1 \
  --vq-points 2048 -t 2 --json -o "$D/main_{}.tqcb" > "$D/main_calib.json"
for cc in 512:4 2048:1; do
  c=${cc%:*}; ch=${cc#*:}
  ppl "$D/m${c}_f16.json" data/eval.txt $c $ch "$D/eval$c.kld" f16
  for t in turbo2.5 turbo3 turbo3.5 turbo4 q4_0+h; do
    ppl "$D/m${c}_$t.json" data/eval.txt $c $ch "$D/eval$c.kld" $t
    row "$c $t" "$D/m${c}_$t.json" >> "$D/main.txt"
  done
  i=0
  for p in quality balanced max gqa stage1; do
    ppl "$D/m${c}_$p.json" data/eval.txt $c $ch "$D/eval$c.kld" polar-vq:$p "$D/main_$i.tqcb"
    row "$c $p" "$D/m${c}_$p.json" >> "$D/main.txt"; i=$((i + 1))
  done
done

# 3. Calibration domain: prose (data/calib.txt) vs code (/usr/lib/python3.11/[abc]*.py, sorted);
#    evaluated on prose (data/eval.txt) and code (/usr/lib/python3.11/t*.py, sorted).
cat $(ls /usr/lib/python3.11/[abc]*.py | LC_ALL=C sort) > "$D/code_calib.txt"
cat $(ls /usr/lib/python3.11/t*.py | LC_ALL=C sort) > "$D/code_eval.txt"
"$TQ" calibrate -f "$D/code_calib.txt" --samples 128 -c 128 --preset balanced --vq-points 2048 \
  -t 2 --json -o "$D/code_bal.tqcb" > "$D/code_calib.json"
BAL=polar-vq:balanced
ppl "$D/x_prose_by_code.json" data/eval.txt 512 4 "$D/eval512.kld" $BAL "$D/code_bal.tqcb"
ppl "$D/x_code_f16.json" "$D/code_eval.txt" 512 4 "$D/code512.kld" f16
ppl "$D/x_code_by_prose.json" "$D/code_eval.txt" 512 4 "$D/code512.kld" $BAL "$D/main_1.tqcb"
ppl "$D/x_code_by_code.json" "$D/code_eval.txt" 512 4 "$D/code512.kld" $BAL "$D/code_bal.tqcb"
for x in prose_by_code code_by_prose code_by_code; do row $x "$D/x_$x.json" >> "$D/extra.txt"; done

# 4. Sample count (windows of 128 tokens; 128 is the main file).
for s in 16 512; do
  "$TQ" calibrate --samples $s -c 128 --preset balanced --vq-points 2048 -t 2 --json \
    -o "$D/n$s.tqcb" > "$D/n$s.json"
  ppl "$D/x_n$s.json" data/eval.txt 512 4 "$D/eval512.kld" polar-vq:balanced "$D/n$s.tqcb"
  row n$s "$D/x_n$s.json" >> "$D/extra.txt"
done
