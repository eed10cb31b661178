// Baseline cache types (DESIGN.md §2.5): ggml block formats (+h), fp8_e4m3, int4-g64, KIVI, and
// the vLLM TurboQuant component codecs and presets.
//
// Byte-level tests use inputs whose encoding is derived by hand from each format's definition
// (the derivation is in the comments); the property tests check, on fresh random inputs, that
// scores and accumulations computed from codes equal the same computation on decoded vectors.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "codecs/fp8.h"
#include "codecs/ggml_blocks.h"
#include "codecs/presets.h"
#include "codecs/vllm_tq.h"
#include "core/half.h"
#include "core/rng.h"
#include "core/rotation.h"
#include "tq/codec.h"

namespace tq {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes encode_with(const std::string& type, int d, const std::vector<float>& x, bool is_key = true) {
  CodecOptions o;
  o.is_key = is_key;
  auto c = make_codec(type, d, o);
  const size_t per_block = size_t(c->block_tokens()) * d;
  EXPECT_EQ(x.size() % per_block, 0u);
  const size_t nb = x.size() / per_block;
  Bytes out(nb * c->block_bytes());
  c->encode(x.data(), nb, out.data());
  return out;
}

// The bytes b repeated `times` times.
Bytes repeat(const Bytes& b, int times) {
  Bytes r;
  for (int i = 0; i < times; ++i)
    for (uint8_t v : b) r.push_back(v);
  return r;
}

// ====================================================================== ggml: hand-derived bytes

// q8_0: x0 = 3 is the largest magnitude → d = 3/127 = 0.0236220… = 2^-6·1.51181, fp16 exponent
// field 15−6 = 9, mantissa round(0.51181·1024 = 524.09) = 524 = 0x20C → d = 0x260C.
// qs_j = roundf(x_j·127/3): 3 → 127, −1.4 → −59.27 → −59 (0xC5), 1 → 42.33 → 42,
// 0.5 → 21.17 → 21, −3 → −127 (0x81), 0.01 → 0.42 → 0, 0.02 → 0.85 → 1, 0 → 0.
TEST(GgmlBytes, Q8_0) {
  std::vector<float> x(64, 0.0f);
  x[0] = 3.0f, x[1] = -1.4f, x[2] = 1.0f, x[3] = 0.5f, x[4] = -3.0f, x[5] = 0.01f, x[6] = 0.02f;
  for (int j = 32; j < 64; ++j) x[j] = x[j - 32];
  Bytes want(68, 0);
  const int qs[7] = {127, -59, 42, 21, -127, 0, 1};
  for (int b = 0; b < 2; ++b) {
    want[34 * b] = 0x0C, want[34 * b + 1] = 0x26;
    for (int j = 0; j < 7; ++j) want[34 * b + 2 + j] = uint8_t(int8_t(qs[j]));
  }
  EXPECT_EQ(encode_with("q8_0", 64, x), want);
  // Decode: qs·fp16(d) with fp16(d) = 2^-6·(1 + 524/1024).
  auto c = make_codec("q8_0", 64);
  std::vector<float> y(64);
  c->decode(want.data(), 1, y.data());
  const float d16 = 0.015625f * (1.0f + 524.0f / 1024.0f);
  for (int j = 0; j < 7; ++j) EXPECT_EQ(y[j], float(qs[j]) * d16);
}

// q4_0, two blocks. Block 0: the largest magnitude is x0 = −4 → d = −4/−8 = 0.5 (fp16 0x3800),
// q = min(15, trunc(2x + 8.5)): −4 → 0, 3 → 14, 1 → 10, −1.2 → 6, 0.3 → 9, 3.9 → 16 → 15,
// 0 → 8. Byte j = q_j | q_{j+16} << 4: (0,14) → 0xE0, (10,6) → 0x6A, (9,15) → 0xF9, else 0x88.
// Block 1: largest magnitude x5 = +2 → d = 2/−8 = −0.25 (fp16 0xB400), 1/d = −4:
// 1 → trunc(−4 + 8.5) = 4, −1 (element 16) → 12, 2 → 0, 0 → 8: bytes 0xC4, 0x80 at j = 5.
TEST(GgmlBytes, Q4_0) {
  std::vector<float> x(64, 0.0f);
  x[0] = -4.0f, x[16] = 3.0f, x[1] = 1.0f, x[17] = -1.2f, x[2] = 0.3f, x[18] = 3.9f;
  x[32 + 0] = 1.0f, x[32 + 16] = -1.0f, x[32 + 5] = 2.0f;
  Bytes want(36, 0x88);
  want[0] = 0x00, want[1] = 0x38, want[2] = 0xE0, want[3] = 0x6A, want[4] = 0xF9;
  want[18] = 0x00, want[19] = 0xB4, want[20] = 0xC4, want[20 + 5] = 0x80;
  EXPECT_EQ(encode_with("q4_0", 64, x), want);
}

// q4_1: min = −1, max = 2 → d = 3/15 = 0.2 = 2^-3·1.6 → fp16 0x3000 | round(0.6·1024 = 614.4)
// = 0x3266; m = −1 = 0xBC00. q = min(15, trunc((x + 1)·5 + 0.5)): −1 → 0, 2 → 15, 0 → 5,
// 0.55 → 8 (8.25). Bytes: (0,15) → 0xF0, (5,8) → 0x85, (5,5) → 0x55.
TEST(GgmlBytes, Q4_1) {
  std::vector<float> x(32, 0.0f);
  x[0] = -1.0f, x[16] = 2.0f, x[1] = 0.0f, x[17] = 0.55f;
  Bytes want(20, 0x55);
  want[0] = 0x66, want[1] = 0x32, want[2] = 0x00, want[3] = 0xBC, want[4] = 0xF0, want[5] = 0x85;
  Bytes x2 = encode_with("q4_1", 32 * 3, [&] {
    std::vector<float> y;
    for (int r = 0; r < 3; ++r) y.insert(y.end(), x.begin(), x.end());
    return y;
  }());
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(Bytes(x2.begin() + 20 * r, x2.begin() + 20 * (r + 1)), want);
}

// q5_0: largest magnitude −8 → d = 0.5 (0x3800); q = min(31, trunc(2x + 16.5)): −8 → 0,
// 7.9 → 32 → 31 (0b11111), 1 → 18 (0b10010), −3 → 10 (0b01010), 0 → 16 (0b10000).
// qs: (0, 31&15) → 0xF0, (18&15 = 2, 10) → 0xA2, (0, 0) → 0x00. qh = bit 4 of each element:
// all set except elements 0 and 17 → 0xFFFDFFFE, little endian FE FF FD FF.
TEST(GgmlBytes, Q5_0) {
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f, x[16] = 7.9f, x[1] = 1.0f, x[17] = -3.0f;
  Bytes want(22, 0x00);
  want[0] = 0x00, want[1] = 0x38;
  want[2] = 0xFE, want[3] = 0xFF, want[4] = 0xFD, want[5] = 0xFF;
  want[6] = 0xF0, want[7] = 0xA2;
  EXPECT_EQ(encode_with("q5_0", 32 * 2, [&] {
              auto y = x;
              y.insert(y.end(), x.begin(), x.end());
              return y;
            }()),
            repeat(want, 2));
}

// q5_1: min = −1, max = 30 → d = 31/31 = 1 (0x3C00), m = −1 (0xBC00); q = trunc(x + 1.5):
// −1 → 0, 30 → 31, 0 → 1, 15.6 → 17 (0b10001), 14.4 → 15 (0b01111).
// qs: (0, 15) → 0xF0, (1, 1) → 0x11, (15, 1) → 0x1F, (1, 1) → 0x11. qh: elements 16, 17 have
// bit 4 → 0x00030000 → 00 00 03 00.
TEST(GgmlBytes, Q5_1) {
  std::vector<float> x(64, 0.0f);
  x[0] = -1.0f, x[16] = 30.0f, x[17] = 15.6f, x[2] = 14.4f;
  for (int j = 32; j < 64; ++j) x[j] = x[j - 32];
  Bytes want(24, 0x11);
  want[0] = 0x00, want[1] = 0x3C, want[2] = 0x00, want[3] = 0xBC;
  want[4] = 0x00, want[5] = 0x00, want[6] = 0x03, want[7] = 0x00;
  want[8] = 0xF0, want[10] = 0x1F;
  EXPECT_EQ(encode_with("q5_1", 64, x), repeat(want, 2));
}

// iq4_nl: x_j = 0.01·level(L_j) with L = {0 (−127), 15 (113), 8 (1), 3 (−65), 12 (53),
// 7 (−10)} at elements {0, 16, 1, 17, 2, 18}, zeros elsewhere. With ntry = −1 (the cache's
// quantize_row_iq4_nl_ref): d0 = max/−127 = −1.27/−127 = 0.01 maps every x_j to its level
// exactly; the weighted least-squares refit gives d = 0.01 again → fp16 0x211F
// (2^-7·1.28, round(0.28·1024 = 286.72) = 287). Zeros have weight 0 and the nearest level of
// 0 in the first pass is 8 (level 1: 0 ≥ (−10 + 1)/2). qs: (0,15) → 0xF0, (8,3) → 0x38,
// (12,7) → 0x7C, zeros (8,8) → 0x88. The searched variant (ntry = 7) finds the same exact fit
// (itry = 0), so the same bytes.
TEST(GgmlBytes, Iq4Nl) {
  std::vector<float> x(32, 0.0f);
  x[0] = -1.27f, x[16] = 1.13f, x[1] = 0.01f, x[17] = -0.65f, x[2] = 0.53f, x[18] = -0.10f;
  Bytes want(18, 0x88);
  want[0] = 0x1F, want[1] = 0x21, want[2] = 0xF0, want[3] = 0x38, want[4] = 0x7C;
  std::vector<float> x2 = x;
  x2.insert(x2.end(), x.begin(), x.end());
  EXPECT_EQ(encode_with("iq4_nl", 64, x2), repeat(want, 2));
  ggml::BlockIq4Nl b;
  ggml::quantize_row_iq4_nl_ref(x.data(), &b, 1, ggml::kIq4nlNtrySearch);
  EXPECT_EQ(0, std::memcmp(&b, want.data(), 18));
}

// An all-zero block: d = 0 and, without the search, levels 0 (qs 0x00); the search variant
// re-picks with 1/d taken as 0, i.e. the level nearest 0, 8 (qs 0x88).
TEST(GgmlBytes, Iq4NlZeroBlock) {
  std::vector<float> x(32, 0.0f);
  ggml::BlockIq4Nl b;
  ggml::quantize_row_iq4_nl_ref(x.data(), &b, 1);
  EXPECT_EQ(b.d, 0);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], 0x00);
  ggml::quantize_row_iq4_nl_ref(x.data(), &b, 1, ggml::kIq4nlNtrySearch);
  EXPECT_EQ(b.d, 0);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], 0x88);
}

