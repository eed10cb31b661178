// The paged KV cache: bookkeeping, byte accounting, and attention over the stored codes vs a
// plain f32 reference over the same decoded values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "attention/attention.h"
#include "cache/kv_cache.h"
#include "codecs/common.h"
#include "cpu/dispatch.h"

namespace tq {
namespace {

KvShape small_shape(int layers = 2, int kv = 2, int d = 64) {
  KvShape s;
  s.n_layer = layers;
  s.n_kv_head = kv;
  s.head_dim = d;
  return s;
}

std::vector<float> randn(size_t n, std::mt19937& rng, float sd = 1.f) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

void append_random(KvCache& c, int seq, int T, std::mt19937& rng) {
  const auto& s = c.shape();
  for (int l = 0; l < s.n_layer; ++l) {
    auto k = randn(size_t(T) * s.n_kv_head * s.head_dim, rng);
    auto v = randn(size_t(T) * s.n_kv_head * s.head_dim, rng);
    c.append(seq, l, k.data(), v.data(), T);
  }
}

TEST(KvCache, PagesAllocatedFreedReused) {
  KvCacheOptions o;
  o.page_tokens = 16;
  o.max_tokens = 64;  // 4 pages
  KvCache c(small_shape(), o);
  std::mt19937 rng(1);
  EXPECT_EQ(c.pages_total(), 4);
  const int a = c.new_seq(), b = c.new_seq();
  append_random(c, a, 20, rng);  // 2 pages
  EXPECT_EQ(c.pages_free(), 2);
  append_random(c, b, 16, rng);  // 1 page
  EXPECT_EQ(c.pages_free(), 1);
  EXPECT_EQ(c.seq_len(a), 20);
  EXPECT_EQ(c.seq_len(b), 16);
  // 17 more tokens for b need 2 more pages: only 1 is free.
  try {
    append_random(c, b, 17, rng);
    FAIL() << "expected KV cache full";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache full"), std::string::npos) << e.what();
  }
  c.free_seq(a);
  EXPECT_EQ(c.pages_free(), 3);
  const int d = c.new_seq();
  EXPECT_EQ(d, a);  // the slot is reused
  append_random(c, d, 48, rng);  // reuses the freed pages
  EXPECT_EQ(c.pages_free(), 0);
  EXPECT_EQ(c.seq_len(d), 48);
}

TEST(KvCache, TooManySequences) {
  KvCacheOptions o;
  o.max_seqs = 2;
  KvCache c(small_shape(), o);
  c.new_seq();
  c.new_seq();
  EXPECT_THROW(c.new_seq(), Error);
}

TEST(KvCache, StoredValuesRoundTrip) {
  KvCacheOptions o;
  o.type_k = o.type_v = "f32";
  o.page_tokens = 8;
  KvCache c(small_shape(1, 2, 16), o);
  std::mt19937 rng(2);
  const int s = c.new_seq();
  auto k = randn(size_t(21) * 2 * 16, rng), v = randn(size_t(21) * 2 * 16, rng);
  c.append(s, 0, k.data(), v.data(), 21);
  std::vector<float> x(21 * 16);
  c.read(s, 0, 1, true, x.data());
  for (int t = 0; t < 21; ++t)
    for (int j = 0; j < 16; ++j) EXPECT_EQ(x[t * 16 + j], k[(t * 2 + 1) * 16 + j]);
}

// What the cache stores through a codec is that codec's encode/decode of the right rows: the
// relative MSE of turbo3 on Gaussian rows is the codec's D_mse (≈ 0.034 at 3 bits), per head.
TEST(KvCache, StoredRowsAreTheCodecsRoundTrip) {
  const int d = 64, H = 3, T = 300;
  KvCacheOptions o;
  o.type_k = "turbo3";
  o.type_v = "f32";
  o.page_tokens = 32;
  KvCache c(small_shape(1, H, d), o);
  std::mt19937 rng(9);
  const int s = c.new_seq();
  auto k = randn(size_t(T) * H * d, rng), v = randn(size_t(T) * H * d, rng);
  for (int i = 0; i < T * H * d; ++i) k[i] *= 1.f + float(i % d) / 8.f;  // uneven channels
  c.append(s, 0, k.data(), v.data(), T);
  std::vector<float> x(size_t(T) * d);
  for (int h = 0; h < H; ++h) {
    c.read(s, 0, h, true, x.data());
    double err = 0, ref = 0;
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < d; ++j) {
        const double a = k[(size_t(t) * H + h) * d + j], b = x[size_t(t) * d + j];
        err += (a - b) * (a - b);
        ref += a * a;
      }
    EXPECT_GT(err / ref, 0.02) << h;
    EXPECT_LT(err / ref, 0.05) << h;
  }
}

TEST(KvCache, ByteAccountingWindowAndSinks) {
  const int d = 64, L = 2, H = 2;
  KvCacheOptions o;
  o.type_k = "turbo3";
  o.type_v = "turbo4";
  o.residual_window = 10;
  o.sink_tokens = 4;
  o.page_tokens = 32;
  o.key_centring = KeyCentring::kOff;  // the key means are counted below (o3)
  KvCache c(small_shape(L, H, d), o);
  const size_t bk = make_codec("turbo3", d)->block_bytes();
  const size_t bv = make_codec("turbo4", d)->block_bytes();
  std::mt19937 rng(3);
  const int s = c.new_seq();
  append_random(c, s, 8, rng);  // 4 sinks + 4 in the window
  EXPECT_EQ(c.k_bytes(), size_t(L * H) * 8 * d * 2);
  append_random(c, s, 30, rng);  // 38 tokens: 4 sinks, 24 coded, 10 window
  EXPECT_EQ(c.k_bytes(), size_t(L * H) * ((4 + 10) * d * 2 + 24 * bk));
  EXPECT_EQ(c.v_bytes(), size_t(L * H) * ((4 + 10) * d * 2 + 24 * bv));
  EXPECT_EQ(c.kv_bytes(), c.k_bytes() + c.v_bytes());
  EXPECT_NEAR(c.bpv_k(), 8.0 * double(c.k_bytes()) / (38.0 * L * H * d), 1e-12);
  // One token at a time moves one token per step out of the window.
  append_random(c, s, 1, rng);
  EXPECT_EQ(c.k_bytes(), size_t(L * H) * ((4 + 10) * d * 2 + 25 * bk));
  // Without window and sinks every token is coded at once.
  KvCacheOptions o2;
  o2.type_k = o2.type_v = "turbo3";
  o2.key_centring = KeyCentring::kOff;
  KvCache c2(small_shape(L, H, d), o2);
  const int s2 = c2.new_seq();
  append_random(c2, s2, 7, rng);
  EXPECT_EQ(c2.kv_bytes(), size_t(2 * L * H) * 7 * bk);
  EXPECT_NEAR(c2.bpv_k(), make_codec("turbo3", d)->bpv(), 1e-12);
  // Mean-centred keys (turbo3's default) add d floats per (layer, head).
  KvCacheOptions o3 = o2;
  o3.key_centring = KeyCentring::kTypeDefault;
  KvCache c3(small_shape(L, H, d), o3);
  const int s3 = c3.new_seq();
  append_random(c3, s3, 7, rng);
  EXPECT_EQ(c3.kv_bytes(), size_t(2 * L * H) * 7 * bk + size_t(L * H) * d * 4);
}

TEST(KvCache, BoundaryAndPerLayerTypes) {
  KvCacheOptions o;
  o.type_k = o.type_v = "turbo3";
  o.boundary_layers = 1;
  o.boundary_type_k = "f16";
  o.boundary_type_v = "turbo4";
  o.layer_type_k[2] = "turbo2";
  KvCache c(small_shape(5, 1, 64), o);
  EXPECT_EQ(c.type_name(0, true), "f16");
  EXPECT_EQ(c.type_name(4, true), "f16");
  EXPECT_EQ(c.type_name(4, false), "turbo4");
  EXPECT_EQ(c.type_name(1, true), "turbo3");
  EXPECT_EQ(c.type_name(2, true), "turbo2");
  EXPECT_EQ(c.codec(2, 0, true).name(), make_codec("turbo2", 64)->name());
}

TEST(KvCache, UnknownTypeIsAnError) {
  KvCacheOptions o;
  o.type_k = "nonsense";
  EXPECT_THROW(KvCache(small_shape(), o), Error);
}

// Attention over the stored codes (codes path, tiled path) vs the scalar reference over the
// same decoded values.
struct AttnCase {
  std::string tk, tv;
  int window, sinks, T0, T1;
  bool center;
};

class AttentionVsReference : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionVsReference, Matches) {
  // Exact paths: the 8-bit fast-scan scores stay off here (DriverVsReference covers them).
  const bool int8_was = cpu::int8_scores_enabled();
  cpu::set_int8_scores(false);
  const AttnCase& p = GetParam();
  const int d = 64, H = 2, NH = 6;
  KvCacheOptions o;
  o.type_k = p.tk;
  o.type_v = p.tv;
  o.residual_window = p.window;
  o.sink_tokens = p.sinks;
  o.key_centring = p.center ? KeyCentring::kOn : KeyCentring::kOff;
  o.page_tokens = 32;
  KvCache c(small_shape(1, H, d), o);
  std::mt19937 rng(42 + p.T0);
  const int s = c.new_seq();
  append_random(c, s, p.T0, rng);
  auto k = randn(size_t(p.T1) * H * d, rng), v = randn(size_t(p.T1) * H * d, rng);
  c.append(s, 0, k.data(), v.data(), p.T1);
  auto q = randn(size_t(p.T1) * NH * d, rng, 0.5f);
  const float scale = 1.f / 8.f;
  std::vector<float> ref(q.size()), codes(q.size()), tiled(q.size());
  attention(c, s, 0, NH, q.data(), p.T1, p.T0, scale, ref.data(), AttnPath::kReference);
  attention(c, s, 0, NH, q.data(), p.T1, p.T0, scale, codes.data(), AttnPath::kCodes);
  attention(c, s, 0, NH, q.data(), p.T1, p.T0, scale, tiled.data(), AttnPath::kTiled);
  // Outputs are convex combinations of values of magnitude ~1: absolute tolerance 2e-4
  // (float accumulation vs double).
  double max_c = 0, max_t = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_c = std::max(max_c, double(std::fabs(ref[i] - codes[i])));
    max_t = std::max(max_t, double(std::fabs(ref[i] - tiled[i])));
  }
  EXPECT_LT(max_c, 2e-4) << p.tk << "/" << p.tv;
  EXPECT_LT(max_t, 2e-4) << p.tk << "/" << p.tv;
  cpu::set_int8_scores(int8_was);
}

