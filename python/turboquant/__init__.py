"""turboquant: KV-cache compression to 2-4 bits with attention computed on the codes.

The C++ engine (the ``tq`` tool's library) for Python:

* :func:`types` - every cache type with its bits per value and description;
* :class:`Codec` - one type at one head dimension: ``encode`` / ``decode`` / ``score`` /
  ``weighted_sum`` on NumPy arrays and CPU PyTorch tensors (zero-copy for contiguous float32);
* :class:`KvCache` - the paged compressed cache (sinks, residual window, boundary layers,
  per-layer types) with attention on its codes;
* :class:`Model` - a GGUF model: ``generate``, ``perplexity``, ``compare``, ``calibrate``
  returning the numbers of ``tq ... --json``;
* :mod:`turboquant.hf` - a Hugging Face transformers cache storing K/V as codes, and the
  ``"turboquant"`` attention implementation that runs on them;
* the original description's API: :class:`PolarQuantConfig`, :class:`TurboQuantConfig`,
  :class:`TurboQuantPipeline`, :func:`load_calibration_samples`.

Errors of the engine raise :class:`Error` (a ``ValueError``) with the CLI's one-line message.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import _core
from ._core import Codebooks, Error, KvCache, describe_type, polarvq_preset, set_threads
from ._core import polarvq_preset_names, calibrate_polarvq

__all__ = [
    "Error", "types", "describe_type", "Codec", "KvCache", "Codebooks", "Model", "set_threads",
    "polarvq_preset", "polarvq_preset_names", "calibrate_polarvq", "PolarQuantConfig",
    "TurboQuantConfig", "TurboQuantPipeline", "load_calibration_samples", "CalibrationSamples",
]
__version__ = "0.1.0"


def types(dim: int = 128) -> List[Dict[str, Any]]:
    """Every cache type as a dict: ``name``, ``description``, ``bpv_k`` / ``bpv_v`` (all-in bits
    per value of the key and value forms at head dimension ``dim``, ``None`` where the type does
    not support that dimension), ``bpv`` (their mean) and ``needs_calibration``. The numbers of
    ``tq types``."""
    return _core.types(dim)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "__dlpack__")


def _array_in(x: Any, what: str):
    """What the engine reads (zero-copy where it can), and how to hand a result back in the
    caller's kind (a torch tensor for torch input, else NumPy)."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise Error(f"{what}: expected a CPU tensor, got one on {x.device} (CUDA tensors go "
                        "through turboquant.hf)")
        import torch

        return x.detach(), torch.from_numpy
    if isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=np.float32)
    if not isinstance(x, np.ndarray) and not hasattr(x, "__dlpack__"):
        raise Error(f"{what}: expected a NumPy array or a tensor, got {type(x).__name__}")
    return x, (lambda a: a)


class Codec:
    """One cache type at one head dimension (the engine's C++ codec).

    >>> c = turboquant.Codec("turbo3", 128)
    >>> codes = c.encode(x)            # x: (n, 128) float32 -> (n / block_tokens, block_bytes)
    >>> y = c.decode(codes)            # (n, 128) float32
    >>> s = c.score(q, codes)          # q . y_i for every vector, computed on the codes

    Inputs are NumPy arrays or CPU torch tensors of float32 (contiguous ones are read in place;
    strided ones are packed first); results come back as the input's kind. Wrong dtypes, shapes,
    devices and NaN/Inf raise :class:`Error`.
    """

    def __init__(self, name: str, dim: int, seed: int = 0x54510001, *, is_key: bool = True,
                 layer: int = 0, head: int = 0, rope: str = "normal") -> None:
        self._c = _core.Codec(name, dim, seed, is_key, layer, head, rope)

    name = property(lambda self: self._c.name, doc="The type's registry name.")
    dim = property(lambda self: self._c.dim, doc="Head dimension.")
    bpv = property(lambda self: self._c.bpv, doc="All-in bits per value (from the layout).")
    block_tokens = property(lambda self: self._c.block_tokens, doc="Vectors per code block.")
    block_bytes = property(lambda self: self._c.block_bytes, doc="Bytes per code block.")

    def encode(self, x):
        """(n, dim) float32 -> codes (n / block_tokens, block_bytes) uint8."""
        a, back = _array_in(x, "x")
        return back(self._c.encode(a))

    def decode(self, codes):
        """codes -> (n, dim) float32, the vectors as attention sees them."""
        a, back = _array_in(codes, "codes")
        return back(self._c.decode(a))

    def score(self, q, codes):
        """q (dim,) float32 and codes of n vectors -> (n,) float32 dot products, on the codes."""
        qa, back = _array_in(q, "q")
        ca, _ = _array_in(codes, "codes")
        return back(self._c.score(qa, ca))

    def weighted_sum(self, codes, w):
        """codes of n vectors and weights (n,) -> (dim,) float32 = sum_i w_i x_i, on the codes."""
        ca, back = _array_in(codes, "codes")
        wa, _ = _array_in(w, "w")
        return back(self._c.weighted_sum(ca, wa))

    def __repr__(self) -> str:
        return repr(self._c)


_CACHE_KEYS = ("k", "v", "layer_k", "layer_v", "boundary", "boundary_type", "residual", "sinks",
               "center_keys", "key_means", "seed", "codebooks")