TEST(GgmlBytes, Iq4NlBestIndexMidpoints) {
  // Level j is chosen from the midpoint of levels j−1 and j on (ties to the upper level).
  for (int j = 1; j < 16; ++j) {
    const float mid = 0.5f * float(ggml::kIq4nlValues[j - 1] + ggml::kIq4nlValues[j]);
    EXPECT_EQ(ggml::iq4_nl_best_index(mid), j);
    EXPECT_EQ(ggml::iq4_nl_best_index(std::nextafter(mid, -1000.0f)), j - 1);
  }
  EXPECT_EQ(ggml::iq4_nl_best_index(-1e9f), 0);
  EXPECT_EQ(ggml::iq4_nl_best_index(1e9f), 15);
}

// ====================================================================== ggml: error bounds

// Per block of 32: the largest |x − decode(x)| that the format's rounding allows, with the
// fp16 rounding of the stored scale and min (relative 2^-11) on top.
double ggml_bound(const std::string& f, const float* x) {
  double amax = 0, mn = x[0], mx = x[0];
  for (int j = 0; j < 32; ++j) {
    amax = std::max(amax, double(std::fabs(x[j])));
    mn = std::min(mn, double(x[j]));
    mx = std::max(mx, double(x[j]));
  }
  const double e16 = 1.0 / 2048;  // fp16 relative rounding
  if (f == "q8_0") return amax / 127 * (0.5 + 127 * e16) + 1e-7;
  // Symmetric 4/5-bit: the extreme of the other sign may be clamped one step short.
  if (f == "q4_0") return amax / 8 * (1.0 + 8 * e16) + 1e-7;
  if (f == "q5_0") return amax / 16 * (1.0 + 16 * e16) + 1e-7;
  if (f == "q4_1") return (mx - mn) / 15 * (0.5 + 15 * e16) + std::fabs(mn) * e16 + 1e-7;
  if (f == "q5_1") return (mx - mn) / 31 * (0.5 + 31 * e16) + std::fabs(mn) * e16 + 1e-7;
  // iq4_nl: half the widest level gap (24) times d ≈ amax/127·(refit ≤ 1.3), plus clamping of
  // the far end (level 113 vs 127).
  if (f == "iq4_nl") return amax * 0.2 + 1e-7;
  ADD_FAILURE() << f;
  return 0;
}

