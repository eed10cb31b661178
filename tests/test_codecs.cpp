// Every registered cache type: scores and accumulation from codes agree with decode, bpv comes
// from the layout, bad input is refused, zero vectors survive.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "codecs/polarvq.h"
#include "core/rng.h"
#include "cpu/dispatch.h"
#include "tq/codec.h"

namespace tq {
namespace {

// These tests pin the codecs' exact semantics (scores equal q·decode to float rounding), so
// the 8-bit fast-scan score path (an approximation, ~1e-3 of |q||k|, tested against the exact
// kernels in test_cpu_kernels) is switched off here.
class ExactScores : public ::testing::Environment {
 public:
  void SetUp() override { cpu::set_int8_scores(false); }
};
const auto* const kExact = ::testing::AddGlobalTestEnvironment(new ExactScores);

uint64_t fresh_seed() { return std::random_device{}() * 0x100000001ull + std::random_device{}(); }

std::vector<float> randn(Rng& rng, size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = scale * float(rng.normal());
  return v;
}

std::unique_ptr<Codec> try_make(const std::string& t, int d, bool is_key = true) {
  CodecOptions o;
  o.is_key = is_key;
  if (type_needs_calibration(t)) return nullptr;  // covered by its own tests with codebooks
  try {
    return make_codec(t, d, o);
  } catch (const Error&) {
    return nullptr;  // type does not support this dimension
  }
}

class EveryType : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryType, ScoreAndAccumulateMatchDecode) {
  const std::string t = GetParam();
  Rng rng(fresh_seed());
  int tested = 0;
  for (int d : {64, 128, 96, 80})
    for (bool key : {true, false}) {
      auto c = try_make(t, d, key);
      if (!c) continue;
      ++tested;
      const int bt = c->block_tokens();
      double e2 = 0, x2 = 0;  // reconstruction error over every block below
      for (size_t nb : {size_t(1), size_t(3), size_t(7)}) {
        const size_t n = nb * bt;
        auto x = randn(rng, n * d, 0.7f);
        std::vector<uint8_t> codes(nb * c->block_bytes() + 16, 0xCD);
        c->encode(x.data(), nb, codes.data());
        for (size_t i = nb * c->block_bytes(); i < codes.size(); ++i)
          ASSERT_EQ(codes[i], 0xCD) << "encode wrote past its blocks";
        std::vector<float> xd(n * d);
        c->decode(codes.data(), nb, xd.data());
        // Scores.
        auto q = randn(rng, d);
        auto qs = c->prepare_query(q.data());
        std::vector<float> s(n);
        c->score(*qs, codes.data(), nb, s.data());
        for (size_t i = 0; i < n; ++i) {
          double ref = 0, mag = 0;
          for (int j = 0; j < d; ++j) {
            ref += double(q[j]) * xd[i * d + j];
            mag += std::fabs(double(q[j]) * xd[i * d + j]);
          }
          EXPECT_NEAR(s[i], ref, 1e-4 * (mag + 1e-3)) << t << " d=" << d << " token " << i;
        }
        // Accumulation.
        auto w = randn(rng, n);
        std::vector<float> acc(c->acc_size(), 0.0f), out(d);
        c->accumulate(codes.data(), nb, w.data(), acc.data());
        c->finish(acc.data(), out.data());
        // Tolerance: relative to the channel's magnitude, with a floor relative to the
        // largest channel (the inverse rotation mixes channels).
        std::vector<double> ref(d, 0.0), mag(d, 0.0);
        double top = 0;
        for (int j = 0; j < d; ++j) {
          for (size_t i = 0; i < n; ++i) {
            ref[j] += double(w[i]) * xd[i * d + j];
            mag[j] += std::fabs(double(w[i]) * xd[i * d + j]);
          }
          top = std::max(top, mag[j]);
        }
        for (int j = 0; j < d; ++j)
          EXPECT_NEAR(out[j], ref[j], 1e-4 * mag[j] + 1e-5 * top) << t << " d=" << d << " ch " << j;
        for (size_t i = 0; i < n * d; ++i) {
          e2 += double(x[i] - xd[i]) * (x[i] - xd[i]);
          x2 += double(x[i]) * x[i];
        }
      }
      // Reconstruction is sane: relative error below 0.9 for every type, over all 11 blocks
      // (one token alone fluctuates too much). TurboQuant_prod's decode carries the QJL noise,
      // ≈0.55 at 2 bits (tq distortion); the others are far lower.
      EXPECT_LT(e2 / x2, 0.9) << t << " d=" << d;
    }
  EXPECT_GT(tested, 0) << t << " supports none of the dims 64/128/96/80";
}

TEST_P(EveryType, ZeroVectorRoundTripsToZero) {
  const std::string t = GetParam();
  for (int d : {64, 128}) {
    auto c = try_make(t, d);
    if (!c) continue;
    const size_t n = c->block_tokens();
    std::vector<float> x(n * d, 0.0f), y(n * d, 1.0f);
    std::vector<uint8_t> codes(c->block_bytes());
    c->encode(x.data(), 1, codes.data());
    c->decode(codes.data(), 1, y.data());
    for (float v : y) EXPECT_EQ(v, 0.0f) << t;
  }
}

TEST_P(EveryType, RejectsNanAndInf) {
  const std::string t = GetParam();
  auto c = try_make(t, 64);
  if (!c) c = try_make(t, 128);
  ASSERT_TRUE(c);
  const int d = c->dim();
  const size_t n = c->block_tokens();
  std::vector<uint8_t> codes(c->block_bytes());
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> x(n * d, 0.5f);
    x[d / 2] = bad;
    EXPECT_THROW(c->encode(x.data(), 1, codes.data()), Error) << t;
  }
}

