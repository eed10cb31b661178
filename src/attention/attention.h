// turboquant — causal attention over the KV cache as stored (SPEC §3 "Honest evaluation").
//
// q: T × n_head × head_dim (row-major [t][h][j]), the queries of positions pos0 .. pos0+T−1;
// query t attends to the stored positions [0, pos0 + t]. out has the same layout as q.
// GQA: query head h reads kv head h / (n_head / n_kv_head).
//
// Three implementations of the same function:
//  - codes:     per query head, prepare_query() once, score() on the stored codes page by page,
//               online softmax (running max and sum), accumulate() values from the codes,
//               finish() once. No copy of the cache is made. Used for generation (small T).
//  - tiled:     per (layer, kv-head), the stored codes are decoded into a transient f32 tile
//               (freed after the call; not a cache copy), then sgemm Q·Kᵀ, causal mask, softmax,
//               sgemm P·V, in row blocks so that masked columns are mostly skipped. Used for
//               prefill (large T), where it is much faster than per-token scoring: measured
//               on the default model, 512-token prefill, 1 thread: f16 254 vs 174 tok/s,
//               turbo3 145 vs 7.3 tok/s (tiled vs codes; the codecs' score() is scalar).
//  - reference: plain scalar code in double precision over read() of the stored values; for
//               tests only.
#pragma once
#include "cache/kv_cache.h"

namespace tq {

//  - driver:    generation (T = 1) through the SIMD decode-attention driver (src/cpu): all KV
//               heads of the layer in one parallel region, dispatched code kernels (with the
//               8-bit fast-scan scores where the CPU has them), context splits merged exactly.
//               Taken by kAuto when every stored segment is codes of a per-token codec (no f16
//               window, sinks or pending block); otherwise kAuto falls back to the codes path.
enum class AttnPath { kAuto, kCodes, kTiled, kReference, kDriver };

// Whether the driver path can serve (seq, layer) now (T = 1).
bool attention_driver_applicable(const KvCache& cache, int seq, int layer);

void attention(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
               int pos0, float scale, float* out, AttnPath path = AttnPath::kAuto);

// T at and above which kAuto takes the tiled path.
int attention_tiled_threshold();

}  // namespace tq
