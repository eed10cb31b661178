#!/usr/bin/env bash
# On the device: SASS instruction histogram of the turbo3 decode kernel and an ncu profile of
# one decode launch (turbo3, B=32, ctx=32768). Output under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
export LD_LIBRARY_PATH=$PWD/.devbin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cuobjdump -sass .devbin/bench_gpu_decode > /tmp/all.sass 2>/dev/null
python3 - <<'PY' > "$OUT/sass_hist.txt"
import re, collections
s = open('/tmp/all.sass').read()
for fmt in ['FmtE4ELS3_4ELi128', 'FmtE2ELS3_2ELi128']:
    m = re.search(r'Function : (\S*decode_kernel\S*' + fmt + r'\S*)\n(.*?)\n\s*\.{10,}', s, re.S)
    if not m:
        continue
    body = m.group(2)
    ops = re.findall(r'/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)', body)
    c = collections.Counter(ops)
    print(m.group(1), sum(c.values()))
    for k, v in c.most_common(40):
        print(f'  {k:12} {v}')
PY
grep -A400 "decode_kernelILNS0_3FmtE4ELS3_4ELi128" /tmp/all.sass | head -400 > "$OUT/t3_sass.txt"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 240 $NCU --clock-control none -k regex:decode_kernel -c 1 \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
  --section SchedulerStats --section InstructionStats --section Occupancy --section MemoryWorkloadAnalysis \
  .devbin/bench_gpu_decode --quick --types turbo3 --out /tmp/x.json > "$OUT/ncu_t3.txt" 2>&1
tail -5 "$OUT/ncu_t3.txt"
