// turboquant — attention ops of the plain-row cache types (f32, f16, q8_0, q4_0), also used
// by the decode driver for the cache's f16 segments (sinks, residual window).
#include "codecs/attn_ops.h"

#include <cstring>

#include "cpu/dispatch.h"

namespace tq {
namespace {

// The kernels are looked up in the active level's table at every call (tests switch levels
// between calls).
class PlainOps final : public AttnOps {
 public:
  using ScoreFn = decltype(cpu::Kernels::score_f32);
  using AccFn = decltype(cpu::Kernels::acc_f32);
  PlainOps(int d, size_t token_bytes, ScoreFn cpu::Kernels::*score, AccFn cpu::Kernels::*acc)
      : d_(d), token_bytes_(token_bytes), score_(score), acc_(acc) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return token_bytes_; }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.assign(q, q + size_t(G) * d_);
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, int64_t, float* s,
             size_t lds) const override {
    (cpu::kernels().*score_)(c, n, d_, p.a.data(), p.G, s, lds);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G, float* acc,
                  size_t lda) const override {
    (cpu::kernels().*acc_)(c, n, d_, w, ldw, G, acc, lda);
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * d_);
  }

 private:
  int d_;
  size_t token_bytes_;
  ScoreFn cpu::Kernels::*score_;
  AccFn cpu::Kernels::*acc_;
};

}  // namespace

std::unique_ptr<AttnOps> make_plain_ops(PlainRows kind, int d) {
  using K = cpu::Kernels;
  switch (kind) {
    case PlainRows::kF32:
      return std::make_unique<PlainOps>(d, size_t(d) * 4, &K::score_f32, &K::acc_f32);
    case PlainRows::kF16:
      return std::make_unique<PlainOps>(d, size_t(d) * 2, &K::score_f16, &K::acc_f16);
    case PlainRows::kQ8_0:
      TQ_ASSERT(d % 32 == 0);
      return std::make_unique<PlainOps>(d, size_t(d / 32) * 34, &K::score_q8_0, &K::acc_q8_0);
    case PlainRows::kQ4_0:
      TQ_ASSERT(d % 32 == 0);
      return std::make_unique<PlainOps>(d, size_t(d / 32) * 18, &K::score_q4_0, &K::acc_q4_0);
  }
  TQ_ASSERT(false);
  return nullptr;
}

}  // namespace tq
