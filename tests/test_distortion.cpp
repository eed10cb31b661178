// The TurboQuant paper's numbers (DESIGN.md §2.2), measured through the codecs' own encode, decode and
// score paths on random unit vectors (d = 128, 20,000 samples).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/lloyd_max.h"
#include "eval/distortion.h"

namespace tq {
namespace {

// A fixed seed: these are statistical checks (e.g. |mean error| < 3 standard errors, which a
// fresh seed would fail 0.3% of the time by design); the kernels themselves are checked on
// fresh random inputs in test_codecs / test_cpu_kernels.
const uint64_t kSeed = 20261129;

TEST(Distortion, TurboMseMatchesPaperAndBounds) {
  const double want[] = {0.360, 0.116, 0.034, 0.0093};
  for (int b = 1; b <= 4; ++b) {
    const auto r = measure_distortion("turbo" + std::to_string(b), 128, 20000, kSeed);
    EXPECT_NEAR(r.d_mse, want[b - 1], 0.03 * want[b - 1]) << "b=" << b;
    EXPECT_GE(r.d_mse, std::pow(4.0, -b)) << "b=" << b;
    EXPECT_LE(r.d_mse, std::sqrt(3.0) * M_PI / 2 * std::pow(4.0, -b)) << "b=" << b;
    // _mse is biased: inner products shrink (2/π at b = 1).
    EXPECT_LT(r.ip_slope, 1.0 - 0.005 * std::pow(4.0, 2 - b) - 3 * r.ip_bias_se) << "b=" << b;
  }
  const auto r1 = measure_distortion("turbo1", 128, 20000, kSeed + 1);
  EXPECT_NEAR(r1.ip_slope, 2 / M_PI, 0.03);
}

TEST(Distortion, TurboProdIsUnbiasedWithPredictedVariance) {
  for (int b = 2; b <= 4; ++b) {
    const int d = 128;
    const auto r = measure_distortion("turbo" + std::to_string(b) + "p", d, 20000, kSeed + b);
    const double theory = M_PI / (2.0 * d) * lloyd_max_codebook(d, b - 1).unit_mse();
    EXPECT_NEAR(r.ip_var, theory, 0.10 * theory) << "b=" << b;
    EXPECT_LT(std::fabs(r.ip_bias), 3 * r.ip_bias_se) << "b=" << b;
    EXPECT_NEAR(r.ip_slope, 1.0, 0.05) << "b=" << b;
  }
}

TEST(Distortion, FractionalTypesSitBetweenNeighbours) {
  const auto t2 = measure_distortion("turbo2", 128, 5000, kSeed);
  const auto t25 = measure_distortion("turbo2.5", 128, 5000, kSeed);
  const auto t3 = measure_distortion("turbo3", 128, 5000, kSeed);
  const auto t35 = measure_distortion("turbo3.5", 128, 5000, kSeed);
  const auto t4 = measure_distortion("turbo4", 128, 5000, kSeed);
  EXPECT_LT(t25.d_mse, t2.d_mse);
  EXPECT_GT(t25.d_mse, t3.d_mse);
  EXPECT_LT(t35.d_mse, t3.d_mse);
  EXPECT_GT(t35.d_mse, t4.d_mse);
}

TEST(Distortion, PolarIsBetweenThreeAndFourBits) {
  const auto p = measure_distortion("polar", 128, 5000, kSeed);
  EXPECT_DOUBLE_EQ(p.bpv, 3.875);
  EXPECT_LT(p.d_mse, measure_distortion("turbo3", 128, 5000, kSeed).d_mse);
  EXPECT_GT(p.d_mse, measure_distortion("turbo4", 128, 5000, kSeed).d_mse);
}

TEST(Distortion, OtherDimensions) {
  // Exact-density Lloyd-Max at d = 64 and the dense-rotation path at d = 96.
  for (int d : {64, 96})
    for (int b = 1; b <= 4; ++b) {
      const auto r = measure_distortion("turbo" + std::to_string(b), d, 8000, kSeed + d);
      const double theory = lloyd_max_codebook(d, b).unit_mse();
      EXPECT_NEAR(r.d_mse, theory, 0.04 * theory) << "d=" << d << " b=" << b;
    }
}

}  // namespace
}  // namespace tq
