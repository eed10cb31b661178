#include "core/rotation.h"

#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "tq/error.h"

namespace tq {

bool is_pow2(int n) { return n > 0 && (n & (n - 1)) == 0; }

void fwht_ref(float* x, int n) {
  for (int h = 1; h < n; h <<= 1)
    for (int i = 0; i < n; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

Rotation::Rotation(int dim, uint64_t seed, bool force_dense) : dim_(dim) {
  if (dim < 2) throw Error("rotation: dimension must be at least 2, got " + std::to_string(dim));
  Rng rng(seed);
  if (is_pow2(dim) && !force_dense) {
    kind_ = Kind::kHadamard;
    signs_.resize(dim);
    for (auto& s : signs_) s = rng.sign();
    return;
  }
  kind_ = Kind::kDense;
  // Modified Gram-Schmidt on the rows of a Gaussian matrix, in double; the rows of the result
  // are orthonormal, so Q is orthogonal and Haar-distributed up to the row signs (fixed by
  // construction as R's positive diagonal).
  const int d = dim;
  std::vector<double> a(size_t(d) * d);
  for (auto& v : a) v = rng.normal();
  for (int i = 0; i < d; ++i) {
    double* ri = &a[size_t(i) * d];
    for (int pass = 0; pass < 2; ++pass)  // re-orthogonalise once for accuracy
      for (int j = 0; j < i; ++j) {
        const double* rj = &a[size_t(j) * d];
        double dot = 0;
        for (int k = 0; k < d; ++k) dot += ri[k] * rj[k];
        for (int k = 0; k < d; ++k) ri[k] -= dot * rj[k];
      }
    double nrm = 0;
    for (int k = 0; k < d; ++k) nrm += ri[k] * ri[k];
    nrm = std::sqrt(nrm);
    for (int k = 0; k < d; ++k) ri[k] /= nrm;
  }
  q_.assign(a.begin(), a.end());
}

void Rotation::forward(const float* x, float* y) const {
  const int d = dim_;
  if (kind_ == Kind::kHadamard) {
    for (int i = 0; i < d; ++i) y[i] = x[i] * signs_[i];
    fwht_ref(y, d);
    const float s = 1.0f / std::sqrt(float(d));
    for (int i = 0; i < d; ++i) y[i] *= s;
    return;
  }
  std::vector<float> tmp(x, x + d);
  for (int i = 0; i < d; ++i) {
    const float* qi = &q_[size_t(i) * d];
    double acc = 0;
    for (int k = 0; k < d; ++k) acc += double(qi[k]) * tmp[k];
    y[i] = float(acc);
  }
}

void Rotation::inverse(const float* y, float* x) const {
  const int d = dim_;
  if (kind_ == Kind::kHadamard) {
    if (x != y) std::memcpy(x, y, sizeof(float) * d);
    fwht_ref(x, d);
    const float s = 1.0f / std::sqrt(float(d));
    for (int i = 0; i < d; ++i) x[i] *= s * signs_[i];
    return;
  }
  std::vector<double> acc(d, 0.0);
  for (int i = 0; i < d; ++i) {
    const float* qi = &q_[size_t(i) * d];
    const double yi = y[i];
    for (int k = 0; k < d; ++k) acc[k] += double(qi[k]) * yi;
  }
  for (int k = 0; k < d; ++k) x[k] = float(acc[k]);
}

std::vector<float> Rotation::matrix() const {
  const int d = dim_;
  std::vector<float> m(size_t(d) * d);
  std::vector<float> e(d);
  for (int j = 0; j < d; ++j) {  // column j = Π e_j
    std::fill(e.begin(), e.end(), 0.0f);
    e[j] = 1.0f;
    forward(e.data(), e.data());
    for (int i = 0; i < d; ++i) m[size_t(i) * d + j] = e[i];
  }
  return m;
}

}  // namespace tq
