// turboquant — the cases of the cross-backend attention test (tests/test_backend_ops.cpp for the
// CPU SIMD levels; tests/cuda may add the CUDA backend to the same comparison), in the spirit of
// ggml's test-backend-ops: every registered cache type × head dims × odd context lengths ×
// 1..8 query heads per KV head, each backend's decode attention compared with one
// double-precision reference over the codec's own decode, by normalised error
// ‖out − ref‖ / ‖ref‖. Header only, no CUDA and no backend code: a backend takes a CaseData
// (the raw vectors, the codec's codes, the queries) and returns its G × d output.
//
//   for (const auto& c : tq::test::backend_cases()) {          // or backend_cases(filter)
//     const tq::test::CaseData data = tq::test::make_case_data(c);
//     for (int G : c.heads) {                                    // 1..8
//       std::vector<float> out = my_backend(data, G);            // G × d
//       double err = tq::test::normalised_error(out, data.reference(G));
//       EXPECT_LE(err, tq::test::cpu_tolerance(c.type)) << c.label(G);
//     }
//   }
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tq/codec.h"

namespace tq::test {

// One (type, head dim, context length) with the query-head counts to run on it.
struct BackendCase {
  std::string type;  // a registered cache type, used for K and V
  int dim = 0;
  int ctx = 0;  // tokens the query sees; the codes hold ceil(ctx / block_tokens) whole blocks
  std::vector<int> heads;  // G, query heads per KV head
  uint64_t seed = 0;
  std::string label(int G) const {
    return type + " d=" + std::to_string(dim) + " ctx=" + std::to_string(ctx) +
           " G=" + std::to_string(G) + " seed=" + std::to_string(seed);
  }
};

// Head dims tried for every type: the usual ones and odd ones (vector tails, non-powers of 2).
// A type is run at each of these it accepts (make_codec does not throw).
inline const std::vector<int>& backend_dims() {
  static const std::vector<int> d = {64, 128, 256, 72, 80, 96, 136};
  return d;
}
// Context lengths: 1, odd, crossing the CPU cache's 256-token pages (and CUDA's 32-token ones).
inline const std::vector<int>& backend_ctxs() {
  static const std::vector<int> c = {1, 7, 33, 257, 1031};
  return c;
}

// Whether a type can be run from random data alone (types that need learned data before they
// can encode — type_traits(t).needs_calibration — are covered by their own tests).
inline bool runnable_without_calibration(const std::string& type) {
  return !type_traits(type).needs_calibration;
}

// Every case: each registered type that needs no learned data (filter: further restriction,
// e.g. `[](const std::string& t) { return type_traits(t).gpu != GpuFormat::kNone; }`), each
// dim of backend_dims() it accepts, each context of backend_ctxs(), G = 1..8.
template <class Filter>
std::vector<BackendCase> backend_cases(Filter filter, uint64_t seed = 0x7B0C'A5E5) {
  std::vector<BackendCase> out;
  for (const std::string& t : list_types()) {
    if (!runnable_without_calibration(t) || !filter(t)) continue;
    for (int d : backend_dims()) {
      try {
        (void)make_codec(t, d);
      } catch (const Error&) {
        continue;  // the type does not take this dim (its make_codec says why)
      }
      for (int n : backend_ctxs())
        out.push_back({t, d, n, {1, 2, 3, 4, 5, 6, 7, 8}, seed++});
    }
  }
  return out;
}
inline std::vector<BackendCase> backend_cases() {
  return backend_cases([](const std::string&) { return true; });
}

// The data of one case. K and V vectors are Gaussian with a few large channels (as real keys
// have), encoded by the type's K and V codecs (CodecOptions::is_key), default options.
struct CaseData {
  BackendCase c;
  std::unique_ptr<Codec> k, v;
  int n_tokens = 0;  // stored tokens (whole blocks) ≥ c.ctx
  std::vector<float> k_raw, v_raw;    // n_tokens × dim, what was encoded
  std::vector<uint8_t> k_codes, v_codes;  // n_blocks × block_bytes, contiguous
  std::vector<float> k_dec, v_dec;    // the codecs' own decode (decode_at, positions 0..)
  std::vector<float> q;               // 8 × dim; the first G rows are a case's queries
  float scale = 1.f;                  // 1/√dim

