#!/usr/bin/env python3
"""Markdown tables of bench/results/gpu-serve.json (tq bench serve + the PyTorch anchor)."""
import json
import sys

j = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "bench/results/gpu-serve.json"))
print(f"{j['gpu']}, {j['model']}, ctx {j['ctx']}, copy {j['copy_tbps']:.2f} TB/s, "
      f"weights {j['weights_gb']:.2f} GB, median of {j['steps']} steps\n")
print("| type | B | tok/s | ms/step | KV GB/step | roofline tok/s | % of roofline |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in j["rows"]:
    b = f"{r['B']} (max)" if r.get("max_batch") else str(r["B"])
    print(f"| {r['type']} | {b} | {r['tok_s']:.1f} | {r['ms_per_step']:.2f} | {r['kv_gb']:.1f} | "
          f"{r['roofline_tok_s']:.1f} | {100 * r['tok_s'] / r['roofline_tok_s']:.0f} |")
print("\nmost 32k sequences in free memory: " +
      ", ".join(f"{t} {b}" for t, b in j["max_batch"].items()))
if j.get("prefill"):
    print("\nprefill: " + ", ".join(f"{p['type']} {p['tok_s']:.0f} tok/s" for p in j["prefill"]))
if j.get("pytorch"):
    print("\n| PyTorch (transformers, SDPA, static cache) | B | tok/s | ms/step |")
    print("| --- | --- | --- | --- |")
    for p in j["pytorch"]:
        print(f"| {p.get('mode', '')} | {p['B']} | {p['tok_s']:.1f} | {p['ms_per_step']:.2f} |")
rows = {(r["type"], r["B"]): r for r in j["rows"]}
def tok(t, b):
    r = rows.get((t, b))
    return r["tok_s"] if r else None
for b in (16,):
    t3, bf, f8 = tok("turbo3", b), tok("bf16", b), tok("fp8", b)
    if t3 and bf:
        print(f"\nB={b}: turbo3 / bf16 = {t3 / bf:.2f}x" +
              (f", turbo3 / fp8 = {t3 / f8:.2f}x" if f8 else ""))
mx = {r["type"]: r for r in j["rows"] if r.get("max_batch")}
if "turbo3" in mx and "bf16" in mx:
    print(f"equal memory (each at its largest batch): turbo3 / bf16 = "
          f"{mx['turbo3']['tok_s'] / mx['bf16']['tok_s']:.2f}x; turbo3 at "
          f"{100 * mx['turbo3']['tok_s'] / mx['turbo3']['roofline_tok_s']:.0f}% of its roofline")