// Generation through the SIMD driver (kAuto with one query over codes-only segments) vs the
// reference: exact kernels to 2e-4; with the 8-bit fast-scan scores (where the CPU has them)
// to 1.5e-2 on outputs of magnitude ~1 — their score error is ~1e-3·|q||k| (here |q||k|·scale
// ≈ 4, so scores move by a few 1e-3), far below the 3-bit quantization error; a wrong kernel
// is off by O(1).
TEST(KvCache, DriverVsReference) {
  const unsigned seed = std::random_device{}();
  const bool int8_was = cpu::int8_scores_enabled();
  for (const char* t : {"f16", "turbo3", "turbo4", "turbo2.5", "turbo3p", "polar", "q8_0"})
    for (bool int8 : {false, true}) {
      cpu::set_int8_scores(int8);
      const int d = 64, H = 3, NH = 9;
      KvCacheOptions o;
      o.type_k = t;
      o.type_v = t;
      o.page_tokens = 32;
      KvCache c(small_shape(1, H, d), o);
      std::mt19937 rng(seed);
      const int s = c.new_seq();
      append_random(c, s, 100, rng);
      auto q = randn(size_t(NH) * d, rng, 0.5f);
      std::vector<float> ref(q.size()), got(q.size()), autop(q.size());
      attention(c, s, 0, NH, q.data(), 1, 99, 0.125f, ref.data(), AttnPath::kReference);
      attention(c, s, 0, NH, q.data(), 1, 99, 0.125f, got.data(), AttnPath::kDriver);
      attention(c, s, 0, NH, q.data(), 1, 99, 0.125f, autop.data(), AttnPath::kAuto);
      const double tol = int8 && cpu::int8_scores_active() ? 1.5e-2 : 2e-4;
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_NEAR(ref[i], got[i], tol) << t << " int8=" << int8 << " seed=" << seed;
        ASSERT_EQ(got[i], autop[i]) << t;
      }
    }
  cpu::set_int8_scores(int8_was);
}