  // Reference output of the first G query heads (G × dim): softmax(scale·q·k̃ᵀ)·ṽ over the
  // first c.ctx decoded tokens, in double.
  std::vector<float> reference(int G) const {
    const int d = c.dim, n = c.ctx;
    std::vector<float> out(size_t(G) * d);
    std::vector<double> s(n), acc(d);
    for (int g = 0; g < G; ++g) {
      const float* qg = &q[size_t(g) * d];
      double m = -INFINITY;
      for (int t = 0; t < n; ++t) {
        double a = 0;
        for (int j = 0; j < d; ++j) a += double(qg[j]) * k_dec[size_t(t) * d + j];
        s[t] = a * scale;
        m = std::max(m, s[t]);
      }
      double l = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int t = 0; t < n; ++t) {
        const double w = std::exp(s[t] - m);
        l += w;
        for (int j = 0; j < d; ++j) acc[j] += w * v_dec[size_t(t) * d + j];
      }
      for (int j = 0; j < d; ++j) out[size_t(g) * d + j] = float(acc[j] / l);
    }
    return out;
  }
};

inline std::vector<float> random_vectors(std::mt19937_64& g, int n, int d) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(n) * d);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) x[size_t(t) * d + j] = nd(g) * (j % 11 == 3 ? 4.f : 1.f);
  return x;
}

inline CaseData make_case_data(const BackendCase& c) {
  CaseData r;
  r.c = c;
  CodecOptions ko, vo;
  ko.is_key = true;
  vo.is_key = false;
  r.k = make_codec(c.type, c.dim, ko);
  r.v = make_codec(c.type, c.dim, vo);
  const int bt = r.k->block_tokens();
  const int bv = r.v->block_tokens();
  const int b = std::max(bt, bv);  // both codecs get whole blocks
  r.n_tokens = (c.ctx + b - 1) / b * b;
  std::mt19937_64 g(c.seed);
  r.k_raw = random_vectors(g, r.n_tokens, c.dim);
  r.v_raw = random_vectors(g, r.n_tokens, c.dim);
  r.q = random_vectors(g, 8, c.dim);
  r.scale = 1.f / std::sqrt(float(c.dim));
  const size_t nbk = size_t(r.n_tokens / bt), nbv = size_t(r.n_tokens / bv);
  r.k_codes.resize(nbk * r.k->block_bytes());
  r.v_codes.resize(nbv * r.v->block_bytes());
  r.k->encode_at(r.k_raw.data(), nbk, 0, r.k_codes.data());
  r.v->encode_at(r.v_raw.data(), nbv, 0, r.v_codes.data());
  r.k_dec.resize(r.k_raw.size());
  r.v_dec.resize(r.v_raw.size());
  r.k->decode_at(r.k_codes.data(), nbk, 0, r.k_dec.data());
  r.v->decode_at(r.v_codes.data(), nbv, 0, r.v_dec.data());
  return r;
}

// ‖a − b‖ / ‖b‖ (0 when both are zero).
inline double normalised_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The CPU levels' tolerance on normalised_error. The float kernels compute the reference's
// math in float (scores, a vectorised exp, sums in another order), so the bound does not
// depend on the bit-width: 1e-4. The 8-bit fast-scan tables of the AVX-512 level (int8 query
// and weights, cpu::int8_scores_active()) approximate the float kernels: 2e-2.
inline double cpu_tolerance(const std::string& type, bool int8_tables = false) {
  (void)type;
  return int8_tables ? 2e-2 : 1e-4;
}

}  // namespace tq::test
