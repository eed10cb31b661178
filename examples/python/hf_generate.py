"""transformers generate() with the turboquant cache vs DynamicCache.

    build/venv/bin/python examples/python/hf_generate.py [MODEL_DIR]

MODEL_DIR: a local transformers Llama/Qwen2 checkpoint (nothing is downloaded). Without it a
small random Llama is built, so the tokens are noise but the cache and attention are real.
"""
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LlamaConfig
from transformers import LlamaForCausalLM

import turboquant.hf  # registers attn_implementation="turboquant"

if len(sys.argv) > 1:
    tok = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True,
                                                 attn_implementation="turboquant")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
else:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=512, intermediate_size=1024,
                                         num_hidden_layers=4, num_attention_heads=8,
                                         num_key_value_heads=2, head_dim=64,
                                         attn_implementation="turboquant"))
    ids = torch.randint(0, 1000, (2, 200))
    tok = None
model.eval()

for name, cache in (("DynamicCache", DynamicCache()),
                    ("turbo3/turbo3", turboquant.hf.Cache(k="turbo3", v="turbo3")),
                    ("q8_0/turbo3, sinks 4, boundary 1",
                     turboquant.hf.Cache(k="q8_0", v="turbo3", sinks=4, boundary=1))):
    t0 = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                         do_sample=False, past_key_values=cache, pad_token_id=0)
    dt = time.perf_counter() - t0
    text = tok.decode(out[0, ids.shape[1]:]) if tok else out[0, ids.shape[1]:].tolist()[:12]
    extra = f", {cache.kv_bytes} KV bytes, bpv {cache.bpv}" if hasattr(cache, "kv_bytes") else ""
    print(f"{name}: {dt:.2f} s{extra}\n  {text}")
