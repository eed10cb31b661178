"""turboquant.hf.Cache + the "turboquant" attention on tiny random transformers models (Llama and
Qwen2 configs, seeded): f16 codes give DynamicCache's greedy tokens and logits within 1e-3;
turbo4/turbo3 give finite logits whose KLD vs DynamicCache grows as bits shrink."""
import pytest
import torch
from transformers import (DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

import turboquant as tq
import turboquant.hf as tqhf


def _tiny(kind: str):
    torch.manual_seed(0)
    common = dict(vocab_size=320, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                  max_position_embeddings=1024, attn_implementation="turboquant")
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=False)).eval()


def _prompt(B=1, T=40):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 320, (B, T), generator=g)


def _step_logits(model, ids, cache, steps=8):
    """Greedy decode by hand: prefill, then `steps` single-token forwards; all logits."""
    out = []
    with torch.no_grad():
        r = model(input_ids=ids, past_key_values=cache, use_cache=True)
        out.append(r.logits[:, -1])
        for _ in range(steps):
            nxt = r.logits[:, -1].argmax(-1, keepdim=True)
            r = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            out.append(r.logits[:, -1])
    return torch.stack(out, 1)  # (B, steps+1, vocab)


def _kld(ref, got):
    lp, lq = ref.log_softmax(-1), got.log_softmax(-1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_f16_matches_dynamic_cache(kind):
    model = _tiny(kind)
    ids = _prompt(B=2)
    ref = _step_logits(model, ids, DynamicCache())
    got = _step_logits(model, ids, tqhf.Cache(k="f16", v="f16"))
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
    assert (ref - got).abs().max().item() < 1e-3
    g_ref = model.generate(ids, max_new_tokens=10, do_sample=False, past_key_values=DynamicCache())
    g_tq = model.generate(ids, max_new_tokens=10, do_sample=False,
                          past_key_values=tqhf.Cache(k="f16", v="f16"))
    assert torch.equal(g_ref, g_tq)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_turbo_types_finite_and_ordered(kind):
    model = _tiny(kind)
    ids = _prompt()
    ref = _step_logits(model, ids, DynamicCache())
    kld = {}
    for t in ("turbo4", "turbo3"):
        cache = tqhf.Cache(k=t, v=t)
        got = _step_logits(model, ids, cache)
        assert torch.isfinite(got).all()
        kld[t] = _kld(ref, got)
        bk, bv = cache.bpv
        # values: the codec's bpv; keys are mean-centred by default for the project's types, so
        # they also carry the f32 mean and per-page offsets (amortised over this short prompt)
        assert bv == pytest.approx(tq.Codec(t, 64).bpv) and cache.kv_bytes > 0
        assert bk > bv
        plain = tqhf.Cache(k=t, v=t, center_keys=False)
        assert torch.isfinite(_step_logits(model, ids, plain)).all()
        assert plain.bpv[0] == pytest.approx(tq.Codec(t, 64).bpv)
    # Random weights give near-uniform attention, so the errors are small; the CLI's range on
    # the real 135M model at -c 512 is 0.01-0.1 for turbo4/turbo3.
    assert 0 < kld["turbo4"] < kld["turbo3"] < 0.1


def test_options_sinks_window_boundary():
    model = _tiny("llama")
    ids = _prompt()
    ref = _step_logits(model, ids, DynamicCache())
    plain = _kld(ref, _step_logits(model, ids, tqhf.Cache(k="turbo2", v="turbo2")))
    # Every layer f16 through the boundary option: DynamicCache's numbers again.
    all_f16 = _step_logits(model, ids, tqhf.Cache(k="turbo2", v="turbo2", boundary=2))
    assert (all_f16 - ref).abs().max().item() < 1e-3
    held = _kld(ref, _step_logits(model, ids, tqhf.Cache(k="turbo2", v="turbo2", sinks=8,
                                                         residual=16, center_keys=True,
                                                         layer_k={0: "q8_0"})))
    assert held < plain


def test_batch_rows_equal_single_rows():
    model = _tiny("qwen2")
    ids = _prompt(B=3)
    both = _step_logits(model, ids, tqhf.Cache(k="turbo3", v="turbo3"), steps=3)
    one = _step_logits(model, ids[1:2], tqhf.Cache(k="turbo3", v="turbo3"), steps=3)
    assert (both[1] - one[0]).abs().max().item() < 1e-4


def test_misuse_raises():
    model = _tiny("llama")
    ids = _prompt()
    with pytest.raises(tq.Error, match="unknown cache type"):
        tqhf.Cache(k="turbo9")
    with pytest.raises(tq.Error, match="needs learned codebooks"):
        tqhf.Cache(k="polar-vq:balanced", v="polar-vq:balanced")
    # Padding (an attention_mask with zeros) is refused, not ignored.
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with pytest.raises(tq.Error, match="padded batch"):
        model(input_ids=ids, attention_mask=mask, past_key_values=tqhf.Cache(), use_cache=True)
    # Another attention implementation would never see the codes: the next step raises.
    model.set_attn_implementation("sdpa")
    cache = tqhf.Cache()
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
        with pytest.raises(tq.Error, match="attn_implementation='turboquant'"):
            model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)
    # max_len is enforced with a message saying what to change.
    tqhf.enable(model)
    with pytest.raises(tq.Error, match="max_len"):
        model(input_ids=ids, past_key_values=tqhf.Cache(max_len=16), use_cache=True)


def test_turboquant_attention_without_our_cache_is_sdpa():
    model = _tiny("llama")
    ids = _prompt()
    with torch.no_grad():
        a = model(input_ids=ids, past_key_values=DynamicCache()).logits
        model.set_attn_implementation("sdpa")
        b = model(input_ids=ids, past_key_values=DynamicCache()).logits
    assert torch.equal(a, b)


def test_load_a_prefilled_dynamic_cache():
    model = _tiny("llama")
    ids = _prompt(B=2)
    with torch.no_grad():
        dyn = DynamicCache()
        model(input_ids=ids, past_key_values=dyn, use_cache=True)
        mine = tqhf.Cache(k="f16", v="f16").load(dyn, model.config)
        assert mine.get_seq_length() == ids.shape[1]
        nxt = torch.randint(0, 320, (2, 1), generator=torch.Generator().manual_seed(5))
        for _ in range(4):
            a = model(input_ids=nxt, past_key_values=dyn, use_cache=True).logits
            b = model(input_ids=nxt, past_key_values=mine, use_cache=True).logits
            assert (a - b).abs().max().item() < 1e-3
            nxt = a[:, -1].argmax(-1, keepdim=True)
    with pytest.raises(tq.Error, match="not empty"):
        mine.load(dyn, model.config)
