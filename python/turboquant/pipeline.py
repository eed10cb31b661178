"""The original description's API (its usage guide, DESIGN.md §10):

    calibration_data = load_calibration_samples("data/calib.txt", num_samples=16, max_seq_len=512)
    polar_config = PolarQuantConfig(magnitude_bits=2, angle_bits=4, group_size=128)
    turbo_config = TurboQuantConfig(codebook_size=256, vector_size=16, num_subspaces=4)
    quantizer = TurboQuantPipeline(polar_config, turbo_config)
    quantized_model = quantizer.apply(model, calibration_data)

The two configs name the parameters of the engine's polar-vq type (DESIGN.md §2.4): stage 1 stores a
key's RoPE pairs as magnitude (``magnitude_bits``) and angle (``angle_bits``, per pair-channel
centroids learned on calibration keys), magnitudes grouped by ``group_size`` (within a token
when 64, per pair-channel over a block of tokens when 128: the presets' layouts); stage 2
(``TurboQuantConfig``) product-quantizes the stage-1 residual: ``num_subspaces`` channel ranges,
sub-vectors of ``vector_size`` values, ``codebook_size`` k-means entries each. Only the presets'
parameter sets are accepted by default (other ones raise an Error listing them);
``allow_custom=True`` calibrates any other valid set exactly as given (type polar-vq:custom).

``apply`` calibrates the codebooks on the given texts with the model itself and returns the
model set up with the compressed cache: a :class:`turboquant.Model` (GGUF) gets the polar-vq
type and codebooks as its default cache options; a transformers model gets the ``turboquant``
attention and a ``generate`` that uses a :class:`turboquant.hf.Cache` with them unless given
another ``past_key_values``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import Codebooks, Error, Model, _core

__all__ = ["PolarQuantConfig", "TurboQuantConfig", "TurboQuantPipeline",
           "load_calibration_samples", "CalibrationSamples"]


@dataclass(frozen=True)
class PolarQuantConfig:
    """Stage 1 of polar-vq: bits of a RoPE pair's magnitude and angle, and the magnitude group
    (64: groups within a token; 128: per pair-channel over blocks of 128 tokens)."""

    magnitude_bits: int = 4
    angle_bits: int = 2
    group_size: int = 64


@dataclass(frozen=True)
class TurboQuantConfig:
    """Stage 2 of polar-vq: product quantization of the stage-1 residual."""

    codebook_size: int = 256
    vector_size: int = 8
    num_subspaces: int = 4


def _configs_of(p: Dict[str, Any]):
    group = p["key_block_tokens"] if p["key_block_tokens"] > 1 else p["group_size"]
    polar = PolarQuantConfig(p["mag_bits"], p["angle_bits"], group)
    turbo = (TurboQuantConfig(p["vq_size"], p["vq_dim"], p["subspaces"])
             if p["vq_size"] > 0 else None)
    return polar, turbo


def _preset_table() -> Dict[str, Any]:
    """Every polar-vq preset as (PolarQuantConfig, TurboQuantConfig or None), from the engine."""
    return {n: _configs_of(_core.polarvq_preset(n)) for n in _core.polarvq_preset_names()}


def _describe(polar, turbo) -> str:
    s = (f"PolarQuantConfig(magnitude_bits={polar.magnitude_bits}, angle_bits={polar.angle_bits},"
         f" group_size={polar.group_size})")
    if turbo is None:
        return s + " without stage 2"
    return s + (f" + TurboQuantConfig(codebook_size={turbo.codebook_size}, vector_size="
                f"{turbo.vector_size}, num_subspaces={turbo.num_subspaces})")


class CalibrationSamples(list):
    """Calibration texts (a list of str) with the sampling they were loaded for."""

    def __init__(self, texts: Sequence[str], num_samples: int, max_seq_len: int,
                 source: str) -> None:
        super().__init__(texts)
        self.num_samples, self.max_seq_len, self.source = num_samples, max_seq_len, source

    def text(self) -> str:
        return "\n\n".join(self)


def load_calibration_samples(path_or_texts: Union[str, os.PathLike, Sequence[str], None] = None,
                             num_samples: int = 128, max_seq_len: int = 512, *,
                             dataset: Optional[str] = None) -> CalibrationSamples:
    """Calibration text from a local file (or a list of strings): ``num_samples`` windows of
    ``max_seq_len`` tokens are drawn from it when the pipeline runs. Nothing is downloaded:
    ``dataset="c4"`` (the original description's call) raises unless ``c4`` is a local file."""
    src = path_or_texts if path_or_texts is not None else dataset
    if src is None:
        raise Error("load_calibration_samples: give a local text file or a list of strings")
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise Error("load_calibration_samples: num_samples must be a positive int")
    if not isinstance(max_seq_len, int) or max_seq_len < 2:
        raise Error("load_calibration_samples: max_seq_len must be an int >= 2")
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.isfile(path):
            raise Error(f"load_calibration_samples: '{path}' is not a local text file (nothing is "
                        "downloaded: pass a file such as data/calib.txt, or a list of strings)")
        with open(path, encoding="utf-8", errors="replace") as f:
            texts = [f.read()]
        label = path
    else:
        texts = list(src)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise Error("load_calibration_samples: expected a non-empty list of strings")
        label = f"<{len(texts)} texts>"
    if not any(t.strip() for t in texts):
        raise Error("load_calibration_samples: the calibration text is empty")
    return CalibrationSamples(texts, num_samples, max_seq_len, label)


class TurboQuantPipeline:
    """Calibrates polar-vq codebooks for a model and sets the model up with that compressed
    cache (see the module docstring). ``turbo_config=None``: stage 1 only."""

    def __init__(self, polar_config: PolarQuantConfig,
                 turbo_config: Optional[TurboQuantConfig] = None, *, allow_custom: bool = False,
                 seed: int = 1) -> None:
        if not isinstance(polar_config, PolarQuantConfig):
            raise Error("TurboQuantPipeline: polar_config must be a PolarQuantConfig")
        if turbo_config is not None and not isinstance(turbo_config, TurboQuantConfig):
            raise Error("TurboQuantPipeline: turbo_config must be a TurboQuantConfig or None")
        self.polar_config, self.turbo_config, self.seed = polar_config, turbo_config, seed
        table = _preset_table()
        self.preset = next((n for n, (p, t) in table.items()
                            if p == polar_config and t == turbo_config), None)
        if self.preset is not None:
            self.params: Dict[str, Any] = {"preset": self.preset}
        elif allow_custom:
            self.params = self._custom_params()
        else:
            lines = "; ".join(f"{n}: {_describe(p, t)}" for n, (p, t) in table.items())
            raise Error(f"{_describe(polar_config, turbo_config)} is no polar-vq preset, and "
                        f"parameters are not changed silently. Presets: {lines}. Use one of "
                        "these, or TurboQuantPipeline(..., allow_custom=True) to calibrate "
                        "exactly the given parameters (type polar-vq:custom; values then use "
                        "magnitude_bits bits in groups of group_size channels, stage 2 on keys "
                        "and values)")
        self.cache_type = "polar-vq:" + (self.preset or "custom")
        self.codebooks: Optional[Codebooks] = None

    def _custom_params(self) -> Dict[str, Any]:
        p, t = self.polar_config, self.turbo_config
        params = {"mag_bits": p.magnitude_bits, "angle_bits": p.angle_bits,
                  "value_bits": p.magnitude_bits, "key_block_tokens": 1,
                  "group_size": p.group_size, "value_group": p.group_size, "vq_size": 0}
        if t is not None:
            params.update(vq_size=t.codebook_size, vq_dim=t.vector_size,
                          subspaces=t.num_subspaces, vq_keys=1, vq_values=1)
        return params

    # ------------------------------------------------------------------------------------
    def apply(self, model, calibration_data: CalibrationSamples, tokenizer=None, **cache: Any):
        """Calibrates on ``calibration_data`` and returns ``model`` set up with the compressed
        cache (extra keywords are cache options: boundary, sinks, residual, ...). A
        transformers model needs its ``tokenizer`` (a callable returning input_ids)."""
        if not isinstance(calibration_data, CalibrationSamples):
            calibration_data = load_calibration_samples(calibration_data)
        if isinstance(model, Model):
            return self._apply_gguf(model, calibration_data, cache)
        if hasattr(model, "config") and hasattr(model, "generate"):
            return self._apply_hf(model, calibration_data, tokenizer, cache)
        raise Error("TurboQuantPipeline.apply: expected a turboquant.Model or a transformers "
                    "causal LM")

    def _apply_gguf(self, model: Model, data: CalibrationSamples, cache: Dict[str, Any]):
        r = model.calibrate(self.params, text=data.text(), samples=data.num_samples,
                            ctx=data.max_seq_len, seed=self.seed)
        self.codebooks = r["codebooks"]
        self.report = {k: v for k, v in r.items() if k != "codebooks"}
        model.set_cache(k=self.cache_type, v=self.cache_type, codebooks=self.codebooks, **cache)
        return model

    def _apply_hf(self, model, data: CalibrationSamples, tokenizer, cache: Dict[str, Any]):
        import torch

        from . import hf

        if tokenizer is None:
            raise Error("TurboQuantPipeline.apply: a transformers model needs tokenizer= (its "
                        "tokenizer, to turn the calibration text into tokens)")
        ids = tokenizer(data.text(), return_tensors="pt")["input_ids"][0]
        n, T = data.num_samples, data.max_seq_len
        if ids.numel() < T:
            raise Error(f"calibration text has {ids.numel()} tokens, fewer than max_seq_len={T}")
        # num_samples windows of T tokens, evenly spread (overlapping when the text is short).
        starts = np.linspace(0, ids.numel() - T, num=n).round().astype(int)
        keys: List[List[Any]] = []
        values: List[List[Any]] = []
        from transformers import DynamicCache

        dev = next(model.parameters()).device
        with torch.no_grad():
            for s in starts:
                kv = DynamicCache()
                model(input_ids=ids[s:s + T].unsqueeze(0).to(dev), past_key_values=kv,
                      use_cache=True)
                for layer_idx, layer in enumerate(kv.layers):
                    if len(keys) <= layer_idx:
                        keys.append([]), values.append([])
                    # (1, H, T, d) post-RoPE, as the cache receives them -> (T, H, d)
                    keys[layer_idx].append(layer.keys[0].transpose(0, 1).float().cpu().numpy())
                    values[layer_idx].append(layer.values[0].transpose(0, 1).float().cpu().numpy())
        k_all = [np.ascontiguousarray(np.concatenate(k)) for k in keys]
        v_all = [np.ascontiguousarray(np.concatenate(v)) for v in values]
        self.codebooks = _core.calibrate_polarvq(self.params, k_all, v_all, rope="neox",
                                                 seed=self.seed, ctx=T)
        opts = dict(k=self.cache_type, v=self.cache_type, codebooks=self.codebooks)
        opts.update(cache)
        hf.Cache(**opts)  # options checked now
        hf.enable(model)
        original = model.generate

        @functools.wraps(original)
        def generate(*args, **kwargs):
            if kwargs.get("past_key_values") is None:
                kwargs["past_key_values"] = hf.Cache(**opts)
            return original(*args, **kwargs)

        model.generate = generate
        model.turboquant_cache = lambda: hf.Cache(**opts)
        return model
