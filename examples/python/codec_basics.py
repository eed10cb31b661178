"""Encode vectors with a cache type, decode them, and score a query on the codes.

    build/venv/bin/python examples/python/codec_basics.py
"""
import numpy as np
import torch

import turboquant as tq

for t in tq.types(128)[:6]:
    print(f"{t['name']:10s} bpv {t['bpv']:.3f}  {t['description']}")

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 128)).astype(np.float32)
q = rng.standard_normal(128).astype(np.float32)
for name in ("turbo4", "turbo3", "turbo2"):
    c = tq.Codec(name, 128)
    codes = c.encode(x)                        # (256, block_bytes) uint8
    err = np.mean((c.decode(codes) - x) ** 2) / np.mean(x ** 2)
    s = c.score(q, codes)                      # q . x_i computed on the codes
    corr = np.corrcoef(s, x @ q)[0, 1]
    print(f"{name}: {c.bpv:.3f} bits/value, {x.nbytes / codes.nbytes:.1f}x smaller than f32, "
          f"relative MSE {err:.4f}, score correlation {corr:.4f}")

# PyTorch tensors work the same way (zero-copy for contiguous float32 CPU tensors).
xt = torch.from_numpy(x)
print("torch:", tq.Codec("turbo3", 128).encode(xt).shape)
