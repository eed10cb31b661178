#!/usr/bin/env bash
# On the device: SASS of the turbo3 (d=128) decode kernel, instruction histogram (cuobjdump is
# there, not on the development machine). Output under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
cuobjdump -sass -fun '_ZN2tq4cuda2dk13decode_kernelILNS0_3FmtE4ELS3_4ELi128ELi4ELi3ELi1ELi1ELb1ELi0ELb1EEEvNS0_12DecodeParamsE' \
  .devbin/bench_gpu_decode > "$OUT/t3.sass" 2>&1
python3 - "$OUT/t3.sass" <<'PY' | tee "$OUT/t3_hist.txt"
import re, sys, collections
s = open(sys.argv[1]).read()
ops = re.findall(r'/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)', s)
c = collections.Counter(o for o in ops)
print(len(ops))
for k, v in c.most_common(45):
    print(f'  {k:24} {v}')
PY
# the turbo3 append kernel too
cuobjdump -sass -fun '_ZN2tq4cuda2ak13append_kernelILNS0_3FmtE4ELS3_4ELi128EEEvNS0_12AppendParamsE' \
  .devbin/bench_gpu_decode > "$OUT/t3_append.sass" 2>&1
python3 - "$OUT/t3_append.sass" <<'PY' | tee "$OUT/t3_append_hist.txt"
import re, sys, collections
s = open(sys.argv[1]).read()
ops = re.findall(r'/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)', s)
c = collections.Counter(o for o in ops)
print(len(ops))
for k, v in c.most_common(45):
    print(f'  {k:24} {v}')
PY
