"""The GPU side of turboquant.hf.Cache: one engine GpuCache per layer (src/cuda/tq_cuda.h: the
append kernel packs new bf16 keys/values into 32-token pages, flash-decoding reads the codes),
driven with the tensors' device pointers on torch's current stream. Needs the package built
with CUDA (TQ_CUDA=ON); formats: bf16, q8_0, q4_0, fp8_e4m3, turbo2, turbo3, turbo4, turbo2.5,
turbo3.5 (and turbo3p for keys). The CPU cache's f16 sinks, residual window and key centring have
no GPU form yet and are refused."""
from __future__ import annotations

from typing import Any, Dict, List

import torch

from . import Error, _core

PAGE_TOKENS = 32  # tokens per GPU page (formats.cuh)


def _type_of(o: Dict[str, Any], layer: int, n_layer: int, is_key: bool) -> str:
    per = o.get("layer_k" if is_key else "layer_v") or {}
    if isinstance(per, str):
        raise Error("turboquant.hf on CUDA: give layer_k / layer_v as {layer: type} dicts")
    if layer in per:
        return per[layer]
    nb = o.get("boundary", 0)
    if layer < nb or layer >= n_layer - nb:
        return o.get("boundary_type", "bf16")
    return o["k" if is_key else "v"]


class CudaCache:
    def __init__(self, n_layer: int, B: int, H: int, d: int, max_len: int,
                 o: Dict[str, Any]) -> None:
        if not getattr(_core, "HAS_CUDA", False):
            raise Error("turboquant.hf: CUDA tensors need turboquant built with CUDA "
                        "(scripts/python_device_bench.sh shows the build); this build is CPU-only")
        for opt in ("sinks", "residual"):
            if o.get(opt, 0):
                raise Error(f"turboquant.hf on CUDA: {opt} (f16 tokens) has no GPU form yet")
        if o.get("center_keys"):
            raise Error("turboquant.hf on CUDA: center_keys has no GPU form yet")
        if o.get("codebooks") is not None:
            raise Error("turboquant.hf on CUDA: polar-vq / kvquant types have no GPU form yet")
        self.B, self.H, self.d = B, H, d
        self.max_pages = (max_len + PAGE_TOKENS - 1) // PAGE_TOKENS
        n_pages = B * self.max_pages
        seed = o.get("seed", 0x54510001)
        self.layers = [_core.GpuCache(_type_of(o, l, n_layer, True),
                                      _type_of(o, l, n_layer, False), d, H, n_pages, seed)
                       for l in range(n_layer)]
        dev = torch.device("cuda", torch.cuda.current_device())
        # Sequence b owns pages [b * max_pages, (b + 1) * max_pages).
        self.block_table = torch.arange(n_pages, dtype=torch.int32, device=dev).view(B, -1)
        self.lengths: List[int] = [0] * n_layer
        self.max_len = max_len
        types = [(_type_of(o, l, n_layer, True), _type_of(o, l, n_layer, False))
                 for l in range(n_layer)]
        self.bpv = (sum(_core.cuda_format_bpv(t[0], d) for t in types) / n_layer,
                    sum(_core.cuda_format_bpv(t[1], d) for t in types) / n_layer)

    @property
    def kv_bytes(self) -> int:
        """Bytes of the pages the sequences use (codes and per-token scalars)."""
        pages = sum((n + PAGE_TOKENS - 1) // PAGE_TOKENS for n in self.lengths) * self.B
        return sum(c.page_bytes for c in self.layers) // len(self.layers) * pages

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> int:
        """Packs k, v ([B, H, T, d], any float dtype) into the layer's pages; returns the first
        new position."""
        B, _, T, _ = k.shape
        if B != self.B or k.shape[1] != self.H or k.shape[3] != self.d or k.device.type != "cuda":
            raise Error(f"turboquant.hf: keys of shape {tuple(k.shape)} do not fit the cache "
                        f"(B={self.B}, H={self.H}, d={self.d})")
        L0 = self.lengths[layer]
        if L0 + T > self.max_len:
            raise Error(f"turboquant.hf.Cache: {L0 + T} tokens exceed max_len={self.max_len}: "
                        "pass a larger max_len to turboquant.hf.Cache")
        # [B, H, T, d] -> bf16 [B][T][H][d], contiguous, as the append kernel reads it.
        kb = k.transpose(1, 2).to(torch.bfloat16).contiguous()
        vb = v.transpose(1, 2).to(torch.bfloat16).contiguous()
        start = torch.full((B,), L0, dtype=torch.int32, device=k.device)
        self.layers[layer].append(kb.data_ptr(), vb.data_ptr(), B, T, self.block_table.data_ptr(),
                                  self.max_pages, start.data_ptr(),
                                  torch.cuda.current_stream().cuda_stream)
        self.lengths[layer] = L0 + T
        return L0

    def attend(self, layer: int, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float) -> torch.Tensor:
        """Appends the new k, v, then attention of the new queries on the layer's codes."""
        B, Hq, T, d = query.shape
        L0 = self.append(layer, k, v)
        c = self.layers[layer]
        stream = torch.cuda.current_stream().cuda_stream
        start = torch.full((B,), L0, dtype=torch.int32, device=query.device)
        if T == 1:
            q = query[:, :, 0, :].float().contiguous()  # [B][Hq][d]
            out = torch.empty_like(q)
            lens = start + 1
            c.decode(q.data_ptr(), out.data_ptr(), B, Hq, self.block_table.data_ptr(),
                     self.max_pages, lens.data_ptr(), L0 + 1, float(scale), stream)
            return out.unsqueeze(1).to(query.dtype)  # [B, 1, Hq, d]
        outs = []
        for b in range(B):
            q = query[b].transpose(0, 1).float().contiguous()  # [T][Hq][d]
            out = torch.empty_like(q)
            c.prefill(q.data_ptr(), out.data_ptr(), T, Hq, self.block_table[b].data_ptr(),
                      self.max_pages, L0, float(scale), stream)
            outs.append(out)
        return torch.stack(outs).to(query.dtype)  # [B, T, Hq, d]
