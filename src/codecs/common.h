// Helpers shared by the codec implementations (not part of the public API).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "tq/codec.h"

namespace tq {

// Throws tq::Error if any of the n values is NaN or Inf.
inline void check_finite(const float* x, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      throw Error(std::string(what) + ": NaN or Inf in the input vector (element " +
                  std::to_string(i) + ")");
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

// Parse helpers for registry factories.
[[noreturn]] inline void unsupported_dim(std::string_view type, int dim, const std::string& why) {
  throw Error("cache type '" + std::string(type) + "' does not support head dimension " +
              std::to_string(dim) + ": " + why);
}

// Registration entry points, one per codec source file (called by registry.cpp).
void register_float_codecs();
void register_turbo_codecs();
void register_polar_codecs();
void register_polarvq_codecs();

}  // namespace tq