TEST(GgmlRoundTrip, ErrorWithinFormatBound) {
  std::mt19937 gen(20261129);
  std::normal_distribution<float> nd;
  std::student_t_distribution<float> td(2.0f);
  for (const char* f : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}) {
    for (int d : {64, 96, 128}) {
      auto c = make_codec(f, d);
      const size_t n = 17;
      std::vector<float> x(n * d), y(n * d);
      for (size_t i = 0; i < x.size(); ++i) x[i] = (i % 3 == 0 ? td(gen) : nd(gen)) * 2.0f + 0.3f;
      Bytes codes(n * c->block_bytes());
      c->encode(x.data(), n, codes.data());
      c->decode(codes.data(), n, y.data());
      for (size_t b = 0; b < x.size() / 32; ++b) {
        const double bound = ggml_bound(f, &x[b * 32]);
        for (int j = 0; j < 32; ++j)
          ASSERT_LE(std::fabs(double(x[b * 32 + j]) - y[b * 32 + j]), bound)
              << f << " d=" << d << " block " << b << " elem " << j;
      }
    }
  }
}

// +h: the bytes are the plain format's bytes of Πx, with Π = Rotation(d, derive_seed(seed, 1)),
// and decoding applies Πᵀ.
TEST(GgmlRotated, BytesAreFormatOfRotatedVector) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd;
  for (int d : {64, 96, 128}) {
    CodecOptions o;
    o.seed = 1234;
    auto plain = make_codec("q4_0", d, o), rot = make_codec("q4_0+h", d, o);
    EXPECT_EQ(rot->block_bytes(), plain->block_bytes());
    std::vector<float> x(d), xr(d);
    for (auto& v : x) v = nd(gen);
    Rotation r(d, derive_seed(o.seed, 1));
    r.forward(x.data(), xr.data());
    Bytes a(plain->block_bytes()), b(rot->block_bytes());
    plain->encode(xr.data(), 1, a.data());
    rot->encode(x.data(), 1, b.data());
    EXPECT_EQ(a, b) << "d=" << d;
    std::vector<float> ya(d), yb(d);
    plain->decode(a.data(), 1, ya.data());
    r.inverse(ya.data(), ya.data());
    rot->decode(b.data(), 1, yb.data());
    for (int j = 0; j < d; ++j) EXPECT_NEAR(ya[j], yb[j], 1e-5f);
  }
}

