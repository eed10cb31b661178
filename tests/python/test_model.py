"""turboquant.Model gives the `tq` tool's numbers for the same options (default model)."""
import json
import subprocess

import pytest

import turboquant as tq
from conftest import CALIB, EVAL, MODEL


@pytest.fixture(autouse=True)
def one_thread():
    # The tool runs with -t 1: the same thread count on both sides (split attention rounds
    # differently on other counts).
    tq.set_threads(1)
    yield
    tq.set_threads(0)


def _tq(tool, *args):
    r = subprocess.run([str(tool), *args, "--json"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def test_perplexity_equals_cli(tq_tool, gguf_model):
    args = ["-c", "128", "--chunks", "2", "-t", "1"]
    for k, v, extra, kw in (("f16", "f16", [], {}),
                            ("turbo3", "turbo4", ["--sinks", "4", "--boundary", "1"],
                             {"sinks": 4, "boundary": 1})):
        cli = _tq(tq_tool, "perplexity", "-m", str(MODEL), "-f", str(EVAL), "-q", "--ctk", k,
                  "--ctv", v, *args, *extra)
        py = gguf_model.perplexity(EVAL, ctx=128, chunks=2, k=k, v=v, **kw)
        for key in ("ppl", "ppl_stderr", "bpv_k", "bpv_v", "kv_bytes", "tokens", "chunks"):
            assert py[key] == cli[key], key
    assert 1.0 < py["ppl"] < 1e4


def test_generate_equals_cli(tq_tool, gguf_model):
    cli = _tq(tq_tool, "generate", "-m", str(MODEL), "-p", "The capital of France is", "-n", "12",
              "--ctk", "turbo3", "--ctv", "turbo3", "-t", "1")
    py = gguf_model.generate("The capital of France is", n_predict=12, k="turbo3", v="turbo3")
    assert py["tokens"] == cli["tokens"] and py["text"] == cli["text"]
    assert py["kv_bytes"] == cli["kv_bytes"] and py["bpv_k"] == cli["bpv_k"]


def test_compare_rows(tq_tool, gguf_model):
    cli = _tq(tq_tool, "compare", "-m", str(MODEL), "-f", str(EVAL), "-c", "64", "--chunks", "1",
              "--types", "turbo3,q8_0/turbo4", "--decode", "0", "-q", "-t", "1")
    py = gguf_model.compare("turbo3,q8_0/turbo4", EVAL, ctx=64, chunks=1, decode=0)
    assert [r["label"] for r in py["rows"]] == [r["label"] for r in cli["rows"]]
    for a, b in zip(py["rows"], cli["rows"]):
        for key in ("ppl", "kld_mean", "kld_p99", "top1", "bpv", "kv_bytes", "pareto"):
            assert a[key] == b[key], (a["label"], key)


def test_calibrate_and_use(tmp_path, gguf_model):
    r = gguf_model.calibrate("quality", output=tmp_path / "q.tqcb", file=CALIB, samples=2, ctx=64,
                             max_per_head=256)
    cb = r["codebooks"]
    assert cb.cache_type == "polar-vq:quality" and (tmp_path / "q.tqcb").exists()
    hp = gguf_model.hparams
    assert cb.shape == (hp["n_layer"], hp["n_kv_head"], hp["head_dim"])
    a = gguf_model.perplexity(EVAL, ctx=64, chunks=1, k="polar-vq:quality", v="polar-vq:quality",
                              codebooks=cb)
    b = gguf_model.perplexity(EVAL, ctx=64, chunks=1, k="polar-vq:quality", v="polar-vq:quality",
                              codebooks=tmp_path / "q.tqcb")
    assert a["ppl"] == b["ppl"] and 1.0 < a["ppl"] < 1e4


def test_model_errors(gguf_model, tmp_path):
    with pytest.raises(tq.Error, match="unknown cache type 'turbo9'"):
        gguf_model.perplexity(EVAL, ctx=64, chunks=1, k="turbo9")
    with pytest.raises(tq.Error, match="needs learned codebooks"):
        gguf_model.generate("hi", n_predict=2, k="polar-vq:balanced")
    with pytest.raises(tq.Error, match="unknown cache option"):
        gguf_model.generate("hi", n_predict=2, kk="f16")
    with pytest.raises(tq.Error, match="does not fit"):
        gguf_model.generate("hi", n_predict=50, ctx=8)
    with pytest.raises(tq.Error):
        tq.Model(tmp_path / "missing.gguf")
    with pytest.raises(ValueError):  # turboquant.Error is a ValueError
        gguf_model.perplexity(tmp_path / "missing.txt")
