#!/usr/bin/env python3
"""PyTorch anchor for `tq bench serve` (SPEC §9, issue 14): transformers LlamaForCausalLM built
from a LlamaConfig of the llama3-8b shape with random bf16 weights, SDPA attention, a static
cache, decode throughput at the same batch sizes and context as ours.

As in our benchmark, the cache is brought to the context length by writing random K/V into it
(no 32k-token prefills); each timed step is one full-model decode step of B sequences at
position ctx, timed with CUDA events, median over the steps. Eager launches, and a CUDA graph
of the same step when capture works (reported separately).

usage: pytorch_anchor.py OUT.json [--ctx 32768] [--batch 1,8,16] [--steps 20]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache


def make_cache(cfg, B, L):
    try:
        return StaticCache(config=cfg, max_cache_len=L)
    except TypeError:  # transformers 4.x signature
        return StaticCache(config=cfg, max_batch_size=B, max_cache_len=L, device="cuda",
                           dtype=torch.bfloat16)


def kv_tensors(cache):
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return list(cache.key_cache) + list(cache.value_cache)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--batch", default="1,8,16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--graphs", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, rope_theta=500000.0, max_position_embeddings=131072,
                      rms_norm_eps=1e-5, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model = model.to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    print(f"# pytorch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}, model built in {time.time() - t0:.1f} s",
          flush=True)
    rows = []

    def run(B, graph):
        L = a.ctx + 2 * a.steps + 16
        cache = make_cache(cfg, B, L)
        tok = torch.randint(0, cfg.vocab_size, (B, 1), device="cuda")
        with torch.no_grad():
            # one step at position 0 sizes the (lazily allocated) static cache
            model(input_ids=tok, past_key_values=cache, use_cache=True,
                  position_ids=torch.zeros((B, 1), dtype=torch.long, device="cuda"))
            for t in kv_tensors(cache):
                t.uniform_(-1, 1)
            # transformers 5 static layers write at their own running length: put it at ctx
            for layer in getattr(cache, "layers", []):
                if hasattr(layer, "cumulative_length"):
                    layer.cumulative_length.fill_(a.ctx)
            pos = torch.full((B, 1), a.ctx, dtype=torch.long, device="cuda")

            def step():
                return model(input_ids=tok, past_key_values=cache, use_cache=True,
                             position_ids=pos).logits

            fn = step
            if graph:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        step()
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    step()
                fn = g.replay
            times = []
            for i in range(a.steps + 3):
                e0 = torch.cuda.Event(enable_timing=True)
                e1 = torch.cuda.Event(enable_timing=True)
                e0.record()
                fn()
                e1.record()
                torch.cuda.synchronize()
                if i >= 3:
                    times.append(e0.elapsed_time(e1))
                if not graph:
                    pos += 1
        ms = statistics.median(times)
        mode = "cuda_graph" if graph else "eager"
        rows.append({"B": B, "ctx": a.ctx, "tok_s": B / (ms * 1e-3), "ms_per_step": ms,
                     "mode": mode})
        print(f"pytorch B={B} ctx={a.ctx}: {ms:.3f} ms/step, {B / (ms * 1e-3):.1f} tok/s "
              f"({mode})", flush=True)
        del cache
        torch.cuda.empty_cache()

    # eager first for every B; the graph runs last, so that a failed capture costs no eager row
    for graph in ([False, True] if a.graphs else [False]):
        for B in [int(b) for b in a.batch.split(",")]:
            try:
                run(B, graph)
            except torch.cuda.OutOfMemoryError:
                print(f"pytorch B={B}: out of memory", flush=True)
                torch.cuda.empty_cache()
            except Exception as e:  # reported; the other rows stand
                print(f"pytorch B={B} graph={graph}: {type(e).__name__}: {str(e)[:300]}",
                      flush=True)
                if graph:
                    break
    with open(a.out, "w") as f:
        json.dump({"pytorch": rows, "torch": torch.__version__,
                   "transformers": transformers.__version__}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
