#include "eval/distortion.h"

#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "core/rng.h"
#include "tq/codec.h"

namespace tq {

DistortionResult measure_distortion(const std::string& type, int dim, size_t n, uint64_t seed) {
  auto codec = make_codec(type, dim);
  DistortionResult r;
  r.type = type;
  r.dim = dim;
  r.n = n;
  r.bpv = codec->bpv();
  std::vector<double> err2(n), ipe(n), tru(n), est(n);
  const size_t bb = codec->block_bytes();
  TQ_ASSERT(codec->block_tokens() == 1);
  // Each iteration's error (e.g. a codec that refuses to encode) is kept and rethrown after the
  // region: an exception leaving it would call std::terminate.
  ParallelErrors errors;
#pragma omp parallel
  {
    std::vector<float> x(dim), y(dim), xt(dim);
    std::vector<uint8_t> code(bb);
#pragma omp for schedule(static)
    for (size_t i = 0; i < n; ++i) errors.run([&] {
      Rng rng(derive_seed(seed, i, 0x44495354));
      auto unit = [&](std::vector<float>& v) {
        double s = 0;
        for (auto& e : v) {
          e = float(rng.normal());
          s += double(e) * e;
        }
        const float inv = float(1.0 / std::sqrt(s));
        for (auto& e : v) e *= inv;
      };
      unit(x);
      unit(y);
      codec->encode(x.data(), 1, code.data());
      codec->decode(code.data(), 1, xt.data());
      double e2 = 0, t = 0;
      for (int j = 0; j < dim; ++j) {
        e2 += double(x[j] - xt[j]) * (x[j] - xt[j]);
        t += double(y[j]) * x[j];
      }
      auto qs = codec->prepare_query(y.data());
      float s;
      codec->score(*qs, code.data(), 1, &s);
      err2[i] = e2;
      tru[i] = t;
      est[i] = s;
      ipe[i] = s - t;
    });
  }
  errors.rethrow();
  double m = 0, m2 = 0, b = 0, b2 = 0, v = 0, num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    m += err2[i];
    m2 += err2[i] * err2[i];
    b += ipe[i];
    b2 += ipe[i] * ipe[i];
    num += est[i] * tru[i];
    den += tru[i] * tru[i];
  }
  const double dn = double(n);
  r.d_mse = m / dn;
  r.d_mse_se = std::sqrt(std::max(0.0, m2 / dn - r.d_mse * r.d_mse) / dn);
  r.ip_bias = b / dn;
  v = b2 / dn;
  r.ip_var = v;
  r.ip_bias_se = std::sqrt(std::max(0.0, v - r.ip_bias * r.ip_bias) / dn);
  r.ip_slope = den > 0 ? num / den : 0;
  return r;
}

}  // namespace tq