class Model:
    """A GGUF model (llama / qwen2 architectures) run by the engine on the CPU.

    ``Model(path)`` loads the weights and the tokenizer; ``generate``, ``perplexity``,
    ``compare`` and ``calibrate`` return plain dicts with the numbers ``tq generate/perplexity/
    compare/calibrate --json`` print for the same options. Cache options are keywords: ``k``,
    ``v`` (cache types), ``layer_k`` / ``layer_v`` ({layer: type}), ``boundary``,
    ``boundary_type``, ``residual``, ``sinks``, ``center_keys``, ``seed``, ``codebooks`` (a
    path or :class:`Codebooks`). Keywords given to the constructor (or set by
    :meth:`TurboQuantPipeline.apply`) are the defaults of every call.
    """

    def __init__(self, path: Union[str, os.PathLike, None] = None, **cache: Any) -> None:
        self._m = _core.Model(os.fspath(path) if path is not None else "")
        self.cache_options: Dict[str, Any] = {}
        self.set_cache(**cache)

    def set_cache(self, **cache: Any) -> "Model":
        """Sets default cache options (checked now); returns self."""
        for k in cache:
            if k not in _CACHE_KEYS:
                raise Error(f"unknown cache option '{k}' (options: {', '.join(_CACHE_KEYS)})")
        self.cache_options.update(cache)
        return self

    def _opts(self, kw: Dict[str, Any]) -> Dict[str, Any]:
        o = dict(self.cache_options)
        o.update(kw)
        if "codebooks" in o and isinstance(o["codebooks"], os.PathLike):
            o["codebooks"] = os.fspath(o["codebooks"])
        return o

    path = property(lambda self: self._m.path)
    hparams = property(lambda self: self._m.hparams, doc="Hyperparameters (a dict).")

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        return self._m.tokenize(text, add_bos)

    def detokenize(self, ids: List[int]) -> str:
        return self._m.detokenize(list(ids)).decode("utf-8", errors="replace")

    def logits(self, tokens: List[int], **cache: Any) -> np.ndarray:
        """Last-token logits (n_vocab,) after one prefill of ``tokens``."""
        return self._m.logits(list(tokens), **self._opts(cache))

    def generate(self, prompt: str, n_predict: int = 64, temp: float = 0.0, top_p: float = 0.95,
                 chat: bool = False, ctx: int = 0, **cache: Any) -> Dict[str, Any]:
        """``tq generate --json``: text, tokens, prompt_tokens, prefill_tps, decode_tps,
        kv_bytes, bpv_k, bpv_v."""
        return self._m.generate(prompt, n_predict, temp, top_p, chat, ctx, **self._opts(cache))

    def perplexity(self, file: Union[str, os.PathLike, None] = None, *, text: str = "",
                   ctx: int = 512, chunks: int = -1, kld_base: Union[str, os.PathLike] = "",
                   **cache: Any) -> Dict[str, Any]:
        """``tq perplexity --json``: ppl, ppl_stderr, kld_mean/kld_p99/top1 (vs ``kld_base``),
        bpv_k, bpv_v, kv_bytes, tokens of a text file (default data/eval.txt) or ``text``."""
        return self._m.perplexity(os.fspath(file) if file else "", text, ctx, chunks,
                                  os.fspath(kld_base), **self._opts(cache))

    def compare(self, types: Union[str, List[str]], file: Union[str, os.PathLike, None] = None,
                *, text: str = "", ctx: int = 512, chunks: int = -1, decode: int = 16,
                **cache: Any) -> Dict[str, Any]:
        """``tq compare --json``: the f16 reference and every row of ``types`` over the same
        chunks (bpv, ppl, dppl_pct, kld_mean, kld_p99, top1, kv_bytes, decode_tps, ...)."""
        if not isinstance(types, str):
            types = ",".join(types)
        o = self._opts(cache)
        o.pop("k", None), o.pop("v", None)
        if "k" in cache or "v" in cache:
            raise Error("compare: give the cache types with types= (e.g. 'q8_0/turbo3'), not k=/v=")
        return self._m.compare(types, os.fspath(file) if file else "", text, ctx, chunks, decode,
                               **o)

    def calibrate(self, preset: Union[str, Dict[str, Any]] = "balanced",
                  output: Union[str, os.PathLike, None] = None,
                  file: Union[str, os.PathLike, None] = None, *, text: str = "",
                  samples: int = 128, ctx: int = 512, seed: int = 1, max_per_head: int = 4096,
                  vq_points: int = 4096) -> Dict[str, Any]:
        """``tq calibrate --json``: learns the polar-vq codebooks of ``preset`` (a name, or a dict
        of polar-vq parameters) or the kvquant data (``preset="kvquant"``) from ``samples``
        windows of ``ctx`` tokens of a text file (default data/calib.txt) or ``text``. The result
        has ``codebooks`` (a :class:`Codebooks`, pass it as ``codebooks=``); with ``output`` it
        is also written there (``files`` as in the CLI's JSON)."""
        params = {"preset": preset} if isinstance(preset, str) else dict(preset)
        r = self._m.calibrate(params, os.fspath(file) if file else "", text, samples, ctx, seed,
                              max_per_head, vq_points)
        if output is not None:
            r["codebooks"].save(os.fspath(output))
            r["files"] = [{"output": os.fspath(output), "preset": r["preset"]}]
        return r

    def __repr__(self) -> str:
        return f"Model({self.path!r})"


from .pipeline import (  # noqa: E402  (the pipeline uses the classes above)
    CalibrationSamples, PolarQuantConfig, TurboQuantConfig, TurboQuantPipeline,
    load_calibration_samples)
