// Distortion of a cache type on random unit vectors (DESIGN.md §2.2 numbers).
#pragma once
#include <cstdint>
#include <string>

namespace tq {

struct DistortionResult {
  std::string type;
  int dim = 0;
  size_t n = 0;
  double bpv = 0;
  double d_mse = 0;       // E‖x − x̃‖² (x unit)
  double d_mse_se = 0;    // its standard error
  double ip_var = 0;      // E[(est − ⟨y,x⟩)²], y an independent random unit vector
  double ip_bias = 0;     // E[est − ⟨y,x⟩]
  double ip_bias_se = 0;  // standard error of ip_bias
  double ip_slope = 0;    // Σ est·⟨y,x⟩ / Σ ⟨y,x⟩²: 1 = unbiased; 2/π for turbo1
};

// Encodes n random unit vectors (seeded, deterministic for any thread count) and scores each
// against an independent random unit query, through the codec's own score() path.
DistortionResult measure_distortion(const std::string& type, int dim, size_t n, uint64_t seed);

}  // namespace tq
