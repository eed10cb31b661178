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

// The paths attention() dispatches to besides the decode algorithm (attention/decode.h).
void attention_reference(const KvCache& cache, int seq, int layer, int n_head, const float* q,
                         int T, int pos0, float scale, float* out);
void attention_tiled(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
                     int pos0, float scale, float* out);

}  // namespace tq::attn