// The decode algorithm over mixed segments: f16 sinks, codes of two types whose K and V are
// cut differently (a 4-token block type for V, pages of 32), a pending f16 window; several
// queries of an append; vs the reference at the exact kernels.
TEST(KvCache, DecodeOverMixedSegments) {
  const unsigned seed = std::random_device{}();
  const bool int8_was = cpu::int8_scores_enabled();
  cpu::set_int8_scores(false);
  for (const char* t : {"turbo3", "q8_0", "f16", "polar"})
    for (int T : {1, 5}) {
      const int d = 64, H = 2, NH = 6;
      KvCacheOptions o;
      o.type_k = t;
      o.type_v = "turbo4";
      o.page_tokens = 32;
      o.residual_window = 9;
      o.sink_tokens = 3;
      KvCache c(small_shape(1, H, d), o);
      std::mt19937 rng(seed);
      const int s = c.new_seq();
      append_random(c, s, 101, rng);
      auto q = randn(size_t(T) * NH * d, rng, 0.5f);
      std::vector<float> ref(q.size()), got(q.size()), gen(q.size());
      attention(c, s, 0, NH, q.data(), T, 101 - T, 0.125f, ref.data(), AttnPath::kReference);
      attention(c, s, 0, NH, q.data(), T, 101 - T, 0.125f, got.data(), AttnPath::kDecode);
      attention(c, s, 0, NH, q.data(), T, 101 - T, 0.125f, gen.data(), AttnPath::kCodes);
      for (size_t i = 0; i < ref.size(); ++i) {
        ASSERT_NEAR(ref[i], got[i], 2e-4) << t << " T=" << T << " seed=" << seed;
        ASSERT_NEAR(ref[i], gen[i], 2e-4) << t << " T=" << T << " seed=" << seed;
      }
    }
  cpu::set_int8_scores(int8_was);
}