// ====================================================================== FP8 E4M3FN

TEST(Fp8E4M3, HandValues) {
  EXPECT_EQ(f32_to_e4m3fn_sat(1.0f), 0x38);      // exponent 7 (bias 7), mantissa 0
  EXPECT_EQ(f32_to_e4m3fn_sat(0.5f), 0x30);
  EXPECT_EQ(f32_to_e4m3fn_sat(-1.5f), 0xBC);     // sign, exponent 7, mantissa 4
  EXPECT_EQ(f32_to_e4m3fn_sat(448.0f), 0x7E);    // largest finite
  EXPECT_EQ(f32_to_e4m3fn_sat(1e6f), 0x7E);      // saturates
  EXPECT_EQ(f32_to_e4m3fn_sat(-464.0f), 0xFE);   // would round to 480: saturates
  EXPECT_EQ(f32_to_e4m3fn_sat(0x1p-6f), 0x08);   // smallest normal
  EXPECT_EQ(f32_to_e4m3fn_sat(0x1p-9f), 0x01);   // smallest subnormal
  EXPECT_EQ(f32_to_e4m3fn_sat(0x1p-10f), 0x00);  // half of it: tie → even (0)
  EXPECT_EQ(f32_to_e4m3fn_sat(0x3p-10f), 0x02);  // 1.5 ulp: tie → even (2)
  EXPECT_EQ(f32_to_e4m3fn_sat(0x1.3p0f), 0x3A);  // 1.1875: between 1.125 and 1.25, tie → 1.25
  EXPECT_EQ(f32_to_e4m3fn_sat(0x1.1p0f), 0x38);  // 1.0625: tie between 1 and 1.125 → 1
  EXPECT_EQ(f32_to_e4m3fn_sat(0.0f), 0x00);
  EXPECT_EQ(f32_to_e4m3fn_sat(-0.0f), 0x80);
  EXPECT_EQ(e4m3fn_to_f32(0x7E), 448.0f);
  EXPECT_EQ(e4m3fn_to_f32(0x01), 0x1p-9f);
  EXPECT_TRUE(std::isnan(e4m3fn_to_f32(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3fn_to_f32(0xFF)));
}

// Bit exactness over the whole code space: every finite code round-trips; every midpoint
// between neighbours rounds to the one with the even code; just off the midpoint rounds to the
// nearer one.
TEST(Fp8E4M3, RoundToNearestEvenEverywhere) {
  for (int c = 0; c < 0x7E; ++c) {
    for (int s : {0, 0x80}) {
      const uint8_t code = uint8_t(c | s);
      const float v = e4m3fn_to_f32(code);
      EXPECT_EQ(f32_to_e4m3fn_sat(v), code) << c;
      const float next = e4m3fn_to_f32(uint8_t((c + 1) | s));
      const float mid = 0.5f * (v + next);
      const int even = (c % 2 == 0) ? c : c + 1;
      EXPECT_EQ(f32_to_e4m3fn_sat(mid), uint8_t(even | s)) << c;
      EXPECT_EQ(f32_to_e4m3fn_sat(std::nextafter(mid, 0.0f)), uint8_t(c | s)) << c;
      EXPECT_EQ(f32_to_e4m3fn_sat(std::nextafter(mid, s ? -1e9f : 1e9f)), uint8_t((c + 1) | s));
    }
  }
  EXPECT_EQ(e4m3fn_to_f32(0x7E), 448.0f);
  EXPECT_EQ(f32_to_e4m3fn_sat(std::nextafter(448.0f, 1e9f)), 0x7E);
}

// fp8_e4m3 cache type: amax = 896 → s = 2 (fp16 0x4000); codes of x/2: 448 → 0x7E,
// 0.5 → 0x30, −1.5 → 0xBC, 0 → 0x00.
TEST(Fp8E4M3, CodecBytes) {
  std::vector<float> x(64, 0.0f);
  x[0] = 896.0f, x[1] = 1.0f, x[2] = -3.0f;
  Bytes want(66, 0x00);
  want[0] = 0x00, want[1] = 0x40, want[2] = 0x7E, want[3] = 0x30, want[4] = 0xBC;
  EXPECT_EQ(encode_with("fp8_e4m3", 64, x), want);
}

// ====================================================================== int4-g64, KIVI, vLLM

// int4-g64: group min −1, max 14 → s = 15/15 = 1 (0x3C00), m = −1 (0xBC00);
// q = round_half_even(x + 1): −1 → 0, 14 → 15, 0.5 → 1.5 → 2, 1.5 → 2.5 → 2, 0 → 1.
// Bytes: q0 | q1 << 4 = 0xF0, q2 | q3 << 4 = 0x22, then 0x11.
TEST(Int4G64, HandBytes) {
  std::vector<float> x(128, 0.0f);
  x[0] = -1.0f, x[1] = 14.0f, x[2] = 0.5f, x[3] = 1.5f;
  for (int j = 64; j < 128; ++j) x[j] = x[j - 64];
  Bytes g(36, 0x11);
  g[0] = 0x00, g[1] = 0x3C, g[2] = 0x00, g[3] = 0xBC, g[4] = 0xF0, g[5] = 0x22;
  EXPECT_EQ(encode_with("int4-g64", 128, x), repeat(g, 2));
}

// KIVI values (per token, groups of 32 channels), 2 bits: min −1, max 2 → s = 1, m = −1;
// q = round(x + 1): −1 → 0, 2 → 3, 0.5 → 2 (1.5 to even), 0 → 1. Codes LSB-first 2-bit:
// byte 0 = 0 | 3<<2 | 2<<4 | 1<<6 = 0x6C, then 1,1,1,1 = 0x55.
TEST(Kivi, ValueHandBytes) {
  std::vector<float> x(32, 0.0f);
  x[0] = -1.0f, x[1] = 2.0f, x[2] = 0.5f, x[3] = 0.0f;
  Bytes want(4 + 8, 0x55);
  want[0] = 0x00, want[1] = 0x3C, want[2] = 0x00, want[3] = 0xBC, want[4] = 0x6C;
  EXPECT_EQ(encode_with("kivi2", 32, x, /*is_key=*/false), want);
}

// KIVI keys (per channel over 32 tokens), 2 bits: token t has every channel = (t mod 4) − 1,
// so each channel has min −1, max 2 → s = 1, m = −1 and q_t = t mod 4. Block: 32 fp16 scales
// (0x3C00), 32 fp16 mins (0xBC00), then token rows of 32·2/8 = 8 bytes, each (t mod 4)·0x55.
TEST(Kivi, KeyHandBytes) {
  const int d = 32;
  std::vector<float> x(32 * d);
  for (int t = 0; t < 32; ++t)
    for (int j = 0; j < d; ++j) x[t * d + j] = float(t % 4) - 1.0f;
  Bytes want;
  for (int j = 0; j < d; ++j) want.insert(want.end(), {0x00, 0x3C});
  for (int j = 0; j < d; ++j) want.insert(want.end(), {0x00, 0xBC});
  for (int t = 0; t < 32; ++t)
    for (int k = 0; k < 8; ++k) want.push_back(uint8_t((t % 4) * 0x55));
  EXPECT_EQ(encode_with("kivi2", d, x, /*is_key=*/true), want);
}

TEST(Kivi, RegistryNameGivesKeyOrValueForm) {
  for (const char* t : {"kivi2", "kivi4"}) {
    CodecOptions k, v;
    k.is_key = true;
    v.is_key = false;
    EXPECT_EQ(make_codec(t, 128, k)->block_tokens(), 32);
    EXPECT_EQ(make_codec(t, 128, v)->block_tokens(), 1);
  }
}

// vllm-v4: min −1, max 2 → s = 3/15 = 0.2 (fp16 0x3266), zero −1 (0xBC00);
// q = trunc((v + 1)/0.2 + 0.5): −1 → 0, 0.4 → 7, 2 → 15, 0 → 5, 1 → 10.
// Nibbles low first: (0,7) → 0x70, (15,5) → 0x5F, (5,5) → 0x55, (5,10) → 0xA5.
TEST(Vllm, ValueHandBytes) {
  const std::vector<float> v = {-1.0f, 0.4f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f};
  const Bytes want4 = {0x70, 0x5F, 0x55, 0xA5, 0x66, 0x32, 0x00, 0xBC};
  EXPECT_EQ(encode_with("vllm-v4", 8, v), want4);
  // vllm-v3: values 0..7 → s = 1, zero 0, q = v; eight 3-bit codes in 24 bits,
  // Σ q_i << 3i = 0xD63478 for q = (0,7,1,2,3,4,5,6) → 78 34 D6.
  const std::vector<float> w = {0, 7, 1, 2, 3, 4, 5, 6};
  const Bytes want3 = {0x78, 0x34, 0xD6, 0x00, 0x3C, 0x00, 0x00};
  EXPECT_EQ(encode_with("vllm-v3", 8, w), want3);
}

TEST(Vllm, Fp8KeysAreUnscaledE4M3) {
  std::vector<float> x(8, 0.0f);
  x[0] = 1.0f, x[1] = 500.0f, x[2] = -1.5f, x[3] = 0x1p-9f;
  const Bytes want = {0x38, 0x7E, 0xBC, 0x01, 0, 0, 0, 0};
  EXPECT_EQ(encode_with("vllm-k8", 8, x), want);
}

// vLLM's Lloyd-Max for N(0, σ² = 1/d) is the Gaussian Lloyd-Max quantizer, 3-bit centroids
// ±0.2451σ, ±0.7560σ, ±1.3440σ, ±2.1520σ, midpoints 0, ±0.5006σ, ±1.0500σ, ±1.7480σ.
TEST(Vllm, MseKeyHandBytes) {
  // x = 2·e_0 (d = 64): n = 2, x̂ = e_0, y = H e_0/8 = 1/8 = 1σ in every coordinate. Five
  // midpoints are ≤ 1σ (the next is 1.05σ), so idx = 5 everywhere: a 3-bit stream of 5s is
  // 0xB6DB6D per 8 codes → 6D DB B6 ×8, then fp16 2 = 0x4000.
  const int d = 64;
  std::vector<float> x(d, 0.0f);
  x[0] = 2.0f;
  Bytes want;
  for (int k = 0; k < 8; ++k) want.insert(want.end(), {0x6D, 0xDB, 0xB6});
  want.insert(want.end(), {0x00, 0x40});
  const Bytes got = encode_with("vllm-k3nc", d, x);
  EXPECT_EQ(got, want);
  // Norm correction: all centroids equal, so x̃ = 2·e_0 up to float rounding.
  auto c = make_codec("vllm-k3nc", d);
  std::vector<float> y(d);
  c->decode(got.data(), 1, y.data());
  EXPECT_NEAR(y[0], 2.0f, 1e-5f);
  for (int j = 1; j < d; ++j) EXPECT_NEAR(y[j], 0.0f, 1e-5f);
}

// Gaussian Lloyd-Max centroids (positive half, units of σ) from the classic tables (Max 1960).
TEST(Vllm, CodebookIsGaussianLloydMax) {
  const std::vector<double> c3 = {0.2451, 0.7560, 1.3440, 2.1520};
  const std::vector<double> c4 = {0.1284, 0.3881, 0.6568, 0.9424,
                                  1.2562, 1.6180, 2.0690, 2.7326};
  for (int d : {64, 128}) {
    const double sigma = 1.0 / std::sqrt(double(d));
    for (int bits : {3, 4}) {
      const auto& cb = vllm_codebook(d, bits);
      const auto& ref = bits == 3 ? c3 : c4;
      const int n = 1 << bits;
      ASSERT_EQ(int(cb.centroids.size()), n);
      ASSERT_EQ(int(cb.midpoints.size()), n - 1);
      for (int i = 0; i < n / 2; ++i) {
        EXPECT_NEAR(cb.centroids[n / 2 + i] / sigma, ref[i], 2e-3) << bits << " " << i;
        EXPECT_NEAR(cb.centroids[n / 2 - 1 - i] / sigma, -ref[i], 2e-3) << bits << " " << i;
      }
      for (int i = 0; i + 1 < n; ++i)
        EXPECT_EQ(cb.midpoints[i], (cb.centroids[i] + cb.centroids[i + 1]) / 2.0f);
    }
  }
}

TEST(Vllm, NormCorrectionKeepsTheStoredNorm) {
  std::mt19937 gen(3);
  std::normal_distribution<float> nd;
  for (const char* t : {"vllm-k3nc", "vllm-k4nc"})
    for (int d : {64, 128}) {
      auto c = make_codec(t, d);
      std::vector<float> x(d), y(d);
      for (auto& v : x) v = nd(gen) * 3.0f;
      Bytes b(c->block_bytes());
      c->encode(x.data(), 1, b.data());
      c->decode(b.data(), 1, y.data());
      double nx = 0, ny = 0;
      for (int j = 0; j < d; ++j) nx += double(x[j]) * x[j], ny += double(y[j]) * y[j];
      EXPECT_NEAR(std::sqrt(ny), round_f16(float(std::sqrt(nx))), 1e-4 * std::sqrt(nx));
    }
}

// ====================================================================== every new type

struct TypeSpec {
  std::string name;
  std::vector<int> dims;      // supported dims to test
  std::vector<int> bad_dims;  // dims that must be refused
  double bpv64, bpv128;       // documented bpv
  bool fp16_meta = true;      // refuses values outside the fp16 range
};

const std::vector<TypeSpec>& specs() {
  static const std::vector<TypeSpec> s = [] {
    std::vector<TypeSpec> v;
    const std::pair<const char*, double> ggml[] = {{"q8_0", 8.5}, {"q4_0", 4.5}, {"q4_1", 5.0},
                                                   {"q5_0", 5.5}, {"q5_1", 6.0}, {"iq4_nl", 4.5}};
    for (auto [n, b] : ggml) {
      v.push_back({n, {64, 96, 128}, {80, 48, 100}, b, b});
      v.push_back({std::string(n) + "+h", {64, 96, 128}, {80, 40}, b, b});
    }
    v.push_back({"fp8_e4m3", {64, 80, 96, 128}, {}, 8.25, 8.125});
    v.push_back({"int4-g64", {64, 128}, {96, 80, 32}, 4.5, 4.5});
    v.push_back({"kivi2", {64, 96, 128}, {80, 48}, 3.0, 3.0});
    v.push_back({"kivi4", {64, 96, 128}, {80, 48}, 5.0, 5.0});
    v.push_back({"vllm-k8", {64, 80, 96, 128}, {}, 8.0, 8.0, false});
    v.push_back({"vllm-k4nc", {64, 128}, {96, 80}, 4.25, 4.125});
    v.push_back({"vllm-k3nc", {64, 128}, {96, 80}, 3.25, 3.125});
    v.push_back({"vllm-v4", {64, 80, 96, 128}, {68, 20}, 4.5, 4.25});
    v.push_back({"vllm-v3", {64, 80, 96, 128}, {68, 20}, 3.5, 3.25});
    return v;
  }();
  return s;
}

// Random KV-like data: Gaussian with per-channel scales and offsets, and a few outliers.
std::vector<float> kv_data(size_t tokens, int d, std::mt19937& gen) {
  std::normal_distribution<float> nd;
  std::vector<float> scale(d), off(d), x(tokens * d);
  for (int j = 0; j < d; ++j) scale[j] = std::exp(nd(gen) * 0.7f), off[j] = nd(gen) * 0.5f;
  for (size_t t = 0; t < tokens; ++t)
    for (int j = 0; j < d; ++j) x[t * d + j] = off[j] + scale[j] * nd(gen);
  x[gen() % x.size()] *= 20.0f;
  return x;
}

void check_scores_and_accumulation(const std::string& type, int d, bool is_key,
                                   std::mt19937& gen) {
  CodecOptions o;
  o.is_key = is_key;
  o.seed = gen();
  auto c = make_codec(type, d, o);
  const int bt = c->block_tokens();
  for (size_t nb : {size_t(1), size_t(3), size_t(bt == 1 ? 40 : 2)}) {
    const size_t n = nb * bt;
    std::vector<float> x = kv_data(n, d, gen), y(n * d);
    Bytes codes(nb * c->block_bytes());
    c->encode(x.data(), nb, codes.data());
    c->decode(codes.data(), nb, y.data());
    // Scores from codes vs q · decode(codes).
    std::normal_distribution<float> nd;
    std::vector<float> q(d);
    for (auto& v : q) v = nd(gen);
    auto qs = c->prepare_query(q.data());
    std::vector<float> s(n);
    c->score(*qs, codes.data(), nb, s.data());
    for (size_t t = 0; t < n; ++t) {
      double ref = 0, mag = 0;
      for (int j = 0; j < d; ++j) {
        ref += double(q[j]) * y[t * d + j];
        mag += std::fabs(double(q[j]) * y[t * d + j]);
      }
      ASSERT_NEAR(s[t], ref, 2e-5 * mag + 1e-6) << type << " d=" << d << " token " << t;
    }
    // Accumulation from codes vs Σ w·decode(codes), split over two calls where possible.
    std::uniform_real_distribution<float> ud(0.0f, 1.0f);
    std::vector<float> w(n), acc(c->acc_size(), 0.0f), out(d);
    for (auto& v : w) v = ud(gen);
    const size_t first = nb / 2;
    c->accumulate(codes.data(), first, w.data(), acc.data());
    c->accumulate(codes.data() + first * c->block_bytes(), nb - first, w.data() + first * bt,
                  acc.data());
    c->finish(acc.data(), out.data());
    double err2 = 0, mag = 0;
    for (int j = 0; j < d; ++j) {
      double ref = 0;
      for (size_t t = 0; t < n; ++t) ref += double(w[t]) * y[t * d + j];
      err2 += (out[j] - ref) * (out[j] - ref);
    }
    for (size_t t = 0; t < n; ++t) {
      double yn = 0;
      for (int j = 0; j < d; ++j) yn += double(y[t * d + j]) * y[t * d + j];
      mag += w[t] * std::sqrt(yn);
    }
    ASSERT_LE(std::sqrt(err2), 2e-5 * mag + 1e-6) << type << " d=" << d << " nb=" << nb;
  }
}

TEST(BaselineTypes, ScoresAndAccumulationFromCodesMatchDecode) {
  std::mt19937 gen(42);
  for (const auto& sp : specs())
    for (int d : sp.dims) {
      check_scores_and_accumulation(sp.name, d, true, gen);
      if (sp.name.rfind("kivi", 0) == 0)
        check_scores_and_accumulation(sp.name, d, false, gen);
    }
}

TEST(BaselineTypes, BpvFromBlockBytesMatchesDocumentation) {
  for (const auto& sp : specs()) {
    for (bool key : {true, false}) {
      CodecOptions o;
      o.is_key = key;
      EXPECT_DOUBLE_EQ(make_codec(sp.name, 64, o)->bpv(), sp.bpv64) << sp.name;
      EXPECT_DOUBLE_EQ(make_codec(sp.name, 128, o)->bpv(), sp.bpv128) << sp.name;
    }
  }
  EXPECT_EQ(make_codec("q8_0", 128)->block_bytes(), 4u * 34);
  EXPECT_EQ(make_codec("q5_1", 64)->block_bytes(), 2u * 24);
  EXPECT_EQ(make_codec("iq4_nl+h", 96)->block_bytes(), 3u * 18);
  EXPECT_EQ(make_codec("fp8_e4m3", 96)->block_bytes(), 98u);
  CodecOptions key;
  EXPECT_EQ(make_codec("kivi2", 128, key)->block_bytes(), 4u * 128 + 32 * 32);
}

TEST(BaselineTypes, NonFiniteInputIsAnError) {
  for (const auto& sp : specs()) {
    for (bool key : {true, false}) {
      CodecOptions o;
      o.is_key = key;
      const int d = sp.dims.front();
      auto c = make_codec(sp.name, d, o);
      const size_t n = size_t(c->block_tokens()) * d;
      Bytes codes(c->block_bytes());
      for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
        std::vector<float> x(n, 0.5f);
        x[n / 2 + 1] = bad;
        EXPECT_THROW(c->encode(x.data(), 1, codes.data()), Error) << sp.name;
      }
      std::vector<float> big(n, 0.5f);
      big[3] = 1e6f;
      if (sp.fp16_meta) EXPECT_THROW(c->encode(big.data(), 1, codes.data()), Error) << sp.name;
      else EXPECT_NO_THROW(c->encode(big.data(), 1, codes.data())) << sp.name;
    }
  }
}

