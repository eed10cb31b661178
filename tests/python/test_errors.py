"""Bad input raises turboquant.Error (a ValueError) with a one-line message, never a crash."""
import numpy as np
import pytest
import torch

import turboquant as tq


def test_error_is_value_error():
    assert issubclass(tq.Error, ValueError)


@pytest.mark.parametrize("call, match", [
    (lambda: tq.Codec("turbo9", 128), "unknown cache type 'turbo9'"),
    (lambda: tq.Codec("turbo3", 128).encode(np.zeros((4, 128))), "expected float32, got float64"),
    (lambda: tq.Codec("turbo3", 128).encode(np.zeros((4, 64), np.float32)), r"shape \(n, 128\)"),
    (lambda: tq.Codec("turbo3", 128).encode(np.zeros(128, np.float32)), "2-D"),
    (lambda: tq.Codec("turbo3", 128).encode(torch.zeros(4, 128, dtype=torch.float16)),
     "expected float32, got float16"),
    (lambda: tq.Codec("turbo3", 128).encode(np.full((2, 128), np.nan, np.float32)), "NaN|finite"),
    (lambda: tq.Codec("turbo3", 128).score(np.full(128, np.inf, np.float32),
                                           np.zeros((1, tq.Codec("turbo3", 128).block_bytes),
                                                    np.uint8)), "NaN or Inf"),
    (lambda: tq.Codec("turbo3", 128).decode(np.zeros((2, 3), np.uint8)), "codes: expected shape"),
    (lambda: tq.Codec("kivi2", 128).encode(np.zeros((5, 128), np.float32)), "multiple"),
    (lambda: tq.Codec("turbo3", 128).encode("x"), "NumPy array or a tensor"),
    (lambda: tq.Codec("polar-vq:balanced", 128), "needs learned codebooks"),
    (lambda: tq.KvCache(2, 2, 64, k="turbo3", boundary=5), "boundary"),
    (lambda: tq.KvCache(2, 2, 64, kk="turbo3"), "unknown cache option 'kk'"),
    (lambda: tq.KvCache(2, 2, 64, sinks=True), "expected an int"),
])
def test_bad_input(call, match):
    with pytest.raises(tq.Error, match=match):
        call()


def test_cache_misuse():
    c = tq.KvCache(2, 2, 64, k="turbo3", v="turbo3", max_tokens=256)
    s = c.new_seq()
    k = np.random.default_rng(0).standard_normal((8, 2, 64)).astype(np.float32)
    c.append(s, 0, k, k)
    with pytest.raises(tq.Error, match="no sequence 7"):
        c.append(7, 0, k, k)
    with pytest.raises(tq.Error, match="layer 2 outside"):
        c.append(s, 2, k, k)
    with pytest.raises(tq.Error, match="expected k and v of shape"):
        c.append(s, 0, k[:, :1], k[:, :1])
    bad = k.copy()
    bad[3, 1, 5] = np.nan
    with pytest.raises(tq.Error, match="NaN"):
        c.append(s, 1, bad, k)
    with pytest.raises(tq.Error, match="multiple of 2"):
        c.attention(s, 0, np.zeros((1, 3, 64), np.float32), 0.125)
    with pytest.raises(tq.Error, match="stored positions"):
        c.attention(s, 0, np.zeros((9, 2, 64), np.float32), 0.125)
    with pytest.raises(tq.Error, match="KV cache full"):
        c.append(s, 0, np.zeros((300, 2, 64), np.float32), np.zeros((300, 2, 64), np.float32))


@pytest.mark.parametrize("t", ["f16", "q8_0"])
def test_cache_attention_matches_reference(t):
    # Types whose score() is exactly q . decode(x) (the turbo types' scores come from the codes
    # by their own estimator, so they differ from the decoded-vector reference by design).
    rng = np.random.default_rng(3)
    c = tq.KvCache(1, 2, 64, k=t, v=t, max_tokens=512)
    s = c.new_seq()
    k, v = (rng.standard_normal((70, 2, 64)).astype(np.float32) for _ in range(2))
    c.append(s, 0, k, v)
    q = rng.standard_normal((3, 4, 64)).astype(np.float32)
    fast = c.attention(s, 0, q, 0.125)
    ref = c.attention(s, 0, q, 0.125, path="reference")
    assert np.abs(fast - ref).max() < 1e-5  # same stored codes, float vs double arithmetic
    assert np.abs(c.attention(s, 0, q, 0.125, path="tiled") - ref).max() < 1e-5
    # The reference itself: softmax over the decoded keys/values (read()) in NumPy.
    K = np.stack([c.read(s, 0, h, True) for h in range(2)])
    V = np.stack([c.read(s, 0, h, False) for h in range(2)])
    for t in range(3):
        for h in range(4):
            vis = 70 - 3 + t + 1
            sc = K[h // 2, :vis] @ q[t, h] * 0.125
            w = np.exp(sc - sc.max())
            assert np.abs(ref[t, h] - (w / w.sum()) @ V[h // 2, :vis]).max() < 1e-5
