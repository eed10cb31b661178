"""`tq compare` from Python: several cache types against the f16 reference on the default model.

    build/venv/bin/python examples/python/compare_types.py
"""
import turboquant as tq

model = tq.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
r = model.compare("turbo4,turbo3,q8_0/turbo3,turboquant_k3v4_nc", "data/eval.txt", ctx=256,
                  chunks=4, decode=8)
for row in r["rows"]:
    print(f"{row['label']:24s} bpv {row['bpv']:6.3f}  PPL {row['ppl']:8.3f}  "
          f"KLD {row['kld_mean']:.5f}  top-1 {100 * row['top1']:.1f}%")
