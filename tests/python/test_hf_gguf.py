"""The transformers path on the real default model: transformers loads the GGUF file (its gguf
loader dequantizes it), and turbo4/turbo3 codes in turboquant.hf.Cache give a KLD vs
DynamicCache close to the one `tq perplexity` reports for the same chunk (same tokens, same
scored positions: the second half of a 256-token chunk)."""
import json
import subprocess

import pytest
import torch

import turboquant as tq
from conftest import EVAL, MODEL

CTX = 256


@pytest.fixture(scope="module")
def hf_model():
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM

    import turboquant.hf  # noqa: F401  (registers the attention)

    return AutoModelForCausalLM.from_pretrained(
        str(MODEL.parent), gguf_file=MODEL.name, attn_implementation="turboquant",
        dtype=torch.float32).eval()


def _cli_kld(tool, tmp_path, t):
    base = tmp_path / "base.bin"
    out = {}
    for k in ("f16", t):
        r = subprocess.run([str(tool), "perplexity", "-m", str(MODEL), "-f", str(EVAL), "-c",
                            str(CTX), "--chunks", "1", "-q", "-t", "1", "--kld-base", str(base),
                            "--ctk", k, "--ctv", k, "--json"], check=True, capture_output=True,
                           text=True)
        out[k] = json.loads(r.stdout)
    return out[t]["kld_mean"]


def test_kld_on_the_real_model_is_the_clis(hf_model, gguf_model, tq_tool, tmp_path):
    from transformers import DynamicCache

    import turboquant.hf as tqhf

    # The CLI's first chunk: the text's tokens (BOS first when the model wants one).
    ids = gguf_model.tokenize(EVAL.read_text(), add_bos=True)[:CTX]
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = hf_model(input_ids=x, past_key_values=DynamicCache()).logits[0]
        lp = ref[CTX // 2:CTX - 1].log_softmax(-1)
        for t in ("turbo4", "turbo3"):
            got = hf_model(input_ids=x, past_key_values=tqhf.Cache(k=t, v=t)).logits[0]
            lq = got[CTX // 2:CTX - 1].log_softmax(-1)
            kld = float((lp.exp() * (lp - lq)).sum(-1).mean())
            cli = _cli_kld(tq_tool, tmp_path, t)
            # Two forward implementations (torch fp32 vs the engine) feed the codecs slightly
            # different keys, so the figures agree to within a third, not bit for bit.
            assert 0.67 < kld / cli < 1.5, (t, kld, cli)
        f16 = hf_model(input_ids=x, past_key_values=tqhf.Cache(k="f16", v="f16")).logits[0]
        assert (f16 - ref).abs().max().item() < 0.1
