// k-means with k-means++ initialisation (seeded, deterministic), for the learned codebooks of
// the polar-vq pipeline (DESIGN.md §2.4): Euclidean on g-dimensional vectors, and 1-D on the circle
// for angle codebooks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tq {

struct KMeansResult {
  std::vector<float> centroids;  // k × dim, row-major
  double inertia = 0;            // mean squared distance to the assigned centroid
  int iterations = 0;
};

// data: n × dim. k ≤ n is required (fewer points than clusters → tq::Error). Empty clusters are
// re-seeded from the point farthest from its centroid. k-means++ can still end in a local
// minimum, so the best (lowest inertia) of n_init seeded runs is kept.
KMeansResult kmeans(const float* data, size_t n, int dim, int k, uint64_t seed,
                    int max_iter = 50, double tol = 1e-6, int n_init = 3);

// Index of the nearest of k centroids (dim each) to x.
int nearest_centroid(const float* x, const float* centroids, int k, int dim);

// Angles in radians; centroids in [−π, π), ascending. Circular distance.
std::vector<float> kmeans_circular(const float* angles, size_t n, int k, uint64_t seed,
                                   int max_iter = 50);
// Wrapped difference a − b in (−π, π].
float angle_diff(float a, float b);

}  // namespace tq
