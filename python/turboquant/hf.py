"""Hugging Face transformers integration: a cache that stores every layer's keys and values as
turboquant codes, and the ``"turboquant"`` attention implementation that computes attention on
those codes (DESIGN.md §10).

    import turboquant.hf                      # registers attn_implementation="turboquant"
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="turboquant")
    out = model.generate(**inputs, past_key_values=turboquant.hf.Cache(k="turbo3", v="turbo3"))

How it works: ``Cache.update`` only records the layer's new keys and values; the attention
function (which knows the layer, its head counts and the query) appends them to the engine's
paged cache (the same one the ``tq`` tool uses: sinks, residual window, boundary layers,
per-layer types, key centring) and runs the engine's causal attention on the stored codes:
prefill through the decoded-tile path, single-token decode through the SIMD decode driver. No
full-precision copy of the history is kept or rebuilt per step (unlike transformers'
``QuantizedCache``, which dequantizes the whole history every step).

With another attention implementation the recorded keys and values never reach the codes; the
cache notices at the next step and raises :class:`turboquant.Error` instead of producing wrong
text. With any other cache (``DynamicCache``, no cache), ``attn_implementation="turboquant"``
runs transformers' SDPA attention, so the model still works.

CPU tensors run the engine's CPU kernels. CUDA tensors need the package built with CUDA
(``TQ_CUDA=ON``); without it they raise :class:`turboquant.Error`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache as _HfCache
from transformers.cache_utils import CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from . import Codebooks, Error, KvCache, _core

__all__ = ["Cache", "attention", "ATTN_IMPLEMENTATION", "enable"]

ATTN_IMPLEMENTATION = "turboquant"


class _Layer(CacheLayerMixin):
    """One model layer of a :class:`Cache`: its stored length and the chunk waiting for the
    attention function."""

    is_compileable = False
    is_sliding = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, parent: "Cache", idx: int) -> None:
        super().__init__()
        self.parent, self.idx = parent, idx
        self.length = 0
        self.pending: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if self.pending is not None:
            raise Error("turboquant.hf.Cache: the last step's keys and values never reached the "
                        "turboquant attention (the model runs another attention implementation): "
                        "load the model with attn_implementation='turboquant' after "
                        "`import turboquant.hf`, or call turboquant.hf.enable(model)")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.pending = (key_states, value_states)
        self.length += key_states.shape[-2]
        # Tags for the attention function: which cache and layer these states belong to.
        key_states._tq_layer = self
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> Tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.parent.max_len

    def reset(self) -> None:
        self.parent._reset()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove != 0:
            raise Error("turboquant.hf.Cache cannot crop: codes are appended once")

    def reorder_cache(self, beam_idx) -> None:
        raise Error("turboquant.hf.Cache does not support beam search (num_beams > 1)")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if repeats != 1:
            raise Error("turboquant.hf.Cache does not support num_return_sequences > 1 or "
                        "beam search")

    def batch_select_indices(self, indices) -> None:
        raise Error("turboquant.hf.Cache does not support selecting batch rows")

    def offload(self) -> None:
        pass

    def prefetch(self) -> None:
        pass


class Cache(_HfCache):
    """A transformers cache storing K/V as turboquant codes (use with attn_implementation
    ``"turboquant"``).

    Options (the ``tq`` tool's flags): ``k``, ``v`` (cache types, see ``turboquant.types()``),
    ``layer_k`` / ``layer_v`` ({layer: type}), ``boundary`` (first and last N layers use
    ``boundary_type``: default f16 on CPU, bf16 on CUDA), ``residual`` (newest R tokens stay
    f16), ``sinks`` (first S tokens stay f16), ``center_keys`` (per-channel key mean subtracted
    first: None = the key type's default, on for turbo*/polar/polar-vq and off for the
    baselines; True/False = every/no layer; the CUDA formats store no mean, so on CUDA None
    means off and True is refused), ``seed`` (rotations), ``codebooks`` (a :class:`turboquant.Codebooks` for polar-vq /
    kvquant types, made on this model's keys, e.g. by :class:`turboquant.TurboQuantPipeline`),
    ``max_len`` (tokens per sequence the pool holds; the pool is allocated at the first step),
    ``page_tokens``.
    """

    def __init__(self, k: str = "turbo3", v: str = "turbo3", *, layer_k=None, layer_v=None,
                 boundary: int = 0, boundary_type: Optional[str] = None, residual: int = 0,
                 sinks: int = 0, center_keys: Optional[bool] = None, seed: int = 0x54510001,
                 codebooks: Optional[Codebooks] = None, max_len: int = 4096,
                 page_tokens: int = 256) -> None:
        super().__init__(layer_class_to_replicate=_Layer)
        self.options: Dict[str, Any] = dict(
            k=k, v=v, layer_k=layer_k, layer_v=layer_v, boundary=boundary,
            boundary_type=boundary_type, residual=residual, sinks=sinks, center_keys=center_keys,
            seed=seed, codebooks=codebooks, page_tokens=page_tokens)
        if not isinstance(max_len, int) or max_len <= 0:
            raise Error("max_len must be a positive int")
        self.max_len = max_len
        self._check_options()  # unknown types, missing codebooks: now, not at the first step
        self.engine: Optional[KvCache] = None
        self.seqs: List[int] = []
        self.cuda = None  # the CUDA cache when the tensors are on a GPU

    def _check_options(self) -> None:
        o = self.options
        named = [o["k"], o["v"], o["boundary_type"]]
        for m in (o["layer_k"], o["layer_v"]):
            if isinstance(m, dict):
                named += list(m.values())
        named = [t for t in named if t is not None]
        for t in named:
            _core.describe_type(t)  # unknown type -> Error
        calibrated = {r["name"] for r in _core.types(64) if r["needs_calibration"]}
        needs = [t for t in named if t in calibrated]
        if needs and o["codebooks"] is None:
            raise Error(f"cache type '{needs[0]}' needs learned codebooks: make them with "
                        "turboquant.TurboQuantPipeline (or turboquant.calibrate_polarvq) and pass "
                        "codebooks=")

    # transformers' Cache API -------------------------------------------------------------
    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        while len(self.layers) <= layer_idx:
            self.layers.append(_Layer(self, len(self.layers)))
        return self.layers[layer_idx].update(key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if layer_idx >= len(self.layers):
            return 0
        return self.layers[layer_idx].length

    def get_max_length(self, layer_idx: Optional[int] = None) -> int:
        return self.max_len

    def _reset(self) -> None:
        self.engine, self.cuda, self.seqs = None, None, []
        for layer in self.layers:
            layer.length, layer.pending = 0, None

    def reset(self) -> None:
        self._reset()

    # Engine side -----------------------------------------------------------------------
    @property
    def kv_bytes(self) -> int:
        """Bytes stored (codes, f16 sinks/window) over all layers; 0 before the first step."""
        if self.cuda is not None:
            return self.cuda.kv_bytes
        return self.engine.kv_bytes if self.engine is not None else 0

    @property
    def bpv(self) -> Tuple[float, float]:
        """All-in bits per stored value (keys, values)."""
        if self.cuda is not None:
            return self.cuda.bpv
        if self.engine is None:
            return (0.0, 0.0)
        return (self.engine.bpv_k, self.engine.bpv_v)

    def _start(self, module, key: torch.Tensor) -> None:
        self._start_shape(module.config, key)

    def _start_shape(self, cfg, key: torch.Tensor) -> None:
        n_layer = cfg.num_hidden_layers
        B, H, _, d = key.shape
        rope_inv_freq = _rope_inv_freq(cfg, d)
        o = {k: v for k, v in self.options.items() if v is not None}
        if key.device.type == "cuda":
            from . import _cuda_hf

            self.cuda = _cuda_hf.CudaCache(n_layer, B, H, d, self.max_len, o)
            return
        pool = B * (self.max_len + self.options["page_tokens"])
        self.engine = KvCache(n_layer, H, d, rope="neox", rope_inv_freq=rope_inv_freq,
                              max_tokens=pool, max_seqs=B, **o)
        self.seqs = [self.engine.new_seq() for _ in range(B)]

    def load(self, other: _HfCache, config) -> "Cache":
        """Stores every layer of another transformers cache (e.g. a ``DynamicCache`` after a
        prefill with SDPA) as codes in this empty cache; decoding then continues on this one.
        ``config``: the model's config. Returns self."""
        if self.engine is not None or self.cuda is not None or self.layers:
            raise Error("turboquant.hf.Cache.load: the cache is not empty")
        cfg = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        src = [layer for layer in other.layers]
        if len(src) != cfg.num_hidden_layers or any(getattr(l, "keys", None) is None for l in src):
            raise Error("turboquant.hf.Cache.load: the source cache must hold every layer")
        with torch.no_grad():
            for idx, layer in enumerate(src):
                k, v = layer.keys, layer.values
                if idx == 0:
                    self._start_shape(cfg, k)
                if k.shape[-2] > self.max_len:
                    raise Error(f"turboquant.hf.Cache.load: {k.shape[-2]} tokens exceed max_len="
                                f"{self.max_len}")
                mine = _Layer(self, idx)
                mine.lazy_initialization(k, v)
                mine.length = k.shape[-2]
                self.layers.append(mine)
                if self.cuda is not None:
                    self.cuda.append(idx, k, v)
                else:
                    self.engine.append_batch(self.seqs, idx, k.detach().float(),
                                             v.detach().float())
        return self

    def _attend(self, layer: _Layer, module, query, attention_mask, scaling) -> torch.Tensor:
        k, v = layer.pending
        layer.pending = None
        if self.engine is None and self.cuda is None:
            self._start(module, k)
        if layer.length > self.max_len:
            raise Error(f"turboquant.hf.Cache: {layer.length} tokens exceed max_len="
                        f"{self.max_len}: pass a larger max_len to turboquant.hf.Cache")
        _check_mask(attention_mask, query.shape[2], layer.length)
        if self.cuda is not None:
            if query.device.type != "cuda":
                raise Error(f"turboquant.hf: tensors on {query.device} (the cache started on CUDA)")
            return self.cuda.attend(layer.idx, query, k, v, scaling)
        if query.device.type != "cpu":
            raise Error(f"turboquant.hf: tensors on {query.device} (the cache started on CPU)")
        if k.shape[0] != len(self.seqs):
            raise Error(f"turboquant.hf.Cache: batch size changed from {len(self.seqs)} to "
                        f"{k.shape[0]}")
        dt = query.dtype
        kf, vf, qf = (t.detach().float() for t in (k, v, query))
        self.engine.append_batch(self.seqs, layer.idx, kf, vf)
        out = self.engine.attention_batch(self.seqs, layer.idx, qf, float(scaling))
        return torch.from_numpy(out).to(dt)


def _rope_inv_freq(cfg, d: int) -> List[float]:
    """The model's RoPE frequencies theta^(-2i/d) (default RoPE), for the types that store keys
    before RoPE (kvquant); empty (the engine's base 10000) when the config has no theta."""
    params = getattr(cfg, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", None))
    if theta is None:
        return []
    if params.get("rope_type", "default") != "default":
        # Scaled RoPE (llama3, yarn, ...): not expressible as one theta. Only the kvquant types
        # (keys stored before RoPE) use the frequencies; docs/python.md says they need default RoPE.
        return []
    return [float(theta) ** (-2.0 * i / d) for i in range(d // 2)]


def _check_mask(mask, T: int, L: int) -> None:
    """The engine attends causally over every stored position; refuse any other mask (padding)."""
    if mask is None:
        return
    m = mask
    if m.dtype != torch.bool:
        m = m == 0  # additive masks: 0 where allowed
    kv = m.shape[-1]
    pos = torch.arange(kv, device=m.device)
    q = torch.arange(L - T, L, device=m.device).unsqueeze(1)
    causal = pos.unsqueeze(0) <= q  # (T, kv)
    if kv < L or not bool((m[..., -T:, :] == causal[:, :kv]).all()):
        raise Error("turboquant attention: only causal attention over every stored position is "
                    "supported (a padded batch's attention_mask is not): run sequences of equal "
                    "length, or one at a time")


def attention(module, query, key, value, attention_mask, dropout: float = 0.0,
              scaling: Optional[float] = None, **kwargs) -> Tuple[torch.Tensor, None]:
    """The ``"turboquant"`` attention implementation: on the codes of a :class:`Cache`, else
    transformers' SDPA attention."""
    layer = getattr(key, "_tq_layer", None)
    if layer is None or layer.pending is None or layer.pending[0] is not key:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if kwargs.get("sliding_window") is not None or getattr(module, "sliding_window", None):
        raise Error("turboquant attention: sliding-window layers are not supported")
    if kwargs.get("softcap") is not None:
        raise Error("turboquant attention: attention logit softcapping is not supported")
    if module.training and dropout > 0:
        raise Error("turboquant attention: inference only (no dropout, no gradients)")
    if scaling is None:
        scaling = 1.0 / math.sqrt(query.shape[-1])
    with torch.no_grad():
        out = layer.parent._attend(layer, module, query, attention_mask, scaling)
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, attention)
# The masks of SDPA: None for plain causal attention (what the engine does), a tensor otherwise.
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)


def enable(model) -> Any:
    """Switches a loaded transformers model to the ``"turboquant"`` attention implementation;
    returns the model."""
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model
