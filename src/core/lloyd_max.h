// Lloyd-Max scalar codebooks on the exact coordinate density of a uniformly random unit vector
// in R^d:  f(t) = Γ(d/2) / (√π Γ((d−1)/2)) · (1 − t²)^((d−3)/2),  t ∈ [−1, 1]  (DESIGN.md §2.2).
// Solved once per (d, bits) and cached (thread-safe).
#pragma once
#include <vector>

namespace tq {

struct ScalarCodebook {
  int dim = 0, bits = 0;
  std::vector<float> centroids;   // 2^bits, ascending
  std::vector<float> boundaries;  // 2^bits − 1 midpoints, ascending
  double coord_mse = 0;           // E[(t − Q(t))²] under f, per coordinate
  // Unit-vector distortion D_mse = d · coord_mse.
  double unit_mse() const { return dim * coord_mse; }
  // Index of the nearest centroid (scalar reference).
  int quantize(float t) const {
    int lo = 0, hi = int(boundaries.size());
    while (lo < hi) {  // first boundary ≥ t
      const int mid = (lo + hi) / 2;
      if (boundaries[mid] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
};

// The cached optimal codebook. Throws tq::Error for d < 2 or bits outside 1..8.
const ScalarCodebook& lloyd_max_codebook(int dim, int bits);

// Lloyd-Max (1-D k-means) on an arbitrary density w(x) on [lo, hi], given as a callable sampled
// on a fine grid. Used for PolarQuant's angle codebooks. Returns ascending centroids.
std::vector<double> lloyd_max_on_density(double (*w)(double, const void*), const void* ctx,
                                         double lo, double hi, int levels, double* mse = nullptr);

}  // namespace tq
