// Helpers shared by the codec implementations (not part of the public API).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "tq/codec.h"

namespace tq {
namespace cpu {
struct PolarTables;
}

// Throws tq::Error if any of the n values is NaN or Inf.
inline void check_finite(const float* x, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      throw Error(std::string(what) + ": NaN or Inf in the input vector (element " +
                  std::to_string(i) + ")");
}

// Throws tq::Error if any value lies outside the fp16 range (|x| > 65504). Types that keep fp16
// scales, mins or norms need it: beyond that range the stored metadata would be inf and the
// decoded values NaN, a silent corruption.
inline void check_fp16_range(const float* x, size_t n, const std::string& type) {
  for (size_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) > 65504.0f)
      throw Error("cache type '" + type + "': value " + std::to_string(x[i]) + " (element " +
                  std::to_string(i) + ") is outside the fp16 range of its stored scales");
}

inline double dot(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

// A query kept as floats (possibly rotated) plus optional extra floats.
struct VecQuery : QueryState {
  std::vector<float> q;      // query in the codec's working domain
  std::vector<float> extra;  // e.g. S·q for the QJL sketch, or per-code lookup tables
};

// The query kept as it is (codecs that score in the original domain).
inline std::unique_ptr<QueryState> plain_query(const float* q, int d) {
  auto s = std::make_unique<VecQuery>();
  s->q.assign(q, q + d);
  return s;
}
inline const float* plain_query_data(const QueryState& qs) {
  return static_cast<const VecQuery&>(qs).q.data();
}

// Parse helpers for registry factories.
[[noreturn]] inline void unsupported_dim(std::string_view type, int dim, const std::string& why) {
  throw Error("cache type '" + std::string(type) + "' does not support head dimension " +
              std::to_string(dim) + ": " + why);
}

// PolarQuant internals for the kernel tests: the decode into the rotated domain (no inverse
// rotation).
// PolarQuant codes → rotated-domain vectors (n × d) through the dispatched kernel; _ref is the
// codec's own scalar decode (the kernels' reference).
void polar_decode_rotated(const Codec& c, const uint8_t* codes, size_t n, float* y);
void polar_decode_rotated_ref(const Codec& c, const uint8_t* codes, size_t n, float* y);
const cpu::PolarTables& polar_tables();

// Registration entry points, one per codec source file (called by registry.cpp).
void register_float_codecs();
void register_turbo_codecs();
void register_polar_codecs();
void register_polarvq_codecs();
void register_ggml_codecs();      // ggml_codecs.cpp: q8_0 q4_0 q4_1 q5_0 q5_1 iq4_nl (+h)
void register_baseline_codecs();  // baseline_codecs.cpp: fp8_e4m3 int4-g64 kivi2 kivi4
void register_vllm_codecs();      // vllm_tq.cpp: vllm-k8 vllm-k4nc vllm-k3nc vllm-v4 vllm-v3
void register_kvquant_codecs();   // kvquant.cpp: kvquant3 kvquant4
void register_kvarn_codecs();     // kvarn.cpp: kvarn4 kvarn2

}  // namespace tq
