"""KLD vs DynamicCache of turboquant.hf.Cache types on the tests' tiny random Llama and Qwen2
models (CPU): prefill 40 tokens, then 8 greedy single-token steps; mean KL over the 9 positions
and the largest logit difference. The figures behind tests/python/test_hf.py's bounds.

    build/venv/bin/python bench/python/hf_tiny_kld.py
"""
import sys
import time

import torch
from transformers import DynamicCache

sys.path.insert(0, "tests/python")
from test_hf import _kld, _prompt, _step_logits, _tiny  # noqa: E402

import turboquant.hf as tqhf  # noqa: E402

for kind in ("llama", "qwen2"):
    model = _tiny(kind)
    ids = _prompt()
    ref = _step_logits(model, ids, DynamicCache())
    for t in ("f16", "q8_0", "turbo4", "turbo3", "turbo2"):
        t0 = time.process_time()
        got = _step_logits(model, ids, tqhf.Cache(k=t, v=t))
        cpu = time.process_time() - t0
        same = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
        print(f"{kind:6s} {t:7s} KLD {_kld(ref, got):.2e}  max|dlogit| "
              f"{(ref - got).abs().max().item():.2e}  greedy agreement {100 * same:.0f}%  "
              f"(CPU {cpu:.2f} s)")
