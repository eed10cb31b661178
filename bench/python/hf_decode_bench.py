"""Decode throughput of transformers' generate() on a random llama3-8b-shaped model (bf16, CUDA):
turboquant.hf.Cache (codes, the engine's CUDA flash-decoding) vs DynamicCache + SDPA, at batch B
and context CTX (issue 15's device figure: B = 16, CTX = 32768).

Both caches hold the same prefilled context: one prefill through the model with a DynamicCache
(SDPA, in chunks), then turboquant.hf.Cache.load() packs those keys/values into codes. Then
generate() runs N new tokens on each (the first step processes the one uncached token, i.e. it
is a decode step too); throughput = B * N / seconds, median of --repeats runs.

    python bench/python/hf_decode_bench.py --batch 16 --ctx 32768 --new 32 --types turbo3
    python bench/python/hf_decode_bench.py --layers 2 --ctx 2048 --batch 2   # smoke run
"""
import argparse
import json
import statistics
import time

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import turboquant.hf as tqhf


def llama3_8b(layers: int, ctx: int) -> LlamaConfig:
    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=128, max_position_embeddings=max(ctx + 1024, 8192),
                       rope_theta=500000.0, attn_implementation="turboquant")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--types", default="turbo3", help="comma-separated K=V types for our cache")
    ap.add_argument("--chunk", type=int, default=2048, help="prefill chunk (tokens per sequence)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA device"
    torch.manual_seed(0)
    cfg = llama3_8b(a.layers, a.ctx)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.ctx + 1), device="cuda")

    # Prefill the context once (DynamicCache + SDPA), chunk by chunk.
    t0 = time.perf_counter()
    dyn = DynamicCache()
    with torch.no_grad():
        for s in range(0, a.ctx, a.chunk):
            model(input_ids=ids[:, s:min(s + a.chunk, a.ctx)], past_key_values=dyn,
                  use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
    print(f"prefill {a.batch} x {a.ctx} tokens: {time.perf_counter() - t0:.1f} s", flush=True)

    def run(make_cache, label, done=lambda cache: None):
        times, out = [], None
        for r in range(a.repeats + 1):  # the first run warms up
            cache = make_cache()
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(ids, past_key_values=cache, max_new_tokens=a.new,
                                     min_new_tokens=a.new, do_sample=False)
            torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - t)
            done(cache)
            del cache
            torch.cuda.empty_cache()
        sec = statistics.median(times)
        tps = a.batch * a.new / sec
        print(f"{label:28s} {tps:10.1f} tok/s  ({sec * 1e3 / a.new:.2f} ms per step, median of "
              f"{a.repeats})", flush=True)
        return {"label": label, "tok_per_s": tps, "ms_per_step": sec * 1e3 / a.new,
                "tokens": out[:, a.ctx + 1:].tolist()}

    rows = []
    for t in a.types.split(","):
        rows.append(run(lambda t=t: tqhf.Cache(k=t, v=t, max_len=a.ctx + a.new + 64).load(dyn, cfg),
                        f"turboquant {t}/{t}"))
    model.set_attn_implementation("sdpa")
    # The prefilled DynamicCache itself (a copy would not fit beside it at B=16, 32k: 64 GiB),
    # cropped back to the context after every run (generate adds `new` tokens).
    rows.append(run(lambda: dyn, "DynamicCache + SDPA (bf16)",
                    done=lambda cache: cache.crop(-a.new)))
    ref = rows[-1]
    for r in rows[:-1]:
        agree = sum(x == y for p, q in zip(r["tokens"], ref["tokens"]) for x, y in zip(p, q))
        r["token_agreement"] = agree / (a.batch * a.new)
        r["speedup_vs_sdpa"] = r["tok_per_s"] / ref["tok_per_s"]
        print(f"{r['label']}: {r['speedup_vs_sdpa']:.2f}x DynamicCache+SDPA, greedy tokens equal "
              f"to its: {100 * r['token_agreement']:.1f}%")
    res = {"device": torch.cuda.get_device_name(), "batch": a.batch, "ctx": a.ctx, "new": a.new,
           "layers": a.layers, "rows": [{k: v for k, v in r.items() if k != "tokens"}
                                        for r in rows]}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
