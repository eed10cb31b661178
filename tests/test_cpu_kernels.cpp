// CPU kernels (issue 6): every SIMD level this CPU has against the scalar references, on fresh
// random inputs (the seed is printed on failure), odd token counts and several head dims.
//
// Tolerances (normalised errors; the float kernels compute the same math as the references, so
// only float rounding differs and the bounds do not depend on the bit-width):
//   scores       |s − s_ref| / (‖q‖·‖x̃_t‖) ≤ 2e-5 (prod: / ‖q‖·(‖x̃_t‖ + 1), 1e-4)
//   accumulate   ‖acc − acc_ref‖∞ / Σ_t |w_t|·‖x̃_t‖ ≤ 2e-5 (prod 1e-4)
//   attention    ‖out − out_ref‖∞ / max_t ‖ṽ_t‖ ≤ 2e-5 (vectorised exp: rel. err 2e-7)
//   split/merge  ‖out_split − out_unsplit‖∞ / max|out| ≤ 1e-5
//   encode       ≥ 99% of tokens bit-identical to encode_ref, the others within one centroid step
// Exception: at the AVX-512 level with VBMI+VNNI, TurboQuant scores and values use 8-bit
// fast-scan tables (int8 query/weights, byte codebook; cpu::int8_scores_active()):
//   scores, accumulate   normalised error ≤ 1e-2 (typically ≲ 1e-3; the codes' own error is larger)
//   attention            ≤ 5e-3 of max‖ṽ‖
// and every check is repeated with the 8-bit tables switched off, at the exact tolerances.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "codecs/common.h"
#include "codecs/turbo.h"
#include "core/rotation.h"
#include "attention/decode.h"
#include "cpu/dispatch.h"
#include "tq/codec.h"

using namespace tq;
using tq::cpu::Level;

namespace {

uint64_t fresh_seed() {
  static std::random_device rd;
  return (uint64_t(rd()) << 32) | rd();
}

struct Rand {
  std::mt19937_64 g;
  explicit Rand(uint64_t s) : g(s) {}
  std::vector<float> normal(size_t n, float sd = 1.0f) {
    std::normal_distribution<float> nd(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(g);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = u(g);
    return v;
  }
};

double norm(const float* x, int d) {
  double s = 0;
  for (int j = 0; j < d; ++j) s += double(x[j]) * x[j];
  return std::sqrt(s);
}

struct LevelGuard {
  explicit LevelGuard(Level l) { cpu::force_level(l); }
  ~LevelGuard() { cpu::reset_level(); }
};
struct Int8Guard {
  explicit Int8Guard(bool on) { cpu::set_int8_scores(on); }
  ~Int8Guard() { cpu::set_int8_scores(true); }
};

const std::vector<std::string> kTypes = {"f32",     "f16",      "turbo1",   "turbo2",  "turbo3",
                                         "turbo4",  "turbo3nc", "turbo6",   "turbo2p", "turbo3p",
                                         "turbo4p", "turbo2.5", "turbo3.5", "q8_0",    "q4_0",
                                         "q8_0+h",  "polar"};

std::unique_ptr<Codec> try_make(const std::string& t, int d) {
  try {
    return make_codec(t, d);
  } catch (const Error&) {
    return nullptr;
  }
}

// Scalar references of the codec's score/accumulate, where the codec has them.
bool ref_score(const Codec& c, const QueryState& qs, const uint8_t* codes, size_t n, float* out) {
  if (auto* m = dynamic_cast<const TurboMseCodec*>(&c))
    return m->score_ref(qs, codes, n, out), true;
  if (auto* p = dynamic_cast<const TurboProdCodec*>(&c))
    return p->score_ref(qs, codes, n, out), true;
  if (auto* s = dynamic_cast<const TurboSplitCodec*>(&c))
    return s->score_ref(qs, codes, n, out), true;
  return false;
}
bool ref_acc(const Codec& c, const uint8_t* codes, size_t n, const float* w, float* acc) {
  if (auto* m = dynamic_cast<const TurboMseCodec*>(&c))
    return m->accumulate_ref(codes, n, w, acc), true;
  if (auto* p = dynamic_cast<const TurboProdCodec*>(&c))
    return p->accumulate_ref(codes, n, w, acc), true;
  if (auto* s = dynamic_cast<const TurboSplitCodec*>(&c))
    return s->accumulate_ref(codes, n, w, acc), true;
  return false;
}

}  // namespace

TEST(Dispatch, LevelsAndForcing) {
  const auto levels = cpu::available_levels();
  ASSERT_FALSE(levels.empty());
  EXPECT_EQ(levels.front(), Level::kScalar);
  EXPECT_EQ(levels.back(), cpu::detected_level());
  for (Level l : levels) {
    LevelGuard g(l);
    EXPECT_EQ(cpu::active_level(), l);
    EXPECT_EQ(cpu::kernels().level, l);
    EXPECT_EQ(cpu::parse_level(cpu::level_name(l)), l);
  }
  EXPECT_THROW(cpu::parse_level("sse9"), Error);
  std::printf("[ info ] detected SIMD level: %s\n", cpu::level_name(cpu::detected_level()));
}

TEST(Dispatch, FwhtBitIdentical) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  for (int n : {2, 8, 16, 32, 64, 128, 256, 1024}) {
    const auto x = r.normal(n);
    std::vector<float> ref = x;
    fwht_ref(ref.data(), n);
    for (Level l : cpu::available_levels()) {
      std::vector<float> y = x;
      cpu::kernels_for(l).fwht(y.data(), n);
      for (int i = 0; i < n; ++i) ASSERT_EQ(y[i], ref[i]) << cpu::level_name(l) << " n=" << n;
    }
  }
}

