#!/usr/bin/env bash
# SASS instruction histograms of the production turbo3 (d = 128) decode kernel (stream mode, one-
# byte tables, pair columns) and the turbo3 append kernel, from bench_gpu_decode (needs cuobjdump
# and nvdisasm: any CUDA toolkit). Output under OUT (default gpu-out/).
set -uo pipefail
BIN=${BIN:-build-cuda}
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
cuobjdump -sass "$BIN/bench_gpu_decode" > "$OUT/all.sass" 2>&1
python3 - "$OUT/all.sass" "$OUT" <<'PY' | tee "$OUT/t3_hist.txt"
import collections, re, sys
s = open(sys.argv[1]).read()
parts = re.split(r'\n\s*Function : (\S+)\n', s)
funcs = {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}
# decode_kernel<kTurbo3, kTurbo3, 128, DecodeMode<stream, one byte, pair columns, 3, TableLookup>>
# and append_kernel<kTurbo3, kTurbo3, 128>
want = {'decode': r'decode_kernelILNS_9GpuFormatE4ELS3_4ELi128ENS0_10DecodeModeILb1ELNS0_8T3TablesE0ELb1ELi3ENS1_11TableLookup',
        'append': r'append_kernelILNS_9GpuFormatE4ELS3_4ELi128E'}
for tag, pat in want.items():
    for name, body in funcs.items():
        if re.search(pat, name):
            open(f'{sys.argv[2]}/t3_{tag}.sass', 'w').write(body)
            ops = re.findall(r'/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)', body)
            print(tag, name, len(ops))
            for k, v in collections.Counter(ops).most_common(45):
                print(f'  {k:24} {v}')
PY
