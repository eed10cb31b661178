"""Codecs through Python equal the C++ API byte for byte (tq_codec_ref runs the same codec in a
separate C++ program on the same inputs); NumPy and torch inputs, strided ones included."""
import subprocess

import numpy as np
import pytest
import torch

import turboquant as tq

# Types of every family with a dedicated kernel or layout: float, TurboQuant (MSE, prod,
# fractional), baselines, the vLLM presets' codecs and KIVI (blocks of 32 tokens).
TYPES = ["f16", "bf16", "q8_0", "q4_0", "turbo2", "turbo3", "turbo4", "turbo3p", "turbo2.5",
         "turbo3.5", "polar", "vllm-k3nc", "vllm-v4", "kivi2"]


def _ref(codec_ref, tmp_path, name, d, seed, is_key, x, q, w):
    for f, a in (("x", x), ("q", q), ("w", w)):
        a.astype(np.float32).tofile(tmp_path / f"{f}.bin")
    subprocess.run([str(codec_ref), name, str(d), str(seed), "1" if is_key else "0",
                    str(tmp_path / "x.bin"), str(tmp_path / "q.bin"), str(tmp_path / "w.bin"),
                    str(tmp_path / "out")], check=True, capture_output=True)
    rd = lambda ext, dt: np.fromfile(tmp_path / f"out.{ext}", dtype=dt)  # noqa: E731
    return rd("codes", np.uint8), rd("decoded", np.float32), rd("scores", np.float32), \
        rd("wsum", np.float32)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("d", [64, 128])
def test_codec_matches_cpp(codec_ref, tmp_path, name, d):
    if name not in {t["name"] for t in tq.types(d) if t["bpv_k"] is not None}:
        pytest.skip(f"{name} has no d={d} form")
    rng = np.random.default_rng(hash((name, d)) % 2**32)
    seed, is_key = 12345, True
    c = tq.Codec(name, d, seed=seed, is_key=is_key)
    n = 3 * c.block_tokens if c.block_tokens > 1 else 37  # odd count for per-token types
    x = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal(d).astype(np.float32)
    w = rng.random(n).astype(np.float32)
    codes, dec, scores, wsum = _ref(codec_ref, tmp_path, name, d, seed, is_key, x, q, w)

    got = c.encode(x)
    assert got.shape == (n // c.block_tokens, c.block_bytes) and got.dtype == np.uint8
    assert np.array_equal(got.ravel(), codes)
    assert np.array_equal(c.decode(got).ravel(), dec)
    assert np.array_equal(c.score(q, got), scores)
    assert np.array_equal(c.weighted_sum(got, w), wsum)
    assert c.bpv == pytest.approx(8.0 * c.block_bytes / (c.block_tokens * d))

    # torch: zero-copy in, torch out, same bytes; a strided (transposed) view is packed first.
    xt = torch.from_numpy(x)
    assert torch.equal(c.encode(xt), torch.from_numpy(got))
    xs = torch.from_numpy(np.ascontiguousarray(x.T)).T  # same values, column-major strides
    assert not xs.is_contiguous()
    assert torch.equal(c.encode(xs), torch.from_numpy(got))
    assert np.array_equal(c.encode(np.asfortranarray(x)), got)
    assert torch.equal(c.score(torch.from_numpy(q), torch.from_numpy(got)),
                       torch.from_numpy(scores))


def test_key_and_value_forms_differ_where_the_type_says():
    row = next(t for t in tq.types(128) if t["name"] == "kivi2")
    assert tq.Codec("kivi2", 128, is_key=True).bpv == pytest.approx(row["bpv_k"])
    assert tq.Codec("kivi2", 128, is_key=False).bpv == pytest.approx(row["bpv_v"])


def test_types_list(tq_tool):
    import json

    cli = json.loads(subprocess.run([str(tq_tool), "types", "--json"], check=True,
                                    capture_output=True, text=True).stdout)["rows"]
    py = {t["name"]: t for t in tq.types(128)}
    assert [r["type"] for r in cli] == list(py)
    for r in cli:
        row = py[r["type"]]
        assert row["bpv_k"] == r["bpv_k_d128"] and row["bpv_v"] == r["bpv_v_d128"]
    assert all(t["description"] for t in py.values())


def test_roundtrip_error_shrinks_with_bits():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 128)).astype(np.float32)
    err = {}
    for name in ("turbo2", "turbo3", "turbo4", "f16"):
        c = tq.Codec(name, 128)
        err[name] = float(np.mean((c.decode(c.encode(x)) - x) ** 2) / np.mean(x ** 2))
    assert err["f16"] < 1e-6 < err["turbo4"] < err["turbo3"] < err["turbo2"] < 0.2