// PolarQuant decode kernels multiply in the reference's order: bit-identical at every level,
// fresh inputs, odd token counts and dims with an odd number of 62-bit groups.
TEST(CpuKernels, PolarDecodeBitIdentical) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  for (int d : {16, 48, 64, 80, 128, 256}) {
    const auto codec = make_codec("polar", d);
    for (size_t n : {size_t(1), size_t(37), size_t(131)}) {
      auto x = r.normal(n * size_t(d));
      for (size_t i = 0; i < n; i += 5) x[i * d] *= 1000.0f;  // large radii (fp16 range)
      std::vector<uint8_t> codes(n * codec->block_bytes());
      codec->encode(x.data(), n, codes.data());
      std::vector<float> ref(n * size_t(d));
      polar_decode_rotated_ref(*codec, codes.data(), n, ref.data());
      for (Level l : cpu::available_levels()) {
        std::vector<float> y(n * size_t(d), std::nanf(""));
        cpu::kernels_for(l).polar_decode(codes.data(), n, codec->block_bytes(), d / 16,
                                         polar_tables(), y.data());
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_EQ(y[i], ref[i]) << cpu::level_name(l) << " d=" << d << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(Dispatch, ExpSum) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  for (Level l : cpu::available_levels())
    for (size_t n : {size_t(1), size_t(7), size_t(64), size_t(77)}) {
      auto s = r.uniform(n, -30.0f, 5.0f);
      auto ref = s;
      double sum = 0;
      for (auto& v : ref) sum += (v = std::exp(v - 5.0f));
      const float got = cpu::kernels_for(l).exp_sum(s.data(), n, 5.0f);
      EXPECT_NEAR(got, sum, 1e-6 * sum + 1e-30);
      for (size_t i = 0; i < n; ++i) EXPECT_NEAR(s[i], ref[i], 1e-6 * ref[i] + 1e-37);
    }
}

// Codec score/accumulate at every level vs the decode()-based reference and the codecs' _ref.
TEST(CpuKernels, ScoreAndAccumulateMatchReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  for (const auto& type : kTypes)
    for (int d : {64, 128, 96, 80}) {
      auto c = try_make(type, d);
      if (!c) continue;
      const bool prod = dynamic_cast<const TurboProdCodec*>(c.get()) != nullptr;
      for (size_t n : {size_t(1), size_t(37), size_t(131)}) {
        SCOPED_TRACE(type + " d=" + std::to_string(d) + " n=" + std::to_string(n));
        const auto x = r.normal(n * d, 0.7f);
        std::vector<uint8_t> codes(n * c->block_bytes());
        c->encode(x.data(), n, codes.data());
        std::vector<float> xd(n * d);
        c->decode(codes.data(), n, xd.data());
        const auto q = r.normal(d);
        const auto w = r.uniform(n, 0.0f, 1.0f);
        const double qn = norm(q.data(), d);
        // decode()-based reference, in double
        std::vector<double> sref(n), oref(d, 0.0);
        double wsum = 0;
        for (size_t t = 0; t < n; ++t) {
          double s = 0;
          for (int j = 0; j < d; ++j) s += double(q[j]) * xd[t * d + j];
          sref[t] = s;
          for (int j = 0; j < d; ++j) oref[j] += double(w[t]) * xd[t * d + j];
          wsum += w[t] * norm(&xd[t * d], d);
        }
        for (Level l : cpu::available_levels())
          for (bool int8 : {true, false}) {
            LevelGuard lg(l);
            Int8Guard ig(int8);
            SCOPED_TRACE(std::string(cpu::level_name(l)) + (int8 ? " int8-on" : " int8-off"));
            const bool turbo = type.rfind("turbo", 0) == 0 && type != "turbo6";
            const bool i8 = cpu::int8_scores_active() && turbo;
            auto qs = c->prepare_query(q.data());
            std::vector<float> s(n), s2(n);
            c->score(*qs, codes.data(), n, s.data());
            const bool has_ref = ref_score(*c, *qs, codes.data(), n, s2.data());
            for (size_t t = 0; t < n; ++t) {
              // prod: q·x̃ mixes the mse part and the sketch part, whose terms are larger than
              // ‖x̃‖; normalise by the sum of both magnitudes.
              const double scale = qn * (norm(&xd[t * d], d) + (prod ? 1.0 : 0.0)) + 1e-30;
              const double tol = i8 ? 1e-2 : prod ? 1e-4 : 2e-5;
              EXPECT_LE(std::fabs(s[t] - sref[t]) / scale, tol) << "token " << t;
              if (has_ref) {
                EXPECT_LE(std::fabs(s[t] - s2[t]) / scale, tol) << "token " << t;
              }
            }
            std::vector<float> acc(c->acc_size(), 0.0f), acc2(c->acc_size(), 0.0f), out(d), out2(d);
            c->accumulate(codes.data(), n, w.data(), acc.data());
            c->finish(acc.data(), out.data());
            for (int j = 0; j < d; ++j)
              EXPECT_LE(std::fabs(out[j] - oref[j]) / (wsum + 1e-30), i8     ? 1e-2
                                                                      : prod ? 1e-4
                                                                             : 2e-5)
                  << j;
            if (ref_acc(*c, codes.data(), n, w.data(), acc2.data())) {
              c->finish(acc2.data(), out2.data());
              for (int j = 0; j < d; ++j)
                EXPECT_LE(std::fabs(out[j] - out2[j]) / (wsum + 1e-30), i8     ? 1e-2
                                                                        : prod ? 1e-4
                                                                               : 2e-5)
                    << j;
            }
          }
      }
    }
}

// Vectorised encode (Hadamard rotation, any bits) against encode_ref.
TEST(CpuKernels, EncodeMatchesReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  for (int bits : {1, 2, 3, 4, 5})
    for (bool nc : {false, true})
      for (int d : {64, 128, 256}) {
        TurboMseCodec c(d, bits, 0x1234, nc);
        const size_t n = 201;
        auto x = r.normal(n * d);
        for (int j = 0; j < d; ++j) x[5 * d + j] = 0.0f;  // a zero vector
        std::vector<uint8_t> a(n * c.block_bytes()), b(n * c.block_bytes());
        c.encode_ref(x.data(), n, b.data());
        for (Level l : cpu::available_levels()) {
          LevelGuard lg(l);
          SCOPED_TRACE(std::string(cpu::level_name(l)) + " bits=" + std::to_string(bits) +
                       " d=" + std::to_string(d) + (nc ? " nc" : ""));
          c.encode(x.data(), n, a.data());
          size_t same = 0;
          for (size_t t = 0; t < n; ++t)
            same +=
                std::equal(a.begin() + t * c.block_bytes(), a.begin() + (t + 1) * c.block_bytes(),
                           b.begin() + t * c.block_bytes());
          EXPECT_GE(double(same) / n, 0.99);
          std::vector<float> da(n * d), db(n * d);
          c.decode(a.data(), n, da.data());
          c.decode(b.data(), n, db.data());
          for (size_t t = 0; t < n; ++t) {
            double e = 0;
            for (int j = 0; j < d; ++j) e += std::pow(double(da[t * d + j]) - db[t * d + j], 2);
            // a flipped code moves one coordinate by one centroid gap: ≤ 2/√d of the norm
            EXPECT_LE(std::sqrt(e), 2.0 * norm(&x[t * d], d) / std::sqrt(d) + 1e-6);
          }
        }
      }
}

namespace {

// Reference attention over decoded K/V, in double.
std::vector<double> ref_attention(const Codec& kc, const Codec& vc, const std::vector<uint8_t>& k,
                                  const std::vector<uint8_t>& v, size_t n,
                                  const std::vector<float>& q, int G, float scale) {
  const int d = kc.dim();
  std::vector<float> kd(n * d), vd(n * d);
  kc.decode(k.data(), n, kd.data());
  vc.decode(v.data(), n, vd.data());
  std::vector<double> out(size_t(G) * d, 0.0);
  for (int g = 0; g < G; ++g) {
    std::vector<double> s(n);
    double mx = -1e300, l = 0;
    for (size_t t = 0; t < n; ++t) {
      double a = 0;
      for (int j = 0; j < d; ++j) a += double(q[g * d + j]) * kd[t * d + j];
      s[t] = a * scale;
      mx = std::max(mx, s[t]);
    }
    for (size_t t = 0; t < n; ++t) l += (s[t] = std::exp(s[t] - mx));
    for (size_t t = 0; t < n; ++t)
      for (int j = 0; j < d; ++j) out[g * d + j] += s[t] / l * vd[t * d + j];
  }
  return out;
}

// Cut n tokens into pages of odd sizes.
std::vector<cpu::KvPage> make_pages(const std::vector<uint8_t>& k, size_t kb,
                                    const std::vector<uint8_t>& v, size_t vb, size_t n, Rand& r) {
  std::vector<cpu::KvPage> pages;
  size_t t = 0;
  std::uniform_int_distribution<size_t> len(1, 300);
  while (t < n) {
    const size_t m = std::min(n - t, len(r.g));
    pages.push_back({k.data() + t * kb, v.data() + t * vb, m});
    t += m;
  }
  return pages;
}

}  // namespace

TEST(DecodeAttention, MatchesReferenceAtEveryLevelAndThreadCount) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  const std::vector<std::pair<std::string, std::string>> kv = {
      {"f32", "f32"},       {"f16", "f16"},       {"q8_0", "q8_0"},       {"q4_0", "q4_0"},
      {"turbo3", "turbo3"}, {"turbo2", "turbo4"}, {"turbo3p", "turbo3"},  {"turbo2.5", "turbo3.5"},
      {"polar", "polar"},   {"q8_0+h", "turbo3"}, {"turbo4p", "turbo2.5"}};
  for (const auto& [kt, vt] : kv)
    for (int d : {64, 128, 96}) {
      auto kc = try_make(kt, d), vc = try_make(vt, d);
      if (!kc || !vc) continue;
      for (int G : {1, 3, 4}) {
        const size_t n = (G == 3) ? 1531 : 777;
        SCOPED_TRACE(kt + "/" + vt + " d=" + std::to_string(d) + " G=" + std::to_string(G));
        const auto kx = r.normal(n * d), vx = r.normal(n * d);
        std::vector<uint8_t> k(n * kc->block_bytes()), v(n * vc->block_bytes());
        kc->encode(kx.data(), n, k.data());
        vc->encode(vx.data(), n, v.data());
        const auto q = r.normal(size_t(G) * d, 1.5f);
        const float scale = 1.0f / std::sqrt(float(d));
        const auto ref = ref_attention(*kc, *vc, k, v, n, q, G, scale);
        std::vector<float> vd(n * d);
        vc->decode(v.data(), n, vd.data());
        double vmax = 0;
        for (size_t t = 0; t < n; ++t) vmax = std::max(vmax, norm(&vd[t * d], d));
        const auto pages = make_pages(k, kc->block_bytes(), v, vc->block_bytes(), n, r);
        for (Level l : cpu::available_levels())
          for (bool int8 : {true, false}) {
            LevelGuard lg(l);
            Int8Guard ig(int8);
            const bool i8 = cpu::int8_scores_active() &&
                            (kt.rfind("turbo", 0) == 0 || vt.rfind("turbo", 0) == 0);
            std::vector<float> base;
            for (int threads : {1, 2})
              for (int splits : {1, 3, 0}) {
                SCOPED_TRACE(std::string(cpu::level_name(l)) + (i8 ? " int8" : "") + " threads=" +
                             std::to_string(threads) + " splits=" + std::to_string(splits));
                cpu::DecodeOptions opt;
                opt.threads = threads;
                opt.splits = splits;
                opt.min_split_tokens = 100;
                opt.min_parallel_work = 0;
                std::vector<float> out(size_t(G) * d);
                cpu::decode_attention(*kc, *vc, pages, q.data(), G, scale, out.data(), opt);
                const bool prod = kt.find('p') != std::string::npos && kt != "polar";
                for (size_t i = 0; i < out.size(); ++i)
                  ASSERT_LE(std::fabs(out[i] - ref[i]) / vmax, i8 ? 5e-3 : prod ? 1e-4 : 2e-5) << i;
                if (base.empty()) {
                  base = out;
                } else {  // split/merge and threads change nothing beyond rounding
                  double mx = 0;
                  for (float b : base) mx = std::max(mx, double(std::fabs(b)));
                  for (size_t i = 0; i < out.size(); ++i)
                    ASSERT_LE(std::fabs(out[i] - base[i]) / mx, 1e-5) << i;
                }
              }
            // the generic (Codec-interface) path agrees with the fast path
            cpu::DecodeOptions gen;
            gen.use_generic = true;
            gen.threads = 1;
            std::vector<float> out(size_t(G) * d);
            cpu::decode_attention(*kc, *vc, pages, q.data(), G, scale, out.data(), gen);
            for (size_t i = 0; i < out.size(); ++i)
              ASSERT_LE(std::fabs(out[i] - ref[i]) / vmax, i8 ? 5e-3 : 1e-4) << i;
          }
      }
    }
}

TEST(DecodeAttention, SoftmaxStateMergeIsExact) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  Rand r(seed);
  // Two halves merged = the whole, including an empty state and very different maxima.
  const int G = 2;
  const size_t A = 5, n = 40;
  auto s = r.uniform(G * n, -20.0f, 20.0f);
  auto v = r.normal(n * A);
  double vmax = 0;
  for (float x : v) vmax = std::max(vmax, double(std::fabs(x)));
  auto run = [&](size_t b, size_t e) {
    cpu::SoftmaxState st(G, A);
    for (int g = 0; g < G; ++g)
      for (size_t t = b; t < e; ++t) {
        const float x = s[g * n + t];
        const float m = std::max(st.m[g], x);
        const float a = std::exp(st.m[g] - m), c = std::exp(x - m);
        for (size_t j = 0; j < A; ++j) st.acc[g * A + j] = a * st.acc[g * A + j] + c * v[t * A + j];
        st.l[g] = a * st.l[g] + c;
        st.m[g] = m;
      }
    return st;
  };
  auto whole = run(0, n);
  auto a = run(0, 13), b = run(13, n), empty = run(7, 7);
  a.merge(empty);
  a.merge(b);
  for (int g = 0; g < G; ++g) {
    EXPECT_NEAR(a.m[g], whole.m[g], 0);
    EXPECT_NEAR(a.l[g], whole.l[g], 1e-5 * whole.l[g]);
    // relative to the scale of the averaged values (a component may cancel to ~0)
    for (size_t j = 0; j < A; ++j)
      EXPECT_NEAR(a.acc[g * A + j] / a.l[g], whole.acc[g * A + j] / whole.l[g], 1e-5 * vmax);
  }
  empty.merge(a);
  EXPECT_EQ(empty.m, a.m);
}
