// Core building blocks: FWHT, rotations, bit packing, Lloyd-Max codebooks.
#include <gtest/gtest.h>

#include <omp.h>

#include <atomic>
#include <cmath>
#include <new>
#include <random>

#include "core/bitpack.h"
#include "core/half.h"
#include "core/lloyd_max.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/rotation.h"
#include "tq/error.h"

namespace tq {
namespace {

uint64_t fresh_seed() { return std::random_device{}() * 0x100000001ull + std::random_device{}(); }

// Dense Sylvester Hadamard entry H[i][j] = (−1)^popcount(i & j).
float hadamard_entry(int i, int j) { return (__builtin_popcount(i & j) & 1) ? -1.0f : 1.0f; }

TEST(Fwht, EqualsDenseHadamardProduct) {
  Rng rng(fresh_seed());
  for (int n : {1, 2, 4, 8, 64, 128, 256}) {
    std::vector<float> x(n), y(n);
    for (auto& v : x) v = float(rng.normal());
    y = x;
    fwht_ref(y.data(), n);
    for (int i = 0; i < n; ++i) {
      double ref = 0;
      for (int j = 0; j < n; ++j) ref += hadamard_entry(i, j) * x[j];
      EXPECT_NEAR(y[i], ref, 1e-4 * std::sqrt(double(n))) << "n=" << n << " i=" << i;
    }
  }
}

void check_orthogonal(const Rotation& r) {
  const int d = r.dim();
  const auto m = r.matrix();
  double worst = 0;
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) {
      double s = 0;
      for (int k = 0; k < d; ++k) s += double(m[size_t(i) * d + k]) * m[size_t(j) * d + k];
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  EXPECT_LT(worst, 1e-5) << "d=" << d;
}

TEST(Rotation, HadamardAndDenseAreOrthogonalAndInvert) {
  const uint64_t seed = fresh_seed();
  for (int d : {64, 128, 80, 96, 24}) {
    for (bool dense : {false, true}) {
      Rotation r(d, seed, dense);
      EXPECT_EQ(r.kind(), (is_pow2(d) && !dense) ? Rotation::Kind::kHadamard
                                                 : Rotation::Kind::kDense);
      check_orthogonal(r);
      Rng rng(seed + d);
      std::vector<float> x(d), y(d), z(d);
      for (auto& v : x) v = float(rng.normal());
      r.forward(x.data(), y.data());
      r.inverse(y.data(), z.data());
      for (int i = 0; i < d; ++i) EXPECT_NEAR(z[i], x[i], 1e-5);
      // In-place use gives the same result.
      std::vector<float> w = x;
      r.forward(w.data(), w.data());
      for (int i = 0; i < d; ++i) EXPECT_FLOAT_EQ(w[i], y[i]);
    }
  }
}

TEST(Rotation, SeedIsIdentity) {
  Rotation a(64, 1), b(64, 1), c(64, 2);
  EXPECT_EQ(a.matrix(), b.matrix());
  EXPECT_NE(a.matrix(), c.matrix());
}

TEST(BitPack, RoundTripsEveryWidthAndOddLengths) {
  std::mt19937_64 g(fresh_seed());
  for (int bits = 1; bits <= 8; ++bits)
    for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(7), size_t(8), size_t(13),
                     size_t(64), size_t(127), size_t(1001)}) {
      std::vector<uint8_t> codes(n), back(n);
      for (auto& c : codes) c = uint8_t(g() & ((1u << bits) - 1));
      std::vector<uint8_t> packed(packed_bytes(n, bits) + 1, 0xAB);  // canary byte at the end
      pack_bits(codes.data(), n, bits, packed.data());
      EXPECT_EQ(packed.back(), 0xAB) << "wrote past the end";
      unpack_bits(packed.data(), n, bits, back.data());
      EXPECT_EQ(codes, back) << "bits=" << bits << " n=" << n;
    }
}

