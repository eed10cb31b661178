"""turboquant.hf.Cache on CUDA tensors (the engine's GPU cache and kernels): run on a GPU machine
with a CUDA build (scripts/python_device_bench.sh); skipped elsewhere, with the reason."""
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import turboquant as tq
import turboquant.hf as tqhf

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and tq._core.HAS_CUDA and tq._core.cuda_available()),
    reason="needs a CUDA device and turboquant built with TQ_CUDA=ON")


def _model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024,
                      num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
                      head_dim=128, attn_implementation="turboquant")
    return LlamaForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16).eval()


def _logits(model, ids, cache, steps=8):
    out = []
    with torch.no_grad():
        r = model(input_ids=ids, past_key_values=cache, use_cache=True)
        out.append(r.logits[:, -1].float())
        for _ in range(steps):
            r = model(input_ids=r.logits[:, -1:].argmax(-1), past_key_values=cache,
                      use_cache=True)
            out.append(r.logits[:, -1].float())
    return torch.stack(out, 1)


def test_bf16_codes_match_dynamic_cache():
    model = _model()
    ids = torch.randint(0, 512, (4, 96), device="cuda")
    ref = _logits(model, ids, DynamicCache())
    got = _logits(model, ids, tqhf.Cache(k="bf16", v="bf16"))
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean().item() > 0.95
    assert (ref - got).abs().max().item() < 5e-2  # bf16 model: logits rounded to ~3 digits


@pytest.mark.parametrize("t", ["turbo4", "turbo3"])
def test_turbo_on_cuda_finite_and_close(t):
    model = _model()
    ids = torch.randint(0, 512, (4, 96), device="cuda")
    ref = _logits(model, ids, DynamicCache())
    cache = tqhf.Cache(k=t, v=t)
    got = _logits(model, ids, cache)
    assert torch.isfinite(got).all()
    lp, lq = ref.log_softmax(-1), got.log_softmax(-1)
    assert float((lp.exp() * (lp - lq)).sum(-1).mean()) < 0.1
    assert cache.kv_bytes > 0


def test_cuda_load_from_dynamic_cache():
    model = _model()
    ids = torch.randint(0, 512, (2, 200), device="cuda")
    with torch.no_grad():
        dyn = DynamicCache()
        model(input_ids=ids, past_key_values=dyn, use_cache=True)
        mine = tqhf.Cache(k="bf16", v="bf16").load(dyn, model.config)
        nxt = ids[:, -1:]
        a = model(input_ids=nxt, past_key_values=dyn, use_cache=True).logits.float()
        b = model(input_ids=nxt, past_key_values=mine, use_cache=True).logits.float()
    assert (a - b).abs().max().item() < 5e-2