INSTANTIATE_TEST_SUITE_P(
    Types, AttentionVsReference,
    ::testing::Values(AttnCase{"f16", "f16", 0, 0, 0, 37, false},
                      AttnCase{"f32", "f16", 0, 0, 50, 1, false},
                      AttnCase{"turbo3", "turbo3", 0, 0, 0, 45, false},
                      AttnCase{"turbo4", "turbo2", 0, 0, 70, 3, false},
                      AttnCase{"turbo3p", "turbo3", 0, 0, 33, 29, false},
                      AttnCase{"turbo2.5", "turbo3.5", 0, 0, 0, 41, false},
                      AttnCase{"polar", "polar", 0, 0, 10, 23, false},
                      AttnCase{"turbo3", "turbo4", 13, 3, 40, 1, false},
                      AttnCase{"turbo3", "turbo4", 13, 3, 0, 77, true},
                      AttnCase{"turbo2", "f16", 5, 0, 66, 9, true}));

// The f16 paths (the dispatched f16 row kernels and conversion, at every SIMD level: dims with
// vector tails included) vs the scalar reference, on fresh random inputs.
TEST(KvCache, F16KernelsVsReferenceFreshInputs) {
  const unsigned seed = std::random_device{}();
  for (cpu::Level l : cpu::available_levels())
  for (int d : {40, 36, 64, 24}) {
    cpu::force_level(l);
    KvCacheOptions o;
    o.type_k = "f16";
    o.type_v = "f16";
    o.page_tokens = 16;
    o.residual_window = 5;
    KvCache c(small_shape(1, 1, d), o);
    std::mt19937 rng(seed + d);
    const int s = c.new_seq();
    const int T0 = 21, T1 = 3;
    append_random(c, s, T0, rng);
    auto k = randn(size_t(T1) * d, rng), v = randn(size_t(T1) * d, rng);
    c.append(s, 0, k.data(), v.data(), T1);
    auto q = randn(size_t(T1) * 3 * d, rng, 0.5f);
    std::vector<float> ref(q.size()), got(q.size()), tiled(q.size());
    attention(c, s, 0, 3, q.data(), T1, T0, 0.2f, ref.data(), AttnPath::kReference);
    attention(c, s, 0, 3, q.data(), T1, T0, 0.2f, got.data(), AttnPath::kDecode);
    attention(c, s, 0, 3, q.data(), T1, T0, 0.2f, tiled.data(), AttnPath::kTiled);
    cpu::reset_level();
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(ref[i], got[i], 2e-4) << "d=" << d << " seed=" << seed << cpu::level_name(l);
      ASSERT_NEAR(ref[i], tiled[i], 2e-4) << "d=" << d << " seed=" << seed << cpu::level_name(l);
    }
  }
}

