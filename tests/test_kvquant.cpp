// kvquant3 / kvquant4 (codecs/kvquant.h): RoPE round trip, score/accumulate vs decode on fresh
// random inputs, exact outliers, refused input, the layout's bpv, the cache with positions
// (sinks, residual window, pages, several sequences), attention paths, calibration and the
// codebook file's kvquant section.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "attention/attention.h"
#include "cache/kv_cache.h"
#include "codecs/kvquant.h"
#include "codecs/polarvq_file.h"
#include "core/half.h"
#include "eval/calibrate.h"

namespace tq {
namespace {

unsigned fresh() { return std::random_device{}(); }

std::vector<float> randn(size_t n, std::mt19937& rng, float sd = 1.f) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// A model-like frequency table (base 10000, linear scaling 0.5) so that the non-default RoPE
// parameters are exercised.
std::vector<float> freqs(int d) {
  std::vector<float> f(d / 2);
  for (int i = 0; i < d / 2; ++i) f[i] = float(std::pow(10000.0, -2.0 * i / d));
  return f;
}

// Synthetic calibration: centres ~ N(0, 0.5), half-ranges in [0.5, 2], levels fitted on a
// clipped normal (so kvq_fit_levels runs too).
std::shared_ptr<KvQuantCalibration> synthetic(int d, std::mt19937& rng) {
  auto c = std::make_shared<KvQuantCalibration>();
  std::uniform_real_distribution<float> ur(0.5f, 2.f);
  c->key_center = randn(d, rng, 0.5f);
  c->value_center = randn(d, rng, 0.5f);
  for (int j = 0; j < d; ++j) {
    c->key_range.push_back(ur(rng));
    c->value_range.push_back(ur(rng));
  }
  std::vector<float> z = randn(1500, rng, 0.4f);
  for (auto& x : z) x = std::clamp(x, -1.f, 1.f);
  c->key_levels3 = c->value_levels3 = kvq_fit_levels(z, 3, rng());
  c->key_levels4 = c->value_levels4 = kvq_fit_levels(z, 4, rng());
  return c;
}

CodecOptions opts(bool key, RopePairing p, std::shared_ptr<KvQuantCalibration> cal, int d) {
  CodecOptions o;
  o.is_key = key;
  o.rope = p;
  o.calibration = std::move(cal);
  o.rope_inv_freq = freqs(d);
  o.rope_freq_scale = 0.5f;
  return o;
}

// Pre-RoPE vectors drawn around the calibrated range (|z| mostly < 1), rotated to post-RoPE at
// positions pos0.. when `post`.
std::vector<float> inputs(const KvQuantCalibration& cal, bool key, int d, int n, int64_t pos0,
                          RopePairing p, std::mt19937& rng) {
  const auto& c = key ? cal.key_center : cal.value_center;
  const auto& r = key ? cal.key_range : cal.value_range;
  std::vector<float> x = randn(size_t(n) * d, rng, 0.4f);
  for (int t = 0; t < n; ++t) {
    float* xt = &x[size_t(t) * d];
    for (int j = 0; j < d; ++j) xt[j] = c[j] + r[j] * xt[j];
    if (key) rope_rotate(xt, d, pos0 + t, freqs(d), 0.5f, p, false);
  }
  return x;
}

TEST(KvQuant, RopeRoundTripIsIdentity) {
  const unsigned seed = fresh();
  std::mt19937 rng(seed);
  for (RopePairing p : {RopePairing::kNormal, RopePairing::kNeox})
    for (int d : {2, 6, 64, 128})
      for (int64_t pos : {0, 1, 17, 4095, 100000}) {
        const auto x = randn(d, rng);
        auto y = x;
        rope_rotate(y.data(), d, pos, freqs(d), 0.5f, p, true);
        rope_rotate(y.data(), d, pos, freqs(d), 0.5f, p, false);
        for (int j = 0; j < d; ++j)
          EXPECT_NEAR(y[j], x[j], 1e-5 * std::max(1.f, std::fabs(x[j])))
              << "seed " << seed << " d " << d << " pos " << pos;
        // Position 0 is exactly the identity; the forward rotation is the model's (pairs
        // (2i, 2i+1) or (i, i + d/2), angle pos · scale · θ_i), checked in double.
        auto z = x;
        rope_rotate(z.data(), d, pos, freqs(d), 0.5f, p, false);
        for (int i = 0; i < d / 2; ++i) {
          const int a = p == RopePairing::kNeox ? i : 2 * i;
          const int b = p == RopePairing::kNeox ? i + d / 2 : 2 * i + 1;
          const double th = double(pos) * 0.5 * double(freqs(d)[i]);
          EXPECT_NEAR(z[a], x[a] * std::cos(th) - x[b] * std::sin(th), 1e-5);
          EXPECT_NEAR(z[b], x[a] * std::sin(th) + x[b] * std::cos(th), 1e-5);
          if (pos == 0) {
            EXPECT_EQ(z[a], x[a]);
          }
        }
      }
}

TEST(KvQuant, BpvFromLayout) {
  struct Case {
    const char* t;
    int d;
    bool key;
    size_t bytes;
  };
  // bytes = [4 value header] + n_out·(index + 2) + d·b/8, n_out = max(1, round(d/100)).
  for (const Case& c : {Case{"kvquant3", 64, true, 27}, Case{"kvquant3", 64, false, 31},
                        Case{"kvquant4", 64, true, 35}, Case{"kvquant4", 64, false, 39},
                        Case{"kvquant3", 128, true, 51}, Case{"kvquant4", 128, false, 71},
                        Case{"kvquant3", 512, true, 5 * 4 + 192},
                        Case{"kvquant4", 10, false, 4 + 3 + 5}}) {
    CodecOptions o;
    o.is_key = c.key;
    const auto codec = make_codec(c.t, c.d, o);
    EXPECT_EQ(codec->block_bytes(), c.bytes) << c.t << " d " << c.d;
    EXPECT_EQ(codec->block_tokens(), 1);
    EXPECT_DOUBLE_EQ(codec->bpv(), 8.0 * double(c.bytes) / c.d);
    EXPECT_EQ(codec->positional(), c.key);
  }
}

TEST(KvQuant, ScoreAndAccumulateEqualDecode) {
  const unsigned seed = fresh();
  std::mt19937 rng(seed);
  for (int d : {2, 6, 38, 64, 130, 258}) {
    const auto cal = synthetic(d, rng);
    for (const char* t : {"kvquant3", "kvquant4"})
      for (RopePairing p : {RopePairing::kNormal, RopePairing::kNeox})
        for (bool key : {true, false}) {
          const auto c = make_codec(t, d, opts(key, p, cal, d));
          const int n = 7;
          const int64_t pos0 = std::uniform_int_distribution<int>(0, 5000)(rng);
          const auto x = inputs(*cal, key, d, n, pos0, p, rng);
          std::vector<uint8_t> codes(n * c->block_bytes());
          c->encode_at(x.data(), n, pos0, codes.data());
          std::vector<float> y(size_t(n) * d), y0(size_t(n) * d);
          c->decode_at(codes.data(), n, pos0, y.data());
          c->decode(codes.data(), n, y0.data());
          const auto q = randn(d, rng);
          const auto qs = c->prepare_query(q.data());
          std::vector<float> s(n), s0(n);
          c->score_at(*qs, codes.data(), n, pos0, s.data());
          c->score(*qs, codes.data(), n, s0.data());
          const auto w = randn(n, rng);
          std::vector<float> acc(c->acc_size(), 0.f), out(d);
          c->accumulate(codes.data(), n, w.data(), acc.data());
          c->finish(acc.data(), out.data());
          for (int i = 0; i < n; ++i) {
            double e = 0, e0 = 0, mag = 0;
            for (int j = 0; j < d; ++j) {
              e += double(q[j]) * y[size_t(i) * d + j];
              e0 += double(q[j]) * y0[size_t(i) * d + j];
              mag += std::fabs(q[j] * y[size_t(i) * d + j]);
            }
            EXPECT_NEAR(s[i], e, 1e-5 * (1 + mag)) << t << " d " << d << " seed " << seed;
            EXPECT_NEAR(s0[i], e0, 1e-5 * (1 + mag)) << t << " d " << d << " seed " << seed;
          }
          // accumulate: Σ w·decode (the key form at positions 0.., its position-free meaning).
          for (int j = 0; j < d; ++j) {
            double e = 0, mag = 0;
            for (int i = 0; i < n; ++i) {
              e += double(w[i]) * y0[size_t(i) * d + j];
              mag += std::fabs(w[i] * y0[size_t(i) * d + j]);
            }
            EXPECT_NEAR(out[j], e, 1e-5 * (1 + mag)) << t << " d " << d << " seed " << seed;
          }
          // Sane reconstruction at the right position: relative error well below 1.
          double err = 0, ref = 0;
          for (size_t i = 0; i < x.size(); ++i) {
            err += double(y[i] - x[i]) * (y[i] - x[i]);
            ref += double(x[i]) * x[i];
          }
          EXPECT_LT(err / ref, std::string(t) == "kvquant4" ? 0.02 : 0.06)
              << t << " d " << d << (key ? " K" : " V") << " seed " << seed;
        }
  }
}

TEST(KvQuant, KeysAreStoredBeforeRope) {
  // The same pre-RoPE key at two positions gives the same codes; decoding at another position
  // than the one encoded gives that position's rotation of it.
  const unsigned seed = fresh();
  std::mt19937 rng(seed);
  const int d = 64;
  for (RopePairing p : {RopePairing::kNormal, RopePairing::kNeox}) {
    const auto cal = synthetic(d, rng);
    const auto c = make_codec("kvquant4", d, opts(true, p, cal, d));
    const auto pre = inputs(*cal, true, d, 1, 0, p, rng);  // position 0: pre-RoPE as is
    auto at = [&](int64_t pos) {
      auto x = pre;
      rope_rotate(x.data(), d, pos, freqs(d), 0.5f, p, false);
      std::vector<uint8_t> code(c->block_bytes());
      c->encode_at(x.data(), 1, pos, code.data());
      return code;
    };
    const auto a = at(3), b = at(777);
    // The same pre-RoPE values decoded, up to the un-rotation's float error, which may move a
    // value across a level boundary in rare cases: at most one channel may differ.
    std::vector<float> pa(d), pb(d);
    c->decode_at(a.data(), 1, 0, pa.data());
    c->decode_at(b.data(), 1, 0, pb.data());
    int differ = 0;
    for (int j = 0; j < d; ++j)
      differ += std::fabs(pa[j] - pb[j]) > 1e-3f * (1 + std::fabs(pa[j]));
    EXPECT_LE(differ, 1) << "seed " << seed;
    std::vector<float> y3(d), y0(d);
    c->decode_at(a.data(), 1, 3, y3.data());
    c->decode_at(a.data(), 1, 0, y0.data());
    rope_rotate(y0.data(), d, 3, freqs(d), 0.5f, p, false);
    for (int j = 0; j < d; ++j) EXPECT_NEAR(y3[j], y0[j], 1e-5 * (1 + std::fabs(y0[j])));
  }
}

TEST(KvQuant, OutliersAreReproducedExactly) {
  const unsigned seed = fresh();
  std::mt19937 rng(seed);
  for (const char* t : {"kvquant3", "kvquant4"})
    for (int d : {64, 300}) {  // one outlier per token; three
      const int n_out = kvq_outliers(d);
      for (bool key : {true, false}) {
        const auto cal = synthetic(d, rng);
        const auto c = make_codec(t, d, opts(key, RopePairing::kNormal, cal, d));
        auto x = inputs(*cal, key, d, 1, 0, RopePairing::kNormal, rng);  // position 0
        std::vector<int> ch;
        for (int k = 0; k < n_out; ++k) {
          int j;
          do j = std::uniform_int_distribution<int>(0, d - 1)(rng);
          while (std::find(ch.begin(), ch.end(), j) != ch.end());
          ch.push_back(j);
          x[j] = (k % 2 ? -1.f : 1.f) * (300.f + 97.f * k) + 0.123f;
        }
        std::vector<uint8_t> code(c->block_bytes());
        c->encode_at(x.data(), 1, 0, code.data());
        std::vector<float> y(d);
        c->decode_at(code.data(), 1, 0, y.data());
        for (int j : ch)
          EXPECT_EQ(y[j], round_f16(x[j])) << t << " d " << d << " channel " << j << " seed "
                                           << seed;
        if (key) {  // at another position: exact before RoPE, so within float error after
          auto xp = x;
          rope_rotate(xp.data(), d, 4321, freqs(d), 0.5f, RopePairing::kNormal, false);
          c->encode_at(xp.data(), 1, 4321, code.data());
          c->decode_at(code.data(), 1, 4321, y.data());
          rope_rotate(y.data(), d, 4321, freqs(d), 0.5f, RopePairing::kNormal, true);
          for (int j : ch) EXPECT_NEAR(y[j], round_f16(x[j]), 1e-4 * std::fabs(x[j]));
        }
      }
    }
}

TEST(KvQuant, BadInputIsRefused) {
  std::mt19937 rng(fresh());
  const int d = 64;
  const auto cal = synthetic(d, rng);
  for (bool key : {true, false}) {
    const auto c = make_codec("kvquant3", d, opts(key, RopePairing::kNormal, cal, d));
    std::vector<uint8_t> code(c->block_bytes());
    for (float bad : {NAN, INFINITY, -INFINITY, 1e6f}) {
      auto x = inputs(*cal, key, d, 1, 0, RopePairing::kNormal, rng);
      x[17] = bad;
      EXPECT_THROW(c->encode_at(x.data(), 1, 5, code.data()), Error) << bad;
    }
  }
  // Uncalibrated: the layout is known (for `tq types`), encoding is refused with a hint.
  const auto u = make_codec("kvquant4", d);
  EXPECT_DOUBLE_EQ(u->bpv(), 4.375);
  std::vector<float> x(d, 0.5f);
  std::vector<uint8_t> code(u->block_bytes());
  try {
    u->encode(x.data(), 1, code.data());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tq calibrate --preset kvquant"), std::string::npos);
  }
  EXPECT_TRUE(type_needs_calibration("kvquant3"));
}

// A cache shape and a kvquant codebook file for it (synthetic data per head).
KvShape shape(RopePairing p, int layers, int heads, int d) {
  KvShape s;
  s.n_layer = layers;
  s.n_kv_head = heads;
  s.head_dim = d;
  s.rope = p;
  s.rope_inv_freq = freqs(d);
  s.rope_freq_scale = 0.5f;
  return s;
}
std::shared_ptr<CodebookFile> kvq_file(const KvShape& s, std::mt19937& rng) {
  auto f = std::make_shared<CodebookFile>();
  f->params.preset = "kvquant";
  f->n_layer = s.n_layer;
  f->n_head_kv = s.n_kv_head;
  f->head_dim = s.head_dim;
  f->rope = s.rope;
  for (int i = 0; i < s.n_layer * s.n_kv_head; ++i) {
    f->heads.push_back(std::make_shared<PolarVqCalibration>());
    f->kvq.push_back(synthetic(s.head_dim, rng));
  }
  return f;
}

TEST(KvQuant, CacheWithoutCalibrationIsOneLineError) {
  KvCacheOptions o;
  o.type_k = "kvquant3";
  try {
    KvCache c(shape(RopePairing::kNormal, 1, 1, 64), o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tq calibrate --preset kvquant"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// Several sequences appended in uneven chunks through sinks, a residual window and small pages:
// what the cache reads back (decode at the stored positions) is close to what went in, and the
// attention paths agree.
TEST(KvQuant, CachePositionsAndAttentionPaths) {
  const unsigned seed = fresh();
  std::mt19937 rng(seed);
  const int d = 64, H = 2, NH = 6;
  for (RopePairing p : {RopePairing::kNormal, RopePairing::kNeox})
    for (const char* t : {"kvquant3", "kvquant4"}) {
      const KvShape sh = shape(p, 1, H, d);
      KvCacheOptions o;
      o.type_k = t;
      o.type_v = std::string(t) == "kvquant3" ? "kvquant4" : "f16";  // asymmetric pairs too
      o.sink_tokens = 3;
      o.residual_window = 5;
      o.page_tokens = 16;
      o.codebooks = kvq_file(sh, rng);
      KvCache c(sh, o);
      const auto& cal0 = *o.codebooks->kvq_head(0, 0);
      const auto& cal1 = *o.codebooks->kvq_head(0, 1);
      struct SeqData {
        int id;
        std::vector<float> k, v;  // [t][h][j] as appended
      };
      std::vector<SeqData> seqs;
      for (int s = 0; s < 2; ++s) seqs.push_back({c.new_seq(), {}, {}});
      // Interleaved appends of uneven sizes.
      for (int step = 0; step < 4; ++step)
        for (auto& sd : seqs) {
          const int T = step == 0 ? 11 + 6 * sd.id : 1 + 7 * step;
          const int pos0 = c.seq_len(sd.id);
          std::vector<float> k(size_t(T) * H * d), v(size_t(T) * H * d);
          for (int h = 0; h < H; ++h) {
            const auto& cal = h ? cal1 : cal0;
            const auto kh = inputs(cal, true, d, T, pos0, p, rng);
            const auto vh = inputs(cal, false, d, T, 0, p, rng);
            for (int i = 0; i < T; ++i) {
              std::copy_n(&kh[size_t(i) * d], d, &k[(size_t(i) * H + h) * d]);
              std::copy_n(&vh[size_t(i) * d], d, &v[(size_t(i) * H + h) * d]);
            }
          }
          c.append(sd.id, 0, k.data(), v.data(), T);
          sd.k.insert(sd.k.end(), k.begin(), k.end());
          sd.v.insert(sd.v.end(), v.begin(), v.end());
        }
      for (auto& sd : seqs) {
        const int L = c.seq_len(sd.id);
        for (int h = 0; h < H; ++h) {
          std::vector<float> kr(size_t(L) * d);
          c.read(sd.id, 0, h, true, kr.data());
          double err = 0, ref = 0;
          for (int i = 0; i < L; ++i)
            for (int j = 0; j < d; ++j) {
              const float a = sd.k[(size_t(i) * H + h) * d + j], b = kr[size_t(i) * d + j];
              err += double(a - b) * (a - b);
              ref += double(a) * a;
            }
          // A wrong position would rotate keys by a wrong angle: relative error O(1).
          EXPECT_LT(err / ref, 0.06) << t << " seq " << sd.id << " head " << h << " seed "
                                     << seed;
        }
        // Attention: a prefill-like block of queries and one generation query.
        for (int T1 : {9, 1}) {
          const int pos0 = L - T1;
          const auto q = randn(size_t(T1) * NH * d, rng, 0.3f);
          std::vector<float> ref(q.size()), codes(q.size()), tiled(q.size()), aut(q.size());
          attention(c, sd.id, 0, NH, q.data(), T1, pos0, 0.125f, ref.data(),
                    AttnPath::kReference);
          attention(c, sd.id, 0, NH, q.data(), T1, pos0, 0.125f, codes.data(), AttnPath::kCodes);
          attention(c, sd.id, 0, NH, q.data(), T1, pos0, 0.125f, tiled.data(), AttnPath::kTiled);
          attention(c, sd.id, 0, NH, q.data(), T1, pos0, 0.125f, aut.data(), AttnPath::kAuto);
          double mc = 0, mt = 0, ma = 0;
          for (size_t i = 0; i < ref.size(); ++i) {
            mc = std::max(mc, double(std::fabs(ref[i] - codes[i])));
            mt = std::max(mt, double(std::fabs(ref[i] - tiled[i])));
            ma = std::max(ma, double(std::fabs(ref[i] - aut[i])));
          }
          EXPECT_LT(mc, 2e-4) << t << " T " << T1 << " seed " << seed;
          EXPECT_LT(mt, 2e-4) << t << " T " << T1 << " seed " << seed;
          EXPECT_LT(ma, 2e-4) << t << " T " << T1 << " seed " << seed;
        }
        // The SIMD driver knows no positions: it declines kvquant keys (kAuto took codes).
        EXPECT_FALSE(attention_driver_applicable(c, sd.id, 0));
      }
    }
}

TEST(KvQuant, CalibrationRecoversPreRopeRanges) {
  // Keys made pre-RoPE as c + r·u (u uniform in [−1, 1]) and rotated at their positions: the
  // calibration must un-rotate them to find c and r (rotated, the channels mix).
  const unsigned seed = fresh();
  std::mt19937 rng(seed);
  const int d = 8, n = 6000;
  for (RopePairing p : {RopePairing::kNormal, RopePairing::kNeox}) {
    const KvShape sh = shape(p, 1, 1, d);
    std::vector<float> c = randn(d, rng), r(d);
    std::uniform_real_distribution<float> ur(0.5f, 2.f), uu(-1.f, 1.f);
    for (auto& x : r) x = ur(rng);
    HeadSamples hs;
    for (int i = 0; i < n; ++i) {
      std::vector<float> k(d), v(d);
      for (int j = 0; j < d; ++j) {
        k[j] = c[j] + r[j] * uu(rng);
        v[j] = uu(rng);
      }
      const int pos = i % 512;
      rope_rotate(k.data(), d, pos, sh.rope_inv_freq, sh.rope_freq_scale, p, false);
      hs.keys.insert(hs.keys.end(), k.begin(), k.end());
      hs.values.insert(hs.values.end(), v.begin(), v.end());
      hs.pos.push_back(pos);
    }
    hs.n = n;
    CalibrateOptions co;
    co.seed = seed;
    const CodebookFile f = calibrate_kvquant(sh, {hs}, co);
    ASSERT_EQ(f.kvq.size(), 1u);
    const auto& k = *f.kvq[0];
    ASSERT_TRUE(k.valid(d));
    for (int j = 0; j < d; ++j) {
      EXPECT_NEAR(k.key_center[j], c[j], 0.05 * r[j]) << "seed " << seed;
      EXPECT_NEAR(k.key_range[j], r[j], 0.05 * r[j]) << "seed " << seed;
    }
    for (const auto* lv : {&k.key_levels3, &k.key_levels4, &k.value_levels3, &k.value_levels4}) {
      EXPECT_TRUE(std::is_sorted(lv->begin(), lv->end()));
      EXPECT_GE(lv->front(), -1.f);
      EXPECT_LE(lv->back(), 1.f);
    }
  }
}

TEST(KvQuant, CodebookFileKeepsTheKvquantSection) {
  std::mt19937 rng(fresh());
  const KvShape sh = shape(RopePairing::kNeox, 2, 3, 64);
  auto f = kvq_file(sh, rng);
  f->model_fingerprint = 42;
  const std::string path = "/tmp/tq_kvq_" + std::to_string(getpid()) + ".tqcb";
  write_codebook_file(path, *f);
  const CodebookFile g = read_codebook_file(path);
  std::remove(path.c_str());
  EXPECT_EQ(g.params.preset, "kvquant");
  EXPECT_EQ(g.rope, RopePairing::kNeox);
  ASSERT_EQ(g.kvq.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    auto a = f->kvq[i]->arrays();
    auto b = g.kvq[i]->arrays();
    for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(*a[k], *b[k]);
  }
}

}  // namespace
}  // namespace tq
