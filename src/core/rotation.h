// Random orthogonal rotations Π for TurboQuant/PolarQuant (DESIGN.md §2.1).
//  - power-of-two d: randomised Hadamard y = (1/√d)·H·D·x, D = seeded ±1 signs, H applied by an
//    in-place fast Walsh-Hadamard transform (O(d log d));
//  - other d (80, 96, ...): a dense orthogonal matrix Q = QR(seeded Gaussian), y = Q·x.
// The seed is part of a cache type's identity.
#pragma once
#include <cstdint>
#include <vector>

namespace tq {

// In-place unnormalised Walsh-Hadamard transform of n = 2^k floats (scalar reference).
void fwht_ref(float* x, int n);

class Rotation {
 public:
  enum class Kind { kHadamard, kDense };
  Rotation() = default;
  // force_dense: use the dense matrix even for a power-of-two d (tests, comparisons).
  Rotation(int dim, uint64_t seed, bool force_dense = false);

  int dim() const { return dim_; }
  Kind kind() const { return kind_; }
  // y = Π x (x and y may alias).
  void forward(const float* x, float* y) const;
  // x = Πᵀ y (x and y may alias).
  void inverse(const float* y, float* x) const;
  // Dense d×d matrix of Π (row-major), for tests and for the GPU path.
  std::vector<float> matrix() const;
  const std::vector<float>& signs() const { return signs_; }

 private:
  int dim_ = 0;
  Kind kind_ = Kind::kHadamard;
  std::vector<float> signs_;  // Hadamard: D
  std::vector<float> q_;      // Dense: Q, row-major d×d
};

bool is_pow2(int n);

}  // namespace tq
