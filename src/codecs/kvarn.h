// KVarN (Müller et al., "KVarN: Variance-Normalized KV-Cache Quantization Mitigates Error
// Accumulation in Reasoning Tasks", arXiv 2606.03458, June 2026) as a baseline cache type:
// its constants, its block layouts and the variance normalisation, shared by the codec
// (kvarn.cpp) and its tests. Everything is as the authors ship it in their vLLM backend
// (github.com/huawei-csl/KVarN, preset kvarn_k4v2_g128, read 2026-12; docs/kvarn.md lists
// what came from where and what differs).
//
// Pipeline per tile of G = 128 consecutive tokens of one (layer, kv-head):
//   1. rotation: y = H x / √d for every token, H the Sylvester Hadamard matrix of order d (not
//      randomised, the same for every head and layer; d a power of two);
//   2. variance normalisation of the tile (R × C; K as [d channels × G tokens], V as
//      [G tokens × d channels]): log-domain Sinkhorn-like alternation, 8 iterations, each
//      first dividing every column by its standard deviation, then every row by its own
//      (unbiased std, clipped to [1e-3, 1e3]; accumulated log-scales clipped to [-0.3, 10]);
//      the iterate with the least imbalance max(σ_col)/min(σ_col) + max(σ_row)/min(σ_row)
//      (the unscaled tile included) is kept;
//   3. asymmetric round-to-nearest of every row of the balanced tile over its whole length:
//      lo = min, scale = max((max − min)/(2^b − 1), 1e-10), q = clamp(round((x − lo)/scale)),
//      half to even — keys per channel over the G tokens, values per token over the d
//      channels;
//   4. the row's RTN scale and minimum are folded into the row's Sinkhorn scale and stored as
//      fp16 with the other axis' fp16 Sinkhorn scale:
//        K[j][t] = (q·S_j + Z_j)·T_t   (S_j = s_chan_j·scale_j, Z_j = s_chan_j·lo_j, T_t = s_tok_t)
//        V[t][j] = (q·S_t + Z_t)·C_j   (S_t = s_tok_t·scale_t,  Z_t = s_tok_t·lo_t,  C_j =
//        s_chan_j)
//   and the first 128 tokens of a sequence stay f16 for ever (the "sink" tile) and the tokens of
//   the incomplete newest tile stay f16 until it fills — the KV cache's sink and pending
//   storage (KvCacheOptions::sink_tokens = 128, residual_window = 0).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq::kvarn {

constexpr int kTile = 128;         // tokens per tile (the preset's g128; vLLM block size)
constexpr int kSinkhornIters = 8;  // KVarNConfig.sinkhorn_iters (the runtime's default)
constexpr float kClipStdMin = 1e-3f, kClipStdMax = 1e3f;
constexpr float kLogScaleMin = -0.3f, kLogScaleMax = 10.0f;
constexpr float kMinRtnScale = 1e-10f;
constexpr int kDefaultSinks = 128;  // KVarNConfig.sink_tokens: the first tile stays f16

// Byte offsets inside one block (one tile of one head). Key block (b-bit keys, head dim d):
//   [0, d·G·b/8)        codes: channel j's row of G codes (token t at bits [t·b, (t+1)·b) of the
//                       row, LSB-first: 4-bit → token 2i in the low nibble of byte i), rows
//                       back to back, channel 0 first;
//   then d fp16  S_j    (absorbed per-channel scale),
//   then d fp16  Z_j    (absorbed per-channel zero),
//   then G fp16  T_t    (per-token Sinkhorn scale).
// Value block: [G·d·b/8 codes: token t's row of d codes, LSB-first][d fp16 C_j (per-channel
//   Sinkhorn scale)][G fp16 S_t (absorbed per-token scale)][G fp16 Z_t (absorbed per-token
//   zero)]. The same record order as the authors' cache (KVarNConfig offsets).
struct Layout {
  size_t codes, a, b, c, bytes;  // offsets of the codes and the three fp16 arrays; total
};
constexpr Layout key_layout(int d, int bits) {
  const size_t codes = size_t(d) * kTile * size_t(bits) / 8;
  return {0, codes, codes + 2 * size_t(d), codes + 4 * size_t(d),
          codes + 4 * size_t(d) + 2 * kTile};
}
constexpr Layout value_layout(int d, int bits) {
  const size_t codes = size_t(kTile) * d * size_t(bits) / 8;
  return {0, codes, codes + 2 * size_t(d), codes + 2 * size_t(d) + 2 * kTile,
          codes + 2 * size_t(d) + 4 * kTile};
}

// The layouts as structs at the head dims of the project's models (64: SmolLM2, 128: Qwen2.5);
// the static_asserts in kvarn.cpp tie them to the offsets above.
template <int D, int B>
struct KeyBlock {
  uint8_t codes[D * kTile * B / 8];
  uint16_t s_chan[D];     // S_j
  uint16_t z_chan[D];     // Z_j
  uint16_t s_tok[kTile];  // T_t
};
template <int D, int B>
struct ValueBlock {
  uint8_t codes[kTile * D * B / 8];
  uint16_t s_chan[D];     // C_j
  uint16_t s_tok[kTile];  // S_t
  uint16_t z_tok[kTile];  // Z_t
};

// Step 2 on an R × C tile (row-major floats): s_col (C) and s_row (R) such that
// tile[r][c] / s_col[c] / s_row[r] is the balanced tile. Returns the kept iterate's imbalance.
double variance_normalize(const float* tile, int R, int C, int iters, float* s_col, float* s_row);
// max σ_col / min σ_col + max σ_row / min σ_row of tile[r][c] / s_col[c] / s_row[r] (the
// minima clamped at 1e-8, unbiased std).
double imbalance(const float* tile, int R, int C, const float* s_col, const float* s_row);

}  // namespace tq::kvarn
