// turboquant — the CPU attention fast paths of the TurboQuant codecs (Codec::attn_ops()):
// queries rotated once per G heads, scores and values straight from the code rows through the
// dispatched kernels (src/cpu: table lookups in registers, 8-bit fast-scan on AVX-512 VNNI).
#include <vector>

#include "codecs/attn_ops.h"
#include "codecs/turbo.h"

namespace tq {
namespace {

class TurboMseOps final : public RotatedOps {
 public:
  explicit TurboMseOps(const TurboMseCodec& c)
      : RotatedOps(c.rotation(), c.dim(), c.block_bytes()), c_(c) {}
  void score(const Prepared& p, const uint8_t* c, size_t n, int64_t, float* s,
             size_t lds) const override {
    cpu::kernels().score_rows(c_.rows(c, c_.block_bytes()), n, p.a.data(), p.G, s, lds, false);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G, float* acc,
                  size_t lda) const override {
    cpu::kernels().acc_rows(c_.rows(c, c_.block_bytes()), n, w, ldw, G, acc, lda);
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const TurboMseCodec& c_;
};

class TurboProdOps final : public AttnOps {
 public:
  explicit TurboProdOps(const TurboProdCodec& c) : c_(c), d_(c.dim()) {}
  size_t acc_size() const override { return 2 * size_t(d_); }
  size_t token_bytes() const override { return c_.block_bytes(); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * d_);
    p.b.resize(size_t(G) * d_);
    for (int g = 0; g < G; ++g)
      c_.prepare_vectors(q + size_t(g) * d_, &p.a[size_t(g) * d_], &p.b[size_t(g) * d_]);
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, int64_t, float* s,
             size_t lds) const override {
    const auto& k = cpu::kernels();
    const size_t st = c_.block_bytes();
    k.score_rows(c_.mse_rows(c, st), n, p.a.data(), p.G, s, lds, false);
    k.score_rows(c_.sign_rows(c, st, float(TurboProdCodec::qjl_factor(d_))), n, p.b.data(), p.G, s,
                 lds, true);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G, float* acc,
                  size_t lda) const override {
    // Per head: [mse part (d) | sign part (d)]; two strided views of the accumulators.
    const auto& k = cpu::kernels();
    const size_t st = c_.block_bytes();
    k.acc_rows(c_.mse_rows(c, st), n, w, ldw, G, acc, lda);
    k.acc_rows(c_.sign_rows(c, st, 1.0f), n, w, ldw, G, acc + d_, lda);
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const TurboProdCodec& c_;
  int d_;
};

class TurboSplitOps final : public AttnOps {
 public:
  explicit TurboSplitOps(const TurboSplitCodec& c)
      : c_(c), d_(c.dim()), nh_(c.n_hi()), nl_(c.dim() - c.n_hi()) {}
  size_t acc_size() const override { return size_t(d_); }
  size_t token_bytes() const override { return c_.block_bytes(); }
  void prepare(const float* q, int G, Prepared& p) const override {
    p.G = G;
    p.a.resize(size_t(G) * nh_);
    p.b.resize(size_t(G) * nl_);
    std::vector<float> g(d_);
    const auto& perm = c_.perm();
    for (int h = 0; h < G; ++h) {
      for (int j = 0; j < d_; ++j) g[j] = q[size_t(h) * d_ + perm[j]];
      c_.hi().rotation().forward(g.data(), &p.a[size_t(h) * nh_]);
      c_.lo().rotation().forward(g.data() + nh_, &p.b[size_t(h) * nl_]);
    }
  }
  void score(const Prepared& p, const uint8_t* c, size_t n, int64_t, float* s,
             size_t lds) const override {
    const auto& k = cpu::kernels();
    const size_t st = c_.block_bytes();
    k.score_rows(c_.hi().rows(c, st), n, p.a.data(), p.G, s, lds, false);
    k.score_rows(c_.lo().rows(c, st, c_.hi().block_bytes()), n, p.b.data(), p.G, s, lds, true);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G, float* acc,
                  size_t lda) const override {
    const auto& k = cpu::kernels();
    const size_t st = c_.block_bytes();
    k.acc_rows(c_.hi().rows(c, st), n, w, ldw, G, acc, lda);
    k.acc_rows(c_.lo().rows(c, st, c_.hi().block_bytes()), n, w, ldw, G, acc + nh_, lda);
  }
  void finish(const float* acc, float* out) const override { c_.finish(acc, out); }

 private:
  const TurboSplitCodec& c_;
  int d_, nh_, nl_;
};

}  // namespace

std::unique_ptr<AttnOps> TurboMseCodec::attn_ops() const {
  return std::make_unique<TurboMseOps>(*this);
}
std::unique_ptr<AttnOps> TurboProdCodec::attn_ops() const {
  return std::make_unique<TurboProdOps>(*this);
}
std::unique_ptr<AttnOps> TurboSplitCodec::attn_ops() const {
  return std::make_unique<TurboSplitOps>(*this);
}

}  // namespace tq