TEST(BitPack, LayoutIsLsbFirst) {
  // 3-bit codes 1..8 (mod 8): stream bits 001 010 011 100 101 110 111 000 (LSB first).
  const uint8_t codes[8] = {1, 2, 3, 4, 5, 6, 7, 0};
  uint8_t out[3];
  pack_bits(codes, 8, 3, out);
  // byte0 = c0 | c1<<3 | (c2&3)<<6 = 1 | 16 | 192 = 0xD1
  EXPECT_EQ(out[0], 0xD1);
  // byte1 = c2>>2 | c3<<1 | c4<<4 | (c5&1)<<7 = 0 | 8 | 80 | 0 = 0x58
  EXPECT_EQ(out[1], 0x58);
  // byte2 = c5>>1 | c6<<2 | c7<<5 = 3 | 28 | 0 = 0x1F
  EXPECT_EQ(out[2], 0x1F);
  const uint8_t nib[2] = {0x3, 0xC};
  pack_bits(nib, 2, 4, out);
  EXPECT_EQ(out[0], 0xC3);
}

TEST(BitPack, MixedWidthsRoundTrip) {
  std::mt19937_64 g(fresh_seed());
  std::vector<std::pair<uint32_t, int>> items;
  for (int i = 0; i < 500; ++i) {
    const int b = int(g() % 17);
    items.push_back({b ? uint32_t(g() & ((1u << b) - 1)) : 0u, b});
  }
  std::vector<uint8_t> buf(500 * 3);
  BitWriter w(buf.data());
  for (auto [v, b] : items) w.put(v, b);
  BitReader r(buf.data());
  for (auto [v, b] : items) EXPECT_EQ(r.get(b), v);
  EXPECT_EQ(r.bits_read(), w.bits_written());
  // With a size: 64-bit loads while 8 bytes remain, the byte loop for the last fields.
  BitReader f(buf.data(), (w.bits_written() + 7) / 8);
  for (auto [v, b] : items) EXPECT_EQ(f.get(b), v);
  // skip() lands where the reads would have.
  BitReader k(buf.data(), (w.bits_written() + 7) / 8);
  size_t bits = 0;
  for (size_t i = 0; i + 1 < items.size(); ++i) bits += size_t(items[i].second);
  k.skip(bits);
  EXPECT_EQ(k.get(items.back().second), items.back().first);
}

// High-precision reference: adaptive Simpson in long double on the exact density
// f(t) ∝ (1 − t²)^((d−3)/2), in the variable φ (t = sin φ) where it is smooth.
long double simpson(auto f, long double a, long double b, int n = 4000) {
  if (b <= a) return 0;
  const long double h = (b - a) / n;
  long double s = f(a) + f(b);
  for (int i = 1; i < n; ++i) s += f(a + i * h) * ((i & 1) ? 4 : 2);
  return s * h / 3;
}

TEST(LloydMax, MatchesQuadratureReference) {
  for (int d : {2, 3, 16, 64, 96, 128, 256})
    for (int bits : {1, 2, 3, 4, 5}) {
      const auto& cb = lloyd_max_codebook(d, bits);
      const int k = 1 << bits;
      ASSERT_EQ(int(cb.centroids.size()), k);
      const long double e = d - 2.0L;
      auto w = [&](long double p) { return std::pow(std::cos(p), e); };
      auto tw = [&](long double p) { return std::sin(p) * std::pow(std::cos(p), e); };
      const long double total = simpson(w, -M_PIl / 2, M_PIl / 2, 20000);
      double mse = 0;
      for (int i = 0; i < k; ++i) {
        const long double lo = i == 0 ? -1.0L : cb.boundaries[i - 1];
        const long double hi = i == k - 1 ? 1.0L : cb.boundaries[i];
        const long double pa = std::asin(lo), pb = std::asin(hi);
        const long double m0 = simpson(w, pa, pb) / total, m1 = simpson(tw, pa, pb) / total;
        auto t2w = [&](long double p) { return std::sin(p) * std::sin(p) * std::pow(std::cos(p), e); };
        const long double m2 = simpson(t2w, pa, pb) / total;
        // Lloyd-Max optimality: each centroid is the conditional mean of its cell.
        const double cond = double(m1 / m0);
        EXPECT_NEAR(cb.centroids[i], cond, 2e-6 + 2e-5 * std::fabs(cond))
            << "d=" << d << " bits=" << bits << " i=" << i;
        mse += double(m2 - 2 * cb.centroids[i] * m1 + cb.centroids[i] * cb.centroids[i] * m0);
      }
      EXPECT_NEAR(cb.coord_mse, mse, 1e-4 * mse) << "d=" << d << " bits=" << bits;
    }
}

