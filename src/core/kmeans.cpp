#include "core/kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/rng.h"
#include "tq/error.h"

namespace tq {

int nearest_centroid(const float* x, const float* c, int k, int dim) {
  int best = 0;
  float bd = std::numeric_limits<float>::max();
  for (int j = 0; j < k; ++j) {
    float d = 0;
    const float* cj = c + size_t(j) * dim;
    for (int t = 0; t < dim; ++t) {
      const float e = x[t] - cj[t];
      d += e * e;
    }
    if (d < bd) {
      bd = d;
      best = j;
    }
  }
  return best;
}

namespace {
KMeansResult kmeans_once(const float* data, size_t n, int dim, int k, uint64_t seed, int max_iter,
                         double tol);
}  // namespace

KMeansResult kmeans(const float* data, size_t n, int dim, int k, uint64_t seed, int max_iter,
                    double tol, int n_init) {
  if (k < 1 || dim < 1) throw Error("k-means: k and dim must be positive");
  KMeansResult best;
  for (int r = 0; r < std::max(1, n_init); ++r) {
    auto res = kmeans_once(data, n, dim, k, derive_seed(seed, r, 0x4B4D), max_iter, tol);
    if (r == 0 || res.inertia < best.inertia) best = std::move(res);
  }
  return best;
}

namespace {
KMeansResult kmeans_once(const float* data, size_t n, int dim, int k, uint64_t seed, int max_iter,
                         double tol) {
  if (n < size_t(k))
    throw Error("k-means: " + std::to_string(n) + " samples are fewer than " +
                std::to_string(k) + " clusters");
  Rng rng(seed);
  KMeansResult r;
  r.centroids.resize(size_t(k) * dim);
  // k-means++: first centre uniform, then proportional to squared distance.
  std::vector<double> d2(n, std::numeric_limits<double>::max());
  size_t first = size_t(rng.uniform() * n) % n;
  std::copy(data + first * dim, data + (first + 1) * dim, r.centroids.begin());
  for (int c = 1; c < k; ++c) {
    const float* prev = &r.centroids[size_t(c - 1) * dim];
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      double d = 0;
      for (int t = 0; t < dim; ++t) {
        const double e = double(data[i * dim + t]) - prev[t];
        d += e * e;
      }
      d2[i] = std::min(d2[i], d);
      total += d2[i];
    }
    size_t pick = 0;
    if (total > 0) {
      double u = rng.uniform() * total;
      for (pick = 0; pick + 1 < n; ++pick) {
        u -= d2[pick];
        if (u <= 0) break;
      }
    } else {
      pick = size_t(rng.uniform() * n) % n;
    }
    std::copy(data + pick * dim, data + (pick + 1) * dim, r.centroids.begin() + size_t(c) * dim);
  }
  // Lloyd iterations.
  std::vector<int> assign(n, -1);
  std::vector<double> sum(size_t(k) * dim);
  std::vector<size_t> count(k);
  std::vector<float> dist(n);
  double prev_inertia = std::numeric_limits<double>::max();
  for (int it = 0; it < max_iter; ++it) {
    double inertia = 0;
#pragma omp parallel for reduction(+ : inertia) schedule(static)
    for (long long i = 0; i < (long long)n; ++i) {
      const float* x = data + size_t(i) * dim;
      const int a = nearest_centroid(x, r.centroids.data(), k, dim);
      assign[i] = a;
      float d = 0;
      for (int t = 0; t < dim; ++t) {
        const float e = x[t] - r.centroids[size_t(a) * dim + t];
        d += e * e;
      }
      dist[i] = d;
      inertia += d;
    }
    inertia /= double(n);
    r.inertia = inertia;
    r.iterations = it + 1;
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(count.begin(), count.end(), 0);
    for (size_t i = 0; i < n; ++i) {
      ++count[assign[i]];
      for (int t = 0; t < dim; ++t) sum[size_t(assign[i]) * dim + t] += data[i * dim + t];
    }
    for (int c = 0; c < k; ++c) {
      if (count[c] == 0) {  // re-seed from the worst-served point
        const size_t far = size_t(std::max_element(dist.begin(), dist.end()) - dist.begin());
        std::copy(data + far * dim, data + (far + 1) * dim, r.centroids.begin() + size_t(c) * dim);
        dist[far] = 0;
        continue;
      }
      for (int t = 0; t < dim; ++t)
        r.centroids[size_t(c) * dim + t] = float(sum[size_t(c) * dim + t] / double(count[c]));
    }
    if (prev_inertia - inertia <= tol * std::max(prev_inertia, 1e-30)) break;
    prev_inertia = inertia;
  }
  return r;
}
}  // namespace

