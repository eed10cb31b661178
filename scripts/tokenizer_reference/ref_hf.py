"""Reference token ids from Hugging Face `tokenizers` for the strings in strings.py: the
vocabulary, merges and special tokens are converted from the GGUF by transformers' own GGUF
converter; the pre-tokenizer is SmolLM2's published one (Digits(individual_digits) then
ByteLevel). Prints one line of ids per string.
Usage: python ref_hf.py VOCAB_OR_MODEL.gguf [smollm|gguf-default]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from strings import STRINGS  # noqa: E402
from tokenizers import pre_tokenizers  # noqa: E402
from transformers.integrations.gguf.gguf_tokenizer_mapping import (  # noqa: E402
    add_gguf_special_tokens, byte_level_tokenizer)

r = GGUFReader(sys.argv[1])


def arr(k):
    f = r.fields[k]
    if f.types[-1] == 8:
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return [int(f.parts[i][0]) for i in f.data]


d = {"tokenizer_type": "gpt2", "tokens": arr("tokenizer.ggml.tokens"),
     "token_type": arr("tokenizer.ggml.token_type"), "merges": arr("tokenizer.ggml.merges")}
tok = add_gguf_special_tokens(byte_level_tokenizer(d), d)
mode = sys.argv[2] if len(sys.argv) > 2 else "smollm"
if mode == "smollm":
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
print("# tokenizers", tokenizers.__version__, "transformers", transformers.__version__, mode,
      file=sys.stderr)
for s in STRINGS:
    print(" ".join(map(str, tok.encode(s, add_special_tokens=False))))