// Bytes of one block (tokens × bytes) as each type's byte layout is documented in its header
// (src/codecs/*.h, *.cpp), written out here independently of the codecs' block_bytes();
// 0 = a type this table does not know (the test then fails: add its layout).
struct Layout {
  int tokens;
  size_t bytes;
};
size_t ceil8(size_t bits) { return (bits + 7) / 8; }
Layout documented_layout(const std::string& t, int d, bool is_key) {
  const size_t D = size_t(d);
  auto ggml = [&](size_t block) { return Layout{1, D / 32 * block}; };
  auto mse = [&](int b) { return size_t(2) + ceil8(D * b); };  // fp16 norm + codes
  if (t == "f32") return {1, 4 * D};
  if (t == "f16" || t == "bf16") return {1, 2 * D};
  if (t == "fp8_e4m3") return {1, D + 2};  // d E4M3 bytes + fp16 scale
  if (t == "q8_0" || t == "q8_0+h") return ggml(34);  // fp16 d + 32 int8
  if (t == "q4_0" || t == "q4_0+h" || t == "iq4_nl" || t == "iq4_nl+h") return ggml(18);
  if (t == "q4_1" || t == "q4_1+h") return ggml(20);  // fp16 d, m + 16 nibble bytes
  if (t == "q5_0" || t == "q5_0+h") return ggml(22);
  if (t == "q5_1" || t == "q5_1+h") return ggml(24);
  if (t == "int4-g64") return {1, D / 64 * (4 + 32)};  // per 64: fp16 scale, min + 32 bytes
  if (t == "kivi2" || t == "kivi4") {
    const int b = t == "kivi2" ? 2 : 4;
    if (is_key) return {32, 4 * D + 32 * ceil8(D * b)};  // per channel fp16 scale, min
    return {1, D / 32 * 4 + ceil8(D * b)};               // per 32 channels fp16 scale, min
  }
  if (t == "kvarn2" || t == "kvarn4") {  // kvarn.h: 128-token tiles, b-bit codes + fp16 scales
    const size_t b = t == "kvarn2" ? 2 : 4, G = 128;
    if (is_key) return {int(G), ceil8(D * G * b) + 2 * (2 * D + G)};  // S_j, Z_j per channel, T_t
    return {int(G), ceil8(D * G * b) + 2 * (D + 2 * G)};              // C_j, S_t, Z_t
  }
  if (t == "turbo2.5" || t == "turbo3.5") {  // two TurboQuant_mse blocks: d/4 and 3d/4 channels
    const int hi = t == "turbo2.5" ? 3 : 4, lo = hi - 1;
    return {1, 2 + ceil8(D / 4 * hi) + 2 + ceil8((D - D / 4) * lo)};
  }
  if (t.rfind("turbo", 0) == 0) {
    const int b = t[5] - '0';
    const std::string rest = t.substr(6);
    if (rest.empty() || rest == "nc") return {1, mse(b)};
    if (rest == "p") return {1, 4 + ceil8(D * (b - 1)) + ceil8(D)};  // 2 norms, mse, signs
  }
  if (t == "polar") return {1, ceil8(D / 16 * 62)};  // 62 bits per group of 16 coordinates
  if (t == "vllm-k8") return {1, D};
  if (t == "vllm-k4nc") return {1, mse(4)};
  if (t == "vllm-k3nc") return {1, mse(3)};
  if (t == "vllm-v4") return {1, 4 + ceil8(D * 4)};  // fp16 scale and zero + codes
  if (t == "vllm-v3") return {1, 4 + ceil8(D * 3)};
  if (t.rfind("polar-vq:", 0) == 0) {
    // polarvq.h: keys (r, θ) per RoPE pair, fp16 (min, scale) per group of group_size
    // magnitudes (per pair-channel over the block when key_block_tokens > 1); values
    // value_bits codes with fp16 (min, scale) per value_group channels. No stage 2 here.
    const PolarVqParams p = polarvq_preset(t.substr(9));
    if (p.vq_size) return {0, 0};
    if (is_key) {
      const int T = p.key_block_tokens;
      const size_t groups = T == 1 ? (D / 2 + p.group_size - 1) / p.group_size : D / 2;
      return {T, groups * 4 + ceil8(D / 2 * (p.mag_bits + p.angle_bits) * T)};
    }
    return {1, (D + p.value_group - 1) / p.value_group * 4 + ceil8(D * p.value_bits)};
  }
  return {0, 0};
}

