// turboquant — internals shared by the attention paths of src/attention (not public).
#pragma once
#include <vector>

#include "attention/attention.h"

namespace tq::attn {

// The stored segments of every KV head of (seq, layer), K and V: built once per call.
struct HeadSegs {
  std::vector<KvSegment> k, v;
};
std::vector<HeadSegs> collect(const KvCache& cache, int seq, int layer);

// The first position a query at pos sees: pos + 1 − window in a sliding-window layer
// (window > 0), else 0.
inline int first_visible(int pos, int window) {
  return window > 0 && pos + 1 > window ? pos + 1 - window : 0;
}

// The paths attention() dispatches to besides the decode algorithm (attention/decode.h).
void attention_reference(const KvCache& cache, int seq, int layer, int n_head, const float* q,
                         int T, int pos0, float scale, float* out, int window);
void attention_tiled(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
                     int pos0, float scale, float* out, int window);

}  // namespace tq::attn
