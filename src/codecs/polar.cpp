// PolarQuant (Han et al., arXiv 2502.02617; DESIGN.md §2.3).
// After the random rotation, each group of 16 coordinates is turned into one radius and 15
// angles by a 4-level recursive polar transform:
//   level 1: 8 pairs (y_2i, y_2i+1) → radius r1_i, angle ψ ∈ [0, 2π)      (4-bit codes)
//   level ℓ = 2..4: pairs of level-(ℓ−1) radii (a, b) → √(a²+b²), ψ = atan(b/a) ∈ [0, π/2]
//                   (2-bit codes; 4, 2, 1 angles)
//   the remaining level-4 radius is stored as fp16.
// Group layout (62 bits, LSB-first stream, groups back to back, token padded to a byte):
//   16 bits fp16 radius | 8×4 bits level-1 | 4×2 level-2 | 2×2 level-3 | 1×2 level-4.
// Level-1 codebook: 16 uniform centroids (the angle of a Gaussian pair is uniform). Level ℓ ≥ 2:
// Lloyd-Max on the density ∝ sin^(2^(ℓ−1)−1)(2ψ) on [0, π/2] — no data needed.
#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <mutex>

#include "codecs/attn_ops.h"
#include "codecs/common.h"
#include "core/bitpack.h"
#include "core/half.h"
#include "core/lloyd_max.h"
#include "core/rng.h"
#include "core/rotation.h"
#include "cpu/dispatch.h"

namespace tq {
namespace {

constexpr int kGroup = 16;
constexpr int kGroupBits = 62;

struct PolarBooks {
  std::array<float, 16> l1;
  std::array<std::array<float, 4>, 3> l;  // levels 2, 3, 4
  std::array<std::array<float, 3>, 3> lb; // their decision boundaries
  // cos/sin of every centroid (decode without trigonometric calls)
  std::array<float, 16> l1c, l1s;
  std::array<std::array<float, 4>, 3> lc, ls;
};

double angle_density(double psi, const void* ctx) {
  const int m = *static_cast<const int*>(ctx);  // exponent 2^(ℓ−1) − 1
  const double s = std::sin(2 * psi);
  return s <= 0 ? 0.0 : std::pow(s, m);
}

const PolarBooks& books() {
  static PolarBooks b = [] {
    PolarBooks pb;
    for (int k = 0; k < 16; ++k) pb.l1[k] = float((k + 0.5) * 2 * M_PI / 16);
    for (int lv = 2; lv <= 4; ++lv) {
      int m = (1 << (lv - 1)) - 1;
      auto c = lloyd_max_on_density(angle_density, &m, 0.0, M_PI / 2, 4);
      for (int k = 0; k < 4; ++k) pb.l[lv - 2][k] = float(c[k]);
      for (int k = 0; k < 3; ++k) pb.lb[lv - 2][k] = float(0.5 * (c[k] + c[k + 1]));
    }
    for (int k = 0; k < 16; ++k) {
      pb.l1c[k] = std::cos(pb.l1[k]);
      pb.l1s[k] = std::sin(pb.l1[k]);
    }
    for (int lv = 0; lv < 3; ++lv)
      for (int k = 0; k < 4; ++k) {
        pb.lc[lv][k] = std::cos(pb.l[lv][k]);
        pb.ls[lv][k] = std::sin(pb.l[lv][k]);
      }
    return pb;
  }();
  return b;
}

class PolarCodec final : public Codec {
 public:
  PolarCodec(int dim, uint64_t seed)
      : dim_(dim), groups_(dim / kGroup), rot_(dim, derive_seed(seed, 1)), bk_(books()) {}
  std::string name() const override { return "polar"; }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return packed_bytes(size_t(groups_) * kGroupBits, 1); }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    std::vector<float> y(dim_);
    for (size_t t = 0; t < n; ++t) {
      rot_.forward(x + t * dim_, y.data());
      BitWriter w(codes + t * block_bytes());
      for (int g = 0; g < groups_; ++g) encode_group(&y[g * kGroup], w);
      // zero the padding bits of the last byte
      while (w.bits_written() % 8) w.put(0, 1);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t t = 0; t < n; ++t) {
      decode_rotated(codes + t * block_bytes(), x + t * dim_);
      rot_.inverse(x + t * dim_, x + t * dim_);
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    auto s = std::make_unique<VecQuery>();
    s->q.resize(dim_);
    rot_.forward(q, s->q.data());
    return s;
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const auto& q = static_cast<const VecQuery&>(qs).q;
    std::vector<float> y(dim_);
    for (size_t t = 0; t < n; ++t) {
      decode_rotated(codes + t * block_bytes(), y.data());
      out[t] = float(dot(q.data(), y.data(), dim_));
    }
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    std::vector<float> y(dim_);
    for (size_t t = 0; t < n; ++t) {
      decode_rotated(codes + t * block_bytes(), y.data());
      for (int j = 0; j < dim_; ++j) acc[j] += w[t] * y[j];
    }
  }
  void finish(const float* acc, float* out) const override { rot_.inverse(acc, out); }

  const Rotation& rotation() const { return rot_; }
  std::unique_ptr<AttnOps> attn_ops() const override;
  void decode_rotated_n(const uint8_t* codes, size_t n, float* y) const {
    cpu::kernels_scalar().polar_decode(codes, n, block_bytes(), groups_, polar_tables(), y);
  }