TEST_P(EveryType, BpvComesFromTheLayout) {
  const std::string t = GetParam();
  int checked = 0;
  for (int d : {64, 128})
    for (bool is_key : {true, false}) {
      CodecOptions o;
      o.is_key = is_key;
      std::unique_ptr<Codec> c;
      try {
        c = make_codec(t, d, o);
      } catch (const Error&) {
        continue;  // the type does not take this dim
      }
      const Layout l = documented_layout(t, d, is_key);
      ASSERT_GT(l.tokens, 0) << t << ": no documented layout in this test";
      EXPECT_EQ(c->block_tokens(), l.tokens) << t << " d=" << d << " key=" << is_key;
      EXPECT_EQ(c->block_bytes(), l.bytes) << t << " d=" << d << " key=" << is_key;
      EXPECT_DOUBLE_EQ(c->bpv(), 8.0 * double(l.bytes) / (double(l.tokens) * d));
      ++checked;
    }
  EXPECT_GT(checked, 0) << t;
}

// Types that need learned codebooks (polar-vq:balanced/max, kvquant3/4) cannot be made without
// a calibration; test_polarvq and test_kvquant run the same checks with codebooks.
std::vector<std::string> self_contained_types() {
  std::vector<std::string> v;
  for (const auto& t : list_types())
    if (!type_needs_calibration(t)) v.push_back(t);
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, EveryType, ::testing::ValuesIn(self_contained_types()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& ch : s)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

TEST(Registry, KnownBpv) {
  // Layout arithmetic (d = 128): turbo b = b + 16/128; prod = (b−1) + 1 + 32/128;
  // split 2.5 = (32·3 + 96·2 + 2·16)/128; 3.5 = (32·4 + 96·3 + 32)/128; polar = 62/16.
  EXPECT_DOUBLE_EQ(make_codec("turbo3", 128)->bpv(), 3.125);
  EXPECT_DOUBLE_EQ(make_codec("turbo3", 64)->bpv(), 3.25);
  EXPECT_DOUBLE_EQ(make_codec("turbo3p", 128)->bpv(), 3.25);
  EXPECT_DOUBLE_EQ(make_codec("turbo2.5", 128)->bpv(), 2.5);
  EXPECT_DOUBLE_EQ(make_codec("turbo3.5", 128)->bpv(), 3.5);
  EXPECT_DOUBLE_EQ(make_codec("polar", 128)->bpv(), 3.875);
  EXPECT_DOUBLE_EQ(make_codec("f16", 128)->bpv(), 16.0);
}

TEST(Registry, UnknownTypeAndBadDimensionAreErrors) {
  try {
    make_codec("turbo9", 128);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown cache type 'turbo9'"), std::string::npos);
  }
  EXPECT_THROW(make_codec("", 128), Error);
  EXPECT_THROW(make_codec("polar", 72), Error);  // not a multiple of 16
  EXPECT_THROW(make_codec("turbo3", 1), Error);
  EXPECT_THROW(make_codec("turbo3", 100000), Error);
}

TEST(Turbo, ProdIsUnbiasedAndSeedMatters) {
  // Same vector, different seeds → different codes; the cache type's seed is its identity.
  Rng rng(fresh_seed());
  auto x = randn(rng, 128);
  CodecOptions a, b;
  a.seed = 1;
  b.seed = 2;
  auto ca = make_codec("turbo3", 128, a), cb = make_codec("turbo3", 128, b);
  std::vector<uint8_t> xa(ca->block_bytes()), xb(cb->block_bytes());
  ca->encode(x.data(), 1, xa.data());
  cb->encode(x.data(), 1, xb.data());
  EXPECT_NE(xa, xb);
}

TEST(Turbo, SplitOutlierChannelsAreValidated) {
  CodecOptions o;
  o.outlier_channels = {0, 1, 2};  // wrong count for d = 64 (needs 16)
  EXPECT_THROW(make_codec("turbo2.5", 64, o), Error);
  o.outlier_channels.assign(16, 3);  // repeated
  EXPECT_THROW(make_codec("turbo2.5", 64, o), Error);
  o.outlier_channels.clear();
  for (int j = 0; j < 16; ++j) o.outlier_channels.push_back(63 - 2 * j);
  EXPECT_NO_THROW(make_codec("turbo2.5", 64, o));
}

}  // namespace
}  // namespace tq