// A block codec for the tests with a block size no registered type has: f32 values in blocks
// of 4 tokens plus a 4-byte header, so a block is encoded only when complete.
class TestBlockCodec final : public Codec {
 public:
  explicit TestBlockCodec(int d) : d_(d) {}
  std::string name() const override { return "test_blk4"; }
  int dim() const override { return d_; }
  int block_tokens() const override { return 4; }
  size_t block_bytes() const override { return 4 + size_t(4) * d_ * 4; }
  void encode(const float* x, size_t n, uint8_t* codes) const override {
    for (size_t b = 0; b < n; ++b) {
      const uint32_t magic = 0xB10C4u;
      std::memcpy(codes + b * block_bytes(), &magic, 4);
      std::memcpy(codes + b * block_bytes() + 4, x + b * 4 * d_, size_t(4) * d_ * 4);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t b = 0; b < n; ++b) {
      uint32_t magic;
      std::memcpy(&magic, codes + b * block_bytes(), 4);
      TQ_ASSERT(magic == 0xB10C4u);
      std::memcpy(x + b * 4 * d_, codes + b * block_bytes() + 4, size_t(4) * d_ * 4);
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    auto s = std::make_unique<VecQuery>();
    s->q.assign(q, q + d_);
    return s;
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    std::vector<float> x(size_t(n) * 4 * d_);
    decode(codes, n, x.data());
    const auto& q = static_cast<const VecQuery&>(qs).q;
    for (size_t t = 0; t < n * 4; ++t) out[t] = float(dot(q.data(), &x[t * d_], d_));
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    std::vector<float> x(size_t(n) * 4 * d_);
    decode(codes, n, x.data());
    for (size_t t = 0; t < n * 4; ++t)
      for (int j = 0; j < d_; ++j) acc[j] += w[t] * x[t * d_ + j];
  }
  void finish(const float* acc, float* out) const override { std::memcpy(out, acc, 4 * d_); }

 private:
  int d_;
};

void register_test_block_codec() {
  static bool done = false;
  if (done) return;
  done = true;
  register_codec({"test_blk4", "test block codec (4 tokens/block)",
                  [](std::string_view, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
                    return std::make_unique<TestBlockCodec>(d);
                  },
                  100000});
}

// Block codecs: a block is encoded when complete (and out of the window); until then its tokens
// stay f16 and count as f16 bytes. Attention over partly filled blocks matches the reference.
TEST(KvCache, BlockCodecPendingTokensAndAttention) {
  register_test_block_codec();
  const int d = 16, H = 2, NH = 4;
  KvCacheOptions o;
  o.type_k = "test_blk4";
  o.type_v = "test_blk4";
  o.page_tokens = 8;
  o.sink_tokens = 2;      // rounded up to one block (4 tokens) for a 4-token codec
  o.residual_window = 3;
  KvCache c(small_shape(1, H, d), o);
  const size_t bb = 4 + 4 * d * 4;
  std::mt19937 rng(11);
  const int s = c.new_seq();
  // sinks [0,4); window 3 → coded [4, 4 + (10-3-4)/4*4) = nothing yet
  append_random(c, s, 10, rng);
  EXPECT_EQ(c.k_bytes(), size_t(H) * 10 * d * 2);
  append_random(c, s, 1, rng);  // 11: (11-3-4)=4 → one block [4,8) coded; pending [8,11)
  EXPECT_EQ(c.k_bytes(), size_t(H) * ((4 + 3) * d * 2 + bb));
  append_random(c, s, 13, rng);  // 24: (24-3-4)=17 → 4 blocks [4,20); pending [20,24)
  EXPECT_EQ(c.k_bytes(), size_t(H) * ((4 + 4) * d * 2 + 4 * bb));
  for (int T1 : {1, 7}) {
    auto k = randn(size_t(T1) * H * d, rng), v = randn(size_t(T1) * H * d, rng);
    const int pos0 = c.seq_len(s);
    c.append(s, 0, k.data(), v.data(), T1);
    auto q = randn(size_t(T1) * NH * d, rng, 0.5f);
    std::vector<float> ref(q.size()), a(q.size()), b(q.size());
    attention(c, s, 0, NH, q.data(), T1, pos0, 0.25f, ref.data(), AttnPath::kReference);
    attention(c, s, 0, NH, q.data(), T1, pos0, 0.25f, a.data(), AttnPath::kCodes);
    attention(c, s, 0, NH, q.data(), T1, pos0, 0.25f, b.data(), AttnPath::kTiled);
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_NEAR(ref[i], a[i], 2e-4) << T1;
      ASSERT_NEAR(ref[i], b[i], 2e-4) << T1;
    }
  }
  // Page size must be a multiple of the codec's block.
  KvCacheOptions bad = o;
  bad.page_tokens = 6;
  EXPECT_THROW(KvCache(small_shape(1, H, d), bad), Error);
}

// Centring keys leaves attention unchanged up to quantization: with f32 storage, exactly (up
// to rounding), since softmax ignores the per-query shift q·μ.
TEST(KvCache, CenteringIsSoftmaxInvariant) {
  const int d = 32, H = 1, NH = 2, T = 20;
  std::mt19937 rng(5);
  auto k = randn(size_t(T) * H * d, rng), v = randn(size_t(T) * H * d, rng);
  for (int t = 0; t < T; ++t) k[size_t(t) * d + 3] += 20.f;  // an outlier channel
  auto q = randn(size_t(T) * NH * d, rng, 0.3f);
  std::vector<float> a(q.size()), b(q.size());
  for (int centre = 0; centre < 2; ++centre) {
    KvCacheOptions o;
    o.type_k = o.type_v = "f32";
    o.key_centring = centre == 1 ? KeyCentring::kOn : KeyCentring::kOff;
    KvCache c(small_shape(1, H, d), o);
    const int s = c.new_seq();
    c.append(s, 0, k.data(), v.data(), T);
    attention(c, s, 0, NH, q.data(), T, 0, 0.2f, centre ? b.data() : a.data(), AttnPath::kCodes);
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4);
}

}  // namespace
}  // namespace tq
