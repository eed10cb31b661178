// turboquant — causal attention over the KV cache as stored (DESIGN.md §3 "Honest evaluation").
//
// q: T × n_head × head_dim (row-major [t][h][j]), the queries of positions pos0 .. pos0+T−1;
// query t attends to the stored positions [0, pos0 + t]. out has the same layout as q.
// GQA: query head h reads kv head h / (n_head / n_kv_head).
//
// Implementations of the same function (AttnPath):
//  - decode:    the decode algorithm of attention/decode.h over the stored segments (codes and
//               f16 rows, with positions): every query × KV head one task, the KV head's G
//               query heads together, scores and values from the codes through each codec's
//               SIMD fast path (Codec::attn_ops()), online softmax with exact merges, context
//               splits on threads. No copy of the cache is made. Used for generation (small T).
//  - codes:     the same algorithm with every codec run through the Codec interface
//               (score_at / accumulate / finish) instead of its fast path; for tests.
//  - tiled:     per (layer, kv-head), the stored codes are decoded into a transient f32 tile
//               (freed after the call; not a cache copy), then sgemm Q·Kᵀ, causal mask, softmax,
//               sgemm P·V, in row blocks so that masked columns are mostly skipped. Used for
//               prefill (large T), where it is much faster than per-token scoring.
//  - reference: plain scalar code in double precision over read() of the stored values; for
//               tests only.
// kAuto takes tiled for T ≥ attention_tiled_threshold(), else decode.
#pragma once
#include "cache/kv_cache.h"

namespace tq {

enum class AttnPath { kAuto, kCodes, kTiled, kReference, kDecode, kDriver = kDecode };

void attention(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
               int pos0, float scale, float* out, AttnPath path = AttnPath::kAuto);

// T at and above which kAuto takes the tiled path.
int attention_tiled_threshold();

}  // namespace tq