TEST(BaselineTypes, ZeroVectorRoundTripsToZero) {
  for (const auto& sp : specs())
    for (int d : sp.dims)
      for (bool key : {true, false}) {
        CodecOptions o;
        o.is_key = key;
        auto c = make_codec(sp.name, d, o);
        const size_t n = size_t(c->block_tokens()) * d;
        std::vector<float> x(n, 0.0f), y(n, 1.0f);
        Bytes codes(c->block_bytes());
        c->encode(x.data(), 1, codes.data());
        c->decode(codes.data(), 1, y.data());
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(y[i], 0.0f) << sp.name << " d=" << d;
      }
}

TEST(BaselineTypes, UnsupportedDimIsAnError) {
  for (const auto& sp : specs())
    for (int d : sp.bad_dims) {
      try {
        make_codec(sp.name, d);
        ADD_FAILURE() << sp.name << " accepted d=" << d;
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find(sp.name), std::string::npos) << m;
        EXPECT_NE(m.find(std::to_string(d)), std::string::npos) << m;
      }
    }
}

// ====================================================================== presets

TEST(Presets, ExpandIntoKeyValueTypesAndBoundaryLayers) {
  using P = std::pair<std::string, std::string>;
  const std::pair<const char*, P> want[] = {{"turboquant_k8v4", {"vllm-k8", "vllm-v4"}},
                                            {"turboquant_4bit_nc", {"vllm-k4nc", "vllm-v4"}},
                                            {"turboquant_k3v4_nc", {"vllm-k3nc", "vllm-v4"}},
                                            {"turboquant_3bit_nc", {"vllm-k3nc", "vllm-v3"}},
                                            {"kvarn", {"kvarn4", "kvarn2"}}};
  for (const auto& [name, pair] : want) {
    const auto got = preset_pair(name);
    ASSERT_TRUE(got.has_value()) << name;
    EXPECT_EQ(got->first, pair.first);
    EXPECT_EQ(got->second, pair.second);
  }
  EXPECT_FALSE(preset_pair("turbo3").has_value());
  EXPECT_EQ(list_presets().size(), 5u);
  EXPECT_TRUE(preset_boundary_layers("kvarn", 30).empty());  // KVarN quantizes every layer
  // vLLM: first and last min(2, n/2) layers keep the unquantized cache.
  EXPECT_EQ(preset_boundary_layers("turboquant_k3v4_nc", 30), (std::vector<int>{0, 1, 28, 29}));
  EXPECT_EQ(preset_boundary_layers("turboquant_k8v4", 3), (std::vector<int>{0, 2}));
  EXPECT_EQ(preset_boundary_layers("turboquant_k8v4", 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(preset_boundary_layers("nope", 30).empty());
  for (const auto& p : list_presets()) {
    const auto info = preset_info(p);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->boundary_type, "f16");
    for (int d : {64, 128}) {
      EXPECT_NO_THROW(make_codec(info->ctk, d));
      EXPECT_NO_THROW(make_codec(info->ctv, d));
    }
  }
}

// ====================================================================== tq types

TEST(TqTypes, ListsTheBaselinesWithTheirBpv) {
  const std::string cmd = std::string(TQ_TOOL_PATH) + " types --json";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, k);
  ASSERT_EQ(pclose(p), 0);
  const auto j = nlohmann::json::parse(out);
  for (const auto& sp : specs()) {
    bool found = false;
    for (const auto& r : j["rows"])
      if (r["type"] == sp.name) {
        found = true;
        EXPECT_DOUBLE_EQ(r["bpv_d64"].get<double>(), sp.bpv64) << sp.name;
        EXPECT_DOUBLE_EQ(r["bpv_d128"].get<double>(), sp.bpv128) << sp.name;
      }
    EXPECT_TRUE(found) << sp.name;
  }
}

}  // namespace
}  // namespace tq
