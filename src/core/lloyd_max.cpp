#include "core/lloyd_max.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

#include "tq/error.h"

namespace tq {
namespace {

// Cumulative moments of a density on a fine uniform grid over a parameter s ∈ [s0, s1], with
// x(s) the value and w(s) the weight (density·dx/ds). M_k(s) = ∫ x^k w ds, trapezoid rule.
// Interval moments come from linear interpolation of the cumulative sums.
struct MomentTable {
  double s0 = 0, s1 = 0, h = 0;
  std::vector<double> x, m0, m1, m2;

  template <class XF, class WF>
  void build(double lo, double hi, int n, XF xf, WF wf) {
    s0 = lo;
    s1 = hi;
    h = (hi - lo) / n;
    x.resize(n + 1);
    m0.assign(n + 1, 0);
    m1.assign(n + 1, 0);
    m2.assign(n + 1, 0);
    std::vector<double> w(n + 1);
    for (int i = 0; i <= n; ++i) {
      const double s = lo + h * i;
      x[i] = xf(s);
      w[i] = wf(s);
    }
    for (int i = 1; i <= n; ++i) {
      const double a = w[i - 1], b = w[i], xa = x[i - 1], xb = x[i];
      m0[i] = m0[i - 1] + 0.5 * h * (a + b);
      m1[i] = m1[i - 1] + 0.5 * h * (a * xa + b * xb);
      m2[i] = m2[i - 1] + 0.5 * h * (a * xa * xa + b * xb * xb);
    }
    const double total = m0[n];
    for (int i = 0; i <= n; ++i) {
      m0[i] /= total;
      m1[i] /= total;
      m2[i] /= total;
    }
  }
  // Cumulative moments at parameter s (clamped).
  void at(double s, double& c0, double& c1, double& c2) const {
    const int n = int(x.size()) - 1;
    double p = (s - s0) / h;
    if (p <= 0) { c0 = m0[0]; c1 = m1[0]; c2 = m2[0]; return; }
    if (p >= n) { c0 = m0[n]; c1 = m1[n]; c2 = m2[n]; return; }
    const int i = int(p);
    const double f = p - i;
    c0 = m0[i] + f * (m0[i + 1] - m0[i]);
    c1 = m1[i] + f * (m1[i + 1] - m1[i]);
    c2 = m2[i] + f * (m2[i + 1] - m2[i]);
  }
};

// Lloyd iteration given a map from value x to grid parameter s (monotone).
template <class SOfX>
std::vector<double> lloyd(const MomentTable& t, SOfX s_of_x, double xlo, double xhi, int k,
                          double* mse_out) {
  // Initialise at the quantiles (i + ½)/k of the distribution.
  std::vector<double> c(k);
  {
    int j = 0;
    const int n = int(t.x.size()) - 1;
    for (int i = 0; i < k; ++i) {
      const double target = (i + 0.5) / k;
      while (j < n && t.m0[j + 1] < target) ++j;
      c[i] = t.x[std::min(j + 1, n)];
    }
    for (int i = 1; i < k; ++i)
      if (c[i] <= c[i - 1]) c[i] = c[i - 1] + 1e-12 * (xhi - xlo);
  }
  std::vector<double> b(k + 1);
  double mse = 0;
  for (int it = 0; it < 100000; ++it) {
    b[0] = xlo;
    b[k] = xhi;
    for (int i = 1; i < k; ++i) b[i] = 0.5 * (c[i - 1] + c[i]);
    double change = 0;
    mse = 0;
    double p0, p1, p2;
    t.at(s_of_x(b[0]), p0, p1, p2);
    for (int i = 0; i < k; ++i) {
      double q0, q1, q2;
      t.at(s_of_x(b[i + 1]), q0, q1, q2);
      const double m0 = q0 - p0, m1 = q1 - p1, m2 = q2 - p2;
      const double nc = m0 > 1e-300 ? m1 / m0 : 0.5 * (b[i] + b[i + 1]);
      change = std::max(change, std::fabs(nc - c[i]));
      c[i] = nc;
      mse += m2 - 2 * nc * m1 + nc * nc * m0;
      p0 = q0; p1 = q1; p2 = q2;
    }
    if (change < 1e-13 * (xhi - xlo)) break;
  }
  if (mse_out) *mse_out = std::max(mse, 0.0);
  return c;
}

}  // namespace

const ScalarCodebook& lloyd_max_codebook(int dim, int bits) {
  if (dim < 2) throw Error("lloyd-max: dimension must be at least 2, got " + std::to_string(dim));
  if (bits < 1 || bits > 8) throw Error("lloyd-max: bits must be 1..8, got " + std::to_string(bits));
  static std::mutex mu;
  static std::map<std::pair<int, int>, ScalarCodebook> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find({dim, bits});
  if (it != cache.end()) return it->second;

  // Substitute t = sin φ: f(t) dt ∝ cos^(d−2) φ dφ, smooth on [−π/2, π/2] for every d ≥ 2.
  MomentTable table;
  const double e = dim - 2.0;
  table.build(-M_PI / 2, M_PI / 2, 1 << 18, [](double s) { return std::sin(s); },
              [e](double s) { const double c = std::cos(s); return c <= 0 ? (e == 0 ? 1.0 : 0.0) : std::pow(c, e); });
  double mse = 0;
  auto c = lloyd(table, [](double x) { return std::asin(std::clamp(x, -1.0, 1.0)); }, -1.0, 1.0,
                 1 << bits, &mse);
  // Symmetrise (the density is even): exact ±pairs.
  const int k = 1 << bits;
  for (int i = 0; i < k / 2; ++i) {
    const double v = 0.5 * (c[k - 1 - i] - c[i]);
    c[i] = -v;
    c[k - 1 - i] = v;
  }
  ScalarCodebook cb;
  cb.dim = dim;
  cb.bits = bits;
  cb.coord_mse = mse;
  cb.centroids.assign(c.begin(), c.end());
  for (int i = 0; i + 1 < k; ++i) cb.boundaries.push_back(float(0.5 * (c[i] + c[i + 1])));
  return cache.emplace(std::make_pair(dim, bits), std::move(cb)).first->second;
}

std::vector<double> lloyd_max_on_density(double (*w)(double, const void*), const void* ctx,
                                         double lo, double hi, int levels, double* mse) {
  MomentTable table;
  table.build(lo, hi, 1 << 18, [](double s) { return s; }, [&](double s) { return w(s, ctx); });
  return lloyd(table, [](double x) { return x; }, lo, hi, levels, mse);
}

}  // namespace tq
