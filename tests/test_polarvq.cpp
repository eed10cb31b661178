// polar-vq (the seed's two-stage pipeline): scores from codes, k-means, codebook files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <random>

#include "temp_dir.h"
#include "codecs/polarvq.h"
#include "codecs/polarvq_file.h"
#include "core/kmeans.h"
#include "core/rng.h"
#include "eval/calibrate.h"

namespace tq {
namespace {

uint64_t fresh_seed() { return std::random_device{}() * 0x100000001ull + std::random_device{}(); }

// Random but valid learned data for one head.
std::shared_ptr<PolarVqCalibration> synthetic_calibration(const PolarVqParams& p, int d,
                                                          Rng& rng) {
  auto c = std::make_shared<PolarVqCalibration>();
  c->dim = d;
  const int A = 1 << p.angle_bits;
  for (int i = 0; i < d / 2; ++i) {
    std::vector<float> a(A);
    for (auto& v : a) v = float((rng.uniform() * 2 - 1) * M_PI);
    std::sort(a.begin(), a.end());
    c->angle_centroids.insert(c->angle_centroids.end(), a.begin(), a.end());
  }
  c->value_perm.resize(d);
  for (int j = 0; j < d; ++j) c->value_perm[j] = j;
  for (int j = d - 1; j > 0; --j) std::swap(c->value_perm[j], c->value_perm[rng.next() % (j + 1)]);
  if (p.vq_size) {
    auto book = [&](int g) {
      int s = std::max(1, std::min(p.subspaces, d / g));
      while ((d / g) % s) --s;
      std::vector<float> b(size_t(s) * p.vq_size * g);
      for (auto& v : b) v = 0.1f * float(rng.normal());
      return b;
    };
    c->key_vq = book(p.vq_dim_for(true));
    c->value_vq = book(p.vq_dim_for(false));
  }
  return c;
}

void check_codes_match_decode(const PolarVqParams& p, int d, bool key, Rng& rng,
                              std::shared_ptr<PolarVqCalibration> cal) {
  CodecOptions o;
  o.is_key = key;
  o.calibration = cal;
  o.rope = rng.next() & 1 ? RopePairing::kNeox : RopePairing::kNormal;
  PolarVqCodec c(p, d, o);
  const int T = c.block_tokens();
  for (size_t nb : {size_t(1), size_t(3)}) {
    const size_t n = nb * T;
    std::vector<float> x(n * d), xd(n * d), q(d), w(n), s(n);
    for (auto& v : x) v = float(rng.normal());
    for (auto& v : q) v = float(rng.normal());
    for (auto& v : w) v = float(rng.uniform());
    std::vector<uint8_t> codes(nb * c.block_bytes());
    c.encode(x.data(), nb, codes.data());
    c.decode(codes.data(), nb, xd.data());
    auto qs = c.prepare_query(q.data());
    c.score(*qs, codes.data(), nb, s.data());
    for (size_t t = 0; t < n; ++t) {
      double ref = 0, mag = 0;
      for (int j = 0; j < d; ++j) {
        ref += double(q[j]) * xd[t * d + j];
        mag += std::fabs(double(q[j]) * xd[t * d + j]);
      }
      ASSERT_NEAR(s[t], ref, 1e-4 * mag + 1e-5) << p.preset << " key=" << key << " d=" << d;
    }
    std::vector<float> acc(c.acc_size(), 0.0f), out(d);
    c.accumulate(codes.data(), nb, w.data(), acc.data());
    c.finish(acc.data(), out.data());
    for (int j = 0; j < d; ++j) {
      double ref = 0, mag = 0;
      for (size_t t = 0; t < n; ++t) {
        ref += double(w[t]) * xd[t * d + j];
        mag += std::fabs(double(w[t]) * xd[t * d + j]);
      }
      ASSERT_NEAR(out[j], ref, 1e-4 * mag + 1e-5);
    }
    double e2 = 0, x2 = 0;
    for (size_t i = 0; i < n * d; ++i) e2 += (x[i] - xd[i]) * (x[i] - xd[i]), x2 += x[i] * x[i];
    // Random synthetic codebooks can be arbitrarily bad; the uniform defaults must be sane:
    // 2-bit uniform angles on Gaussian pairs give E[2(1 − cos δ)] ≈ 0.20 (≈ ±0.05 over one
    // d = 64 token), so 0.4 is a loose bound that a broken codec still fails.
    if (!cal) {
      EXPECT_LT(e2 / x2, 0.4) << p.preset << " key=" << key;
    }
  }
}

TEST(PolarVq, ScoreFromCodesEqualsQDotDecodeForEveryPreset) {
  Rng rng(fresh_seed());
  for (const auto& name : polarvq_preset_names())
    for (int d : {64, 128})
      for (bool key : {true, false}) {
        const auto p = polarvq_preset(name);
        check_codes_match_decode(p, d, key, rng, synthetic_calibration(p, d, rng));
        if (!p.vq_size) check_codes_match_decode(p, d, key, rng, nullptr);  // uncalibrated
      }
}

TEST(PolarVq, ChannelGroupedMagnitudes) {
  Rng rng(fresh_seed());
  auto p = polarvq_preset("stage1");  // 4-bit r, 2-bit θ
  p.key_block_tokens = 32;
  check_codes_match_decode(p, 128, true, rng, nullptr);
  CodecOptions o;
  EXPECT_EQ(PolarVqCodec(p, 128, o).block_tokens(), 32);
  // 64 pair-channels × (fp16 min + scale) per block + 32 tokens × 64 × 6 bits.
  EXPECT_EQ(PolarVqCodec(p, 128, o).block_bytes(), size_t(64 * 4 + 32 * 64 * 6 / 8));
}

TEST(PolarVq, PresetsHitTheirCompressionTargets) {
  // DESIGN.md §2.4: quality ≈4x, balanced ≈6x, max ≈8x, gqa ≈3.5x vs f16, ±10%, at d = 128.
  const std::pair<const char*, double> targets[] = {
      {"quality", 4.0}, {"balanced", 6.0}, {"max", 8.0}, {"gqa", 3.5}};
  for (auto [name, x] : targets) {
    double bpv = 0;
    for (bool key : {true, false}) {
      CodecOptions o;
      o.is_key = key;
      bpv += 0.5 * make_codec(std::string("polar-vq:") + name, 128, o)->bpv();
    }
    EXPECT_NEAR(16.0 / bpv, x, 0.1 * x) << name << " bpv=" << bpv;
  }
}

TEST(PolarVq, NeedsCodebooksForStageTwo) {
  CodecOptions vo;
  vo.is_key = false;  // balanced has stage 2 on values
  auto c = make_codec("polar-vq:balanced", 128, vo);
  std::vector<float> x(128, 1.0f);
  std::vector<uint8_t> codes(c->block_bytes());
  try {
    c->encode(x.data(), 1, codes.data());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tq calibrate"), std::string::npos);
  }
}

TEST(KMeans, RecoversKnownClusters) {
  Rng rng(fresh_seed());
  const int k = 6, dim = 5, per = 200;
  std::vector<float> centres(k * dim), data;
  for (auto& v : centres) v = float(rng.normal() * 10);
  for (int c = 0; c < k; ++c)
    for (int i = 0; i < per; ++i)
      for (int t = 0; t < dim; ++t) data.push_back(centres[c * dim + t] + 0.1f * float(rng.normal()));
  const auto r = kmeans(data.data(), data.size() / dim, dim, k, rng.next());
  for (int c = 0; c < k; ++c) {
    const int j = nearest_centroid(&centres[c * dim], r.centroids.data(), k, dim);
    for (int t = 0; t < dim; ++t) EXPECT_NEAR(r.centroids[j * dim + t], centres[c * dim + t], 0.05);
  }
  EXPECT_LT(r.inertia, 0.1 * dim);
  EXPECT_THROW(kmeans(data.data(), 3, dim, k, 1), Error);
}

TEST(KMeans, CircularClustersAcrossTheSeam) {
  Rng rng(fresh_seed());
  const float centres[] = {3.0f, -3.0f, 0.5f, -1.5f};  // 3.0 and −3.0 are close across ±π
  std::vector<float> a;
  for (float c : centres)
    for (int i = 0; i < 300; ++i) a.push_back(angle_diff(c + 0.03f * float(rng.normal()), 0.0f));
  const auto got = kmeans_circular(a.data(), a.size(), 4, rng.next());
  for (float c : centres) {
    float best = 10;
    for (float g : got) best = std::min(best, std::fabs(angle_diff(g, c)));
    EXPECT_LT(best, 0.02f) << c;
  }
}

TEST(KMeans, AngleDiffMatchesTheFmodReference) {
  // The fast path (no fmod when |a − b| < 2π) against the plain definition, on angles in the
  // usual range and far outside it.
  Rng rng(fresh_seed());
  auto reference = [](float a, float b) {
    double d = std::fmod(double(a) - double(b), 2 * M_PI);
    if (d <= -M_PI) d += 2 * M_PI;
    if (d > M_PI) d -= 2 * M_PI;
    return float(d);
  };
  for (int i = 0; i < 20000; ++i) {
    const float scale = i % 4 == 0 ? 40.0f : float(M_PI);
    const float a = scale * float(2 * rng.uniform() - 1), b = scale * float(2 * rng.uniform() - 1);
    ASSERT_EQ(angle_diff(a, b), reference(a, b)) << a << " " << b;
  }
  for (float a : {float(M_PI), -float(M_PI), 0.0f})
    for (float b : {float(M_PI), -float(M_PI), 0.0f}) EXPECT_EQ(angle_diff(a, b), reference(a, b));
}

class CodebookFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = tq::test::temp_path(
        std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".tqcb");
    Rng rng(fresh_seed());
    f_.params = polarvq_preset("balanced");
    f_.model_fingerprint = rng.next();
    f_.corpus_hash = rng.next();
    f_.samples = 128;
    f_.ctx = 512;
    f_.n_layer = 3;
    f_.n_head_kv = 2;
    f_.head_dim = 64;
    for (int i = 0; i < 6; ++i) f_.heads.push_back(synthetic_calibration(f_.params, 64, rng));
    write_codebook_file(path_, f_);
  }
  void TearDown() override { std::remove(path_.c_str()); }
  std::vector<char> bytes() {
    std::ifstream in(path_, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  void put(const std::vector<char>& b) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(b.data(), std::streamsize(b.size()));
  }
  std::string error_of_read() {
    try {
      read_codebook_file(path_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  std::string path_;
  CodebookFile f_;
};

TEST_F(CodebookFileTest, RoundTripIsBitExact) {
  const auto g = read_codebook_file(path_);
  EXPECT_EQ(g.model_fingerprint, f_.model_fingerprint);
  EXPECT_EQ(g.corpus_hash, f_.corpus_hash);
  EXPECT_EQ(g.samples, 128u);
  EXPECT_EQ(g.ctx, 512u);
  ASSERT_EQ(g.heads.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(g.heads[i]->angle_centroids, f_.heads[i]->angle_centroids);
    EXPECT_EQ(g.heads[i]->value_perm, f_.heads[i]->value_perm);
    EXPECT_EQ(g.heads[i]->key_vq, f_.heads[i]->key_vq);
    EXPECT_EQ(g.heads[i]->value_vq, f_.heads[i]->value_vq);
  }
  // Writing what was read gives the same bytes.
  const auto before = bytes();
  write_codebook_file(path_, g);
  EXPECT_EQ(bytes(), before);
  EXPECT_NO_THROW(check_codebook_compatible(g, path_, f_.model_fingerprint, 3, 2, 64, "balanced"));
}

TEST_F(CodebookFileTest, OtherModelIsRefused) {
  const auto g = read_codebook_file(path_);
  try {
    check_codebook_compatible(g, path_, f_.model_fingerprint ^ 1, 3, 2, 64, "balanced");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(check_codebook_compatible(g, path_, f_.model_fingerprint, 30, 3, 64, "balanced"),
               Error);
  EXPECT_THROW(check_codebook_compatible(g, path_, f_.model_fingerprint, 3, 2, 64, "max"), Error);
}

TEST_F(CodebookFileTest, TruncatedFileIsRefused) {
  const auto b = bytes();
  for (size_t cut : {size_t(2), size_t(10), b.size() / 2, b.size() - 1}) {
    put(std::vector<char>(b.begin(), b.begin() + cut));
    const auto e = error_of_read();
    EXPECT_TRUE(e.find("truncated") != std::string::npos ||
                e.find("not a turboquant codebook") != std::string::npos)
        << cut << ": " << e;
  }
}

TEST_F(CodebookFileTest, BitFlipIsRefused) {
  auto b = bytes();
  Rng rng(fresh_seed());
  for (int trial = 0; trial < 20; ++trial) {
    auto c = b;
    const size_t at = 12 + rng.next() % (c.size() - 12);  // anywhere after the fixed header
    c[at] ^= char(1 << (rng.next() % 8));
    put(c);
    EXPECT_NE(error_of_read().find("corrupted"), std::string::npos) << "byte " << at;
  }
}

TEST_F(CodebookFileTest, UnknownVersionIsRefused) {
  auto b = bytes();
  b[4] = 99;
  put(b);
  EXPECT_NE(error_of_read().find("format version 99"), std::string::npos) << error_of_read();
  b[4] = 1;  // the previous format (no calibration context): refused, not misread
  put(b);
  EXPECT_NE(error_of_read().find("format version 1;"), std::string::npos) << error_of_read();
  EXPECT_NE(error_of_read().find("recalibrate"), std::string::npos) << error_of_read();
  b[0] = 'X';
  put(b);
  EXPECT_NE(error_of_read().find("not a turboquant codebook"), std::string::npos);
}

TEST_F(CodebookFileTest, MissingFile) {
  std::remove(path_.c_str());
  EXPECT_NE(error_of_read().find("cannot open"), std::string::npos);
}

}  // namespace
}  // namespace tq

namespace tq {
namespace {

TEST(Calibrate, LearnsAnglesOrderAndCodebooks) {
  Rng rng(fresh_seed());
  const int d = 64, n = 1200;
  // Keys whose pair angles sit at four known values per pair-channel; values with one
  // high-variance channel.
  HeadSamples hs;
  hs.n = n;
  const float modes[4] = {-2.5f, -0.7f, 0.9f, 2.2f};
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < d / 2; ++i) {
      const float th = modes[rng.next() % 4] + 0.02f * float(rng.normal());
      const float r = 1.0f + 0.3f * float(rng.uniform());
      hs.keys.push_back(r * std::cos(th));
      hs.keys.push_back(r * std::sin(th));
    }
    for (int j = 0; j < d; ++j) hs.values.push_back(float(rng.normal()) * (j == 37 ? 10.0f : 1.0f));
  }
  auto p = polarvq_preset("balanced");
  p.angle_bits = 2;    // 4 angle centroids (the 4 modes above)
  p.vq_keys = true;    // and key stage 2 too
  CalibrateOptions opt;
  opt.seed = rng.next();
  const auto f = calibrate_polarvq(p, 1, 1, d, RopePairing::kNormal, {hs}, opt);
  const auto& cal = *f.heads[0];
  ASSERT_EQ(cal.angle_centroids.size(), size_t(d / 2 * 4));
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(cal.angle_centroids[c], modes[c], 0.02);
  EXPECT_EQ(cal.value_perm[0], 37);
  EXPECT_EQ(cal.key_vq.size(), size_t(4 * 256 * 16));
  // The calibrated codec encodes, and scores from codes still equal q·decode.
  check_codes_match_decode(p, d, true, rng, f.heads[0]);
  check_codes_match_decode(p, d, false, rng, f.heads[0]);
  // Calibrated angles reconstruct these keys far better than uniform ones.
  auto err = [&](std::shared_ptr<PolarVqCalibration> c) {
    CodecOptions o;
    o.calibration = c;
    PolarVqCodec codec(polarvq_preset("stage1"), d, o);  // 2-bit angles, one token per block
    std::vector<uint8_t> codes(codec.block_bytes() * n);
    std::vector<float> rec(size_t(n) * d);
    codec.encode(hs.keys.data(), n, codes.data());
    codec.decode(codes.data(), n, rec.data());
    double e = 0;
    for (size_t i = 0; i < rec.size(); ++i) e += (rec[i] - hs.keys[i]) * (rec[i] - hs.keys[i]);
    return e;
  };
  EXPECT_LT(err(f.heads[0]), 0.2 * err(nullptr));
}

}  // namespace
}  // namespace tq
