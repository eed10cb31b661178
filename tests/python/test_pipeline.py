"""The original description's API end to end: on the default GGUF model with data/calib.txt, and
on a tiny transformers model; parameters that are no preset raise an explanation."""
import pytest
import torch

import turboquant as tq
from conftest import CALIB, EVAL


def test_configs_map_to_presets():
    p = tq.TurboQuantPipeline(tq.PolarQuantConfig(2, 4, 128), tq.TurboQuantConfig(256, 16, 4))
    assert p.preset == "balanced" and p.cache_type == "polar-vq:balanced"
    assert tq.TurboQuantPipeline(tq.PolarQuantConfig(3, 5, 128)).preset == "quality"
    assert tq.TurboQuantPipeline(tq.PolarQuantConfig(4, 2, 64)).preset == "stage1"


def test_the_seeds_own_parameters_are_explained():
    # The original description's example: 4-bit r, 2-bit theta, groups of 64, PQ 256 x 8 x 4.
    with pytest.raises(tq.Error, match="is no polar-vq preset.*balanced.*allow_custom"):
        tq.TurboQuantPipeline(tq.PolarQuantConfig(4, 2, 64), tq.TurboQuantConfig(256, 8, 4))
    p = tq.TurboQuantPipeline(tq.PolarQuantConfig(4, 2, 64), tq.TurboQuantConfig(256, 8, 4),
                              allow_custom=True)
    assert p.cache_type == "polar-vq:custom" and p.params["vq_dim"] == 8


def test_load_calibration_samples(tmp_path):
    s = tq.load_calibration_samples(CALIB, num_samples=4, max_seq_len=64)
    assert len(s) == 1 and s.num_samples == 4 and s.max_seq_len == 64 and len(s.text()) > 1000
    assert tq.load_calibration_samples(["a b c", "d e"], 2, 8).text() == "a b c\n\nd e"
    with pytest.raises(tq.Error, match="not a local text file.*nothing is downloaded"):
        tq.load_calibration_samples(dataset="c4", num_samples=256, max_seq_len=4096)
    with pytest.raises(tq.Error, match="num_samples"):
        tq.load_calibration_samples(CALIB, num_samples=0)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(tq.Error, match="empty"):
        tq.load_calibration_samples(tmp_path / "empty.txt")


def test_pipeline_on_gguf_model(gguf_model):
    data = tq.load_calibration_samples(CALIB, num_samples=2, max_seq_len=128)
    pipe = tq.TurboQuantPipeline(tq.PolarQuantConfig(3, 5, 128))  # "quality": stage 1 only
    model = pipe.apply(gguf_model, data)
    assert model is gguf_model and model.cache_options["k"] == "polar-vq:quality"
    assert pipe.codebooks.samples == 2 and pipe.codebooks.ctx == 128
    r = model.perplexity(EVAL, ctx=128, chunks=1)
    f16 = model.perplexity(EVAL, ctx=128, chunks=1, k="f16", v="f16", codebooks=None)
    assert r["ctk"] == "polar-vq:quality" and r["bpv_k"] < 5 and r["bpv_v"] < 5
    assert 1 < f16["ppl"] < r["ppl"] < 2 * f16["ppl"]
    g = model.generate("The capital of France is", n_predict=4)
    assert g["ctk"] == "polar-vq:quality" and len(g["tokens"]) > 0
    gguf_model.cache_options.clear()  # the session fixture is shared


def test_pipeline_on_transformers_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=256, intermediate_size=512,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, head_dim=64)).eval()

    def tokenizer(text, return_tensors="pt"):  # bytes as tokens: enough for a random model
        return {"input_ids": torch.tensor([list(text.encode()[:4000])]) % 320}

    data = tq.load_calibration_samples(CALIB, num_samples=4, max_seq_len=64)
    pipe = tq.TurboQuantPipeline(tq.PolarQuantConfig(2, 4, 128), tq.TurboQuantConfig(256, 16, 4))
    out = pipe.apply(model, data, tokenizer=tokenizer)
    assert out is model and pipe.codebooks.shape == (2, 2, 64)
    ids = tokenizer("The capital of France is")["input_ids"]
    g = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert g.shape == (1, ids.shape[1] + 6)
    with pytest.raises(tq.Error, match="tokenizer"):
        pipe.apply(model, data)
