// turboquant — causal attention over the stored KV cache: the entry point. The decode
// algorithm is decode.cpp, the tiled prefill path tiled.cpp, the reference reference.cpp.
#include "attention/attention.h"

#include <vector>

#include "attention/decode.h"
#include "attention/paths.h"

namespace tq {
namespace attn {

std::vector<HeadSegs> collect(const KvCache& cache, int seq, int layer) {
  std::vector<HeadSegs> hs(cache.shape().n_kv_head);
  for (int h = 0; h < int(hs.size()); ++h) {
    cache.segments(seq, layer, h, true, hs[h].k);
    cache.segments(seq, layer, h, false, hs[h].v);
  }
  return hs;
}

}  // namespace attn
namespace {

void check_args(const KvCache& cache, int seq, int layer, int n_head, int T, int pos0) {
  const int L = cache.seq_len(seq, layer);
  TQ_ASSERT(n_head % cache.shape().n_kv_head == 0);
  TQ_ASSERT(T >= 0 && pos0 >= 0 && pos0 + T <= L);
}

// Every query of the call through the decode algorithm: one task per (query, KV head), the
// segment lists built once for all of them.
void attention_decode(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
                      int pos0, float scale, float* out, bool generic, int window) {
  const int d = cache.shape().head_dim, H = cache.shape().n_kv_head, g = n_head / H;
  const auto hs = attn::collect(cache, seq, layer);
  std::vector<HeadTask> tasks;
  tasks.reserve(size_t(T) * H);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      const size_t off = (size_t(t) * n_head + size_t(h) * g) * d;  // [t][h·g .. h·g + g)[j]
      tasks.push_back({&cache.codec(layer, h, true), &cache.codec(layer, h, false), hs[h].k,
                       hs[h].v, size_t(pos0) + t + 1, q + off, out + off,
                       size_t(attn::first_visible(pos0 + t, window))});
    }
  DecodeOptions opt;
  opt.use_generic = generic;
  decode_attention_batch(tasks, g, scale, opt);
}

}  // namespace

int attention_tiled_threshold() { return 8; }

void attention(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
               int pos0, float scale, float* out, AttnPath path, int window) {
  check_args(cache, seq, layer, n_head, T, pos0);
  TQ_ASSERT(window >= 0);
  if (T == 0) return;
  if (path == AttnPath::kAuto)
    path = T >= attention_tiled_threshold() ? AttnPath::kTiled : AttnPath::kDecode;
  // Scaled keys (KvCacheOptions::key_scales) are stored as k ⊘ s: the paths that score the
  // stored segments take q ∘ s, the same products; the reference reads the keys back through
  // KvCache::read(), which undoes the scales.
  std::vector<float> q_scaled;
  if (path != AttnPath::kReference && cache.key_scales(seq, layer, 0)) {
    const int d = cache.shape().head_dim, H = cache.shape().n_kv_head, g = n_head / H;
    q_scaled.assign(q, q + size_t(T) * n_head * d);
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        const float* s = cache.key_scales(seq, layer, h);
        for (int i = 0; i < g; ++i) {
          float* r = &q_scaled[(size_t(t) * n_head + size_t(h) * g + i) * d];
          for (int j = 0; j < d; ++j) r[j] *= s[j];
        }
      }
    q = q_scaled.data();
  }
  switch (path) {
    case AttnPath::kReference:
      attn::attention_reference(cache, seq, layer, n_head, q, T, pos0, scale, out, window);
      break;
    case AttnPath::kTiled:
      attn::attention_tiled(cache, seq, layer, n_head, q, T, pos0, scale, out, window);
      break;
    case AttnPath::kCodes:
      attention_decode(cache, seq, layer, n_head, q, T, pos0, scale, out, true, window);
      break;
    default:
      attention_decode(cache, seq, layer, n_head, q, T, pos0, scale, out, false, window);
  }
}

}  // namespace tq