TEST(LloydMax, GaussianLimitCentroids) {
  // SPEC §2.2: centroids ×1/√d → ±0.7979 (b=1); ±0.4528, ±1.5104 (b=2); b=3 listed.
  const int d = 4096;
  const double s = std::sqrt(double(d));
  const auto& c1 = lloyd_max_codebook(d, 1).centroids;
  EXPECT_NEAR(c1[1] * s, 0.7979, 2e-3);
  const auto& c2 = lloyd_max_codebook(d, 2).centroids;
  EXPECT_NEAR(c2[2] * s, 0.4528, 2e-3);
  EXPECT_NEAR(c2[3] * s, 1.5104, 2e-3);
  const auto& c3 = lloyd_max_codebook(d, 3).centroids;
  const double want[4] = {0.2451, 0.7560, 1.3439, 2.1520};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(c3[4 + i] * s, want[i], 3e-3);
}

TEST(LloydMax, RejectsBadArguments) {
  EXPECT_THROW(lloyd_max_codebook(1, 2), Error);
  EXPECT_THROW(lloyd_max_codebook(64, 0), Error);
  EXPECT_THROW(lloyd_max_codebook(64, 9), Error);
}

TEST(Half, RoundTripsAndRounds) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7C00);
  EXPECT_EQ(f32_to_f16(0x1.0p-24f), 0x0001);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1.0p-11f), 0x3C00);  // tie → even
  EXPECT_EQ(f32_to_f16(1.0f + 0x1.8p-11f), 0x3C01);
  for (uint32_t h = 0; h < 0x7C00; ++h) EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
}

// An exception in one thread of an OpenMP region reaches the caller as itself (it used to call
// std::terminate); the other iterations still run or are skipped, never crash.
TEST(ParallelErrors, RethrowsTheFirstExceptionAfterTheRegion) {
  for (int bad : {0, 7, 63}) {
    ParallelErrors errors;
    std::atomic<int> ran{0};
#pragma omp parallel for schedule(dynamic) num_threads(4)
    for (int i = 0; i < 64; ++i)
      errors.run([&] {
        ++ran;
        if (i == bad) throw Error("bad item " + std::to_string(i));
      });
    EXPECT_TRUE(errors.failed());
    try {
      errors.rethrow();
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "bad item " + std::to_string(bad));
    }
    EXPECT_GE(ran.load(), 1);
    EXPECT_FALSE(errors.failed());
    EXPECT_NO_THROW(errors.rethrow());
  }
  // bad_alloc keeps its type, so the tool's top level prints its out-of-memory line.
  ParallelErrors errors;
#pragma omp parallel num_threads(3)
  errors.run([] { throw std::bad_alloc(); });
  EXPECT_THROW(errors.rethrow(), std::bad_alloc);
  // Nothing thrown: rethrow does nothing and every body ran.
  ParallelErrors ok;
  std::atomic<int> n{0};
#pragma omp parallel for num_threads(4)
  for (int i = 0; i < 100; ++i) ok.run([&] { ++n; });
  EXPECT_NO_THROW(ok.rethrow());
  EXPECT_EQ(n.load(), 100);
}

}  // namespace
}  // namespace tq