 private:
  static int nearest(const std::array<float, 3>& bnd, float v) {
    int k = 0;
    while (k < 3 && v > bnd[k]) ++k;
    return k;
  }
  void encode_group(const float* y, BitWriter& w) const {
    float r[8];
    uint8_t c1[8];
    for (int i = 0; i < 8; ++i) {
      const float a = y[2 * i], b = y[2 * i + 1];
      r[i] = std::sqrt(a * a + b * b);
      double psi = std::atan2(double(b), double(a));
      if (psi < 0) psi += 2 * M_PI;
      int k = int(psi * 16 / (2 * M_PI));
      c1[i] = uint8_t(std::min(k, 15));
    }
    uint8_t cl[3][4];
    int count = 8;
    for (int lv = 0; lv < 3; ++lv) {
      count /= 2;
      for (int i = 0; i < count; ++i) {
        const float a = r[2 * i], b = r[2 * i + 1];
        const float psi = float(std::atan2(double(b), double(a)));  // [0, π/2]
        cl[lv][i] = uint8_t(nearest(bk_.lb[lv], psi));
        r[i] = std::sqrt(a * a + b * b);
      }
    }
    w.put(f32_to_f16(r[0]), 16);
    for (int i = 0; i < 8; ++i) w.put(c1[i], 4);
    count = 8;
    for (int lv = 0; lv < 3; ++lv) {
      count /= 2;
      for (int i = 0; i < count; ++i) w.put(cl[lv][i], 2);
    }
  }
  // One token's rotated-domain vector: the plain scalar kernel (cpu/kernels_impl.h), which is
  // the reference the SIMD decode kernels are tested against.
  void decode_rotated(const uint8_t* blk, float* y) const {
    cpu::kernels_scalar().polar_decode(blk, 1, block_bytes(), groups_, polar_tables(), y);
  }

  int dim_, groups_;
  Rotation rot_;
  const PolarBooks& bk_;
};

// The attention fast path: a step of tokens is decoded once into the rotated domain (table
// lookups, no trigonometry; the dispatched polar_decode kernel) and then shared by all query
// heads through the f32 kernels; one inverse rotation per output.
class PolarOps final : public RotatedOps {
 public:
  explicit PolarOps(const PolarCodec& c)
      : RotatedOps(c.rotation(), c.dim(), c.block_bytes()), c_(c) {}
  void score(const Prepared& p, const uint8_t* c, size_t n, int64_t, float* s,
             size_t lds) const override {
    const float* y = decode(c, n);
    cpu::kernels().score_f32(reinterpret_cast<const uint8_t*>(y), n, d_, p.a.data(), p.G, s, lds);
  }
  void accumulate(const uint8_t* c, size_t n, const float* w, size_t ldw, int G, float* acc,
                  size_t lda) const override {
    const float* y = decode(c, n);
    cpu::kernels().acc_f32(reinterpret_cast<const uint8_t*>(y), n, d_, w, ldw, G, acc, lda);
  }
  void finish(const float* acc, float* out) const override { rot_.inverse(acc, out); }

 private:
  const float* decode(const uint8_t* c, size_t n) const {
    thread_local std::vector<float> y;
    y.resize(n * d_);
    cpu::kernels().polar_decode(c, n, c_.block_bytes(), d_ / kGroup, polar_tables(), y.data());
    return y.data();
  }
  const PolarCodec& c_;
};

std::unique_ptr<AttnOps> PolarCodec::attn_ops() const { return std::make_unique<PolarOps>(*this); }

}  // namespace


void polar_decode_rotated(const Codec& c, const uint8_t* codes, size_t n, float* y) {
  auto* p = dynamic_cast<const PolarCodec*>(&c);
  TQ_ASSERT(p != nullptr);
  cpu::kernels().polar_decode(codes, n, p->block_bytes(), p->dim() / kGroup, polar_tables(), y);
}

void polar_decode_rotated_ref(const Codec& c, const uint8_t* codes, size_t n, float* y) {
  auto* p = dynamic_cast<const PolarCodec*>(&c);
  TQ_ASSERT(p != nullptr);
  p->decode_rotated_n(codes, n, y);
}

const cpu::PolarTables& polar_tables() {
  static const cpu::PolarTables t = [] {
    const PolarBooks& b = books();
    cpu::PolarTables pt{};
    for (int k = 0; k < 16; ++k) {
      pt.l1c[k] = b.l1c[k];
      pt.l1s[k] = b.l1s[k];
    }
    for (int lv = 0; lv < 3; ++lv)
      for (int k = 0; k < 4; ++k) {
        pt.lc[lv][k] = b.lc[lv][k];
        pt.ls[lv][k] = b.ls[lv][k];
      }
    return pt;
  }();
  return t;
}

TypeTraits polar_traits() {
  TypeTraits t;
  t.simd_attention = true;
  t.center_keys = true;  // the project's own keys: mean-centred by default
  return t;
}

void register_polar_codecs() {
  register_codec({"polar",
                  "PolarQuant: rotation + 4-level polar transform per 16 coords, fp16 radius, "
                  "4-bit level-1 and 2-bit level-2..4 angles (3.875 bpv)",
                  [](std::string_view t, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
                    if (d % kGroup) unsupported_dim(t, d, "needs a multiple of 16");
                    return std::make_unique<PolarCodec>(d, o.seed);
                  },
                  200, polar_traits()});
}

}  // namespace tq