float angle_diff(float a, float b) {
  double d = double(a) - double(b);  // exact
  // fmod(d, 2π) is d itself for |d| < 2π, the usual case (both in [−π, π]); skipping the call
  // changes no result and makes the circular k-means several times faster.
  if (!(std::fabs(d) < 2 * M_PI)) d = std::fmod(d, 2 * M_PI);
  if (d <= -M_PI) d += 2 * M_PI;
  if (d > M_PI) d -= 2 * M_PI;
  return float(d);
}

namespace {

// One k-means++ + Lloyd run on the circle; returns the centroids and their mean squared
// circular distance.
std::vector<float> kmeans_circular_once(const float* angles, size_t n, int k, uint64_t seed,
                                        int max_iter, double& inertia);

}  // namespace

std::vector<float> kmeans_circular(const float* angles, size_t n, int k, uint64_t seed,
                                   int max_iter) {
  // k-means++ can still land in a local minimum (two true clusters sharing a centroid), so
  // keep the best of a few seeded restarts.
  std::vector<float> best;
  double best_inertia = 1e300;
  for (int r = 0; r < 4; ++r) {
    double inertia;
    auto c = kmeans_circular_once(angles, n, k, derive_seed(seed, r, 0x43495243), max_iter, inertia);
    if (inertia < best_inertia) best_inertia = inertia, best = std::move(c);
  }
  return best;
}

namespace {

std::vector<float> kmeans_circular_once(const float* angles, size_t n, int k, uint64_t seed,
                                        int max_iter, double& inertia) {
  if (n < size_t(k))
    throw Error("circular k-means: " + std::to_string(n) + " samples are fewer than " +
                std::to_string(k) + " clusters");
  // Initialise: k-means++ with circular distance.
  Rng rng(seed);
  std::vector<float> c;
  c.push_back(angles[size_t(rng.uniform() * n) % n]);
  std::vector<double> d2(n, 1e30);
  while (int(c.size()) < k) {
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      const double e = angle_diff(angles[i], c.back());
      d2[i] = std::min(d2[i], e * e);
      total += d2[i];
    }
    size_t pick = 0;
    double u = rng.uniform() * total;
    for (pick = 0; pick + 1 < n; ++pick) {
      u -= d2[pick];
      if (u <= 0) break;
    }
    c.push_back(angles[pick]);
  }
  // Lloyd with circular means (mean of unit vectors' angle = minimiser of Σ chord²,
  // a good approximation to the arc-length minimiser for tight clusters).
  std::vector<double> sx(k), sy(k);
  std::vector<double> cs(n), sn(n);  // the points as unit vectors, once
  for (size_t i = 0; i < n; ++i) cs[i] = std::cos(angles[i]), sn[i] = std::sin(angles[i]);
  for (int it = 0; it < max_iter; ++it) {
    std::fill(sx.begin(), sx.end(), 0.0);
    std::fill(sy.begin(), sy.end(), 0.0);
    for (size_t i = 0; i < n; ++i) {
      int best = 0;
      float bd = 1e30f;
      for (int j = 0; j < k; ++j) {
        const float e = std::fabs(angle_diff(angles[i], c[j]));
        if (e < bd) {
          bd = e;
          best = j;
        }
      }
      sx[best] += cs[i];
      sy[best] += sn[i];
    }
    double moved = 0;
    for (int j = 0; j < k; ++j) {
      if (sx[j] == 0 && sy[j] == 0) continue;
      const float nc = float(std::atan2(sy[j], sx[j]));
      moved = std::max(moved, double(std::fabs(angle_diff(nc, c[j]))));
      c[j] = nc;
    }
    if (moved < 1e-6) break;
  }
  for (auto& v : c)
    if (v >= float(M_PI)) v -= float(2 * M_PI);
  std::sort(c.begin(), c.end());
  inertia = 0;
  for (size_t i = 0; i < n; ++i) {
    float bd = 1e30f;
    for (int j = 0; j < k; ++j) bd = std::min(bd, std::fabs(angle_diff(angles[i], c[j])));
    inertia += double(bd) * bd;
  }
  inertia /= double(n);
  return c;
}

}  // namespace

}  // namespace tq
