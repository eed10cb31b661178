// turboquant — the CPU attention fast path of a codec (Codec::attn_ops()): the query-side view
// of a cache type that the decode driver (src/attention/decode.cpp) runs, G query heads at a
// time, through the dispatched SIMD kernels of src/cpu. Each codec family defines its ops
// beside its codec (attn_ops.cpp: the plain-row types; turbo_attn.cpp; polar.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/rotation.h"
#include "tq/codec.h"

namespace tq {

class AttnOps {
 public:
  virtual ~AttnOps() = default;
  // Floats of one head's accumulator (working domain) and bytes of one token's codes.
  virtual size_t acc_size() const = 0;
  virtual size_t token_bytes() const = 0;
  // Per-query state for G heads (q: G × d, original domain).
  struct Prepared {
    int G = 0;
    std::vector<float> a, b;                      // kernel-specific (rotated queries etc.)
    std::vector<std::unique_ptr<QueryState>> qs;  // the generic path (Codec interface)
  };
  virtual void prepare(const float* q, int G, Prepared& p) const = 0;
  // s[g·lds + t] = q_g · k_t for the n tokens (whole blocks) from position pos0 on (only
  // position-dependent codecs read pos0).
  virtual void score(const Prepared& p, const uint8_t* codes, size_t n, int64_t pos0, float* s,
                     size_t lds) const = 0;
  // acc[g·lda + ·] += Σ_t w[g·ldw + t] v_t  (working domain), g < G.
  virtual void accumulate(const uint8_t* codes, size_t n, const float* w, size_t ldw, int G,
                          float* acc, size_t lda) const = 0;
  // out (d floats) from one head's accumulator.
  virtual void finish(const float* acc, float* out) const = 0;
};

// The common part of the ops of codecs that work in a rotated domain (TurboQuant_mse, PolarQuant):
// a d-float accumulator and queries rotated once per G heads into p.a (G × d).
class RotatedOps : public AttnOps {
 public:
  RotatedOps(const Rotation& rot, int d, size_t token_bytes)
      : rot_(rot), d_(d), token_bytes_(token_bytes) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return token_bytes_; }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * d_);
    for (int g = 0; g < G; ++g) rot_.forward(q + size_t(g) * d_, &p.a[size_t(g) * d_]);
  }

 protected:
  const Rotation& rot_;
  int d_;
  size_t token_bytes_;
};

// Ops over plain rows scored in the original domain by a pair of row kernels: f32 and f16
// (d values per token), the ggml q8_0 / q4_0 blocks (34 / 18 bytes per 32 values).
enum class PlainRows { kF32, kF16, kQ8_0, kQ4_0 };
std::unique_ptr<AttnOps> make_plain_ops(PlainRows kind, int d);

}  // namespace tq
