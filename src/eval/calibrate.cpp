#include "eval/calibrate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/kmeans.h"
#include "core/rng.h"

namespace tq {
namespace {

// Evenly spaced subsample of at most m of n indices (deterministic).
std::vector<size_t> subsample(size_t n, size_t m) {
  std::vector<size_t> idx;
  if (n <= m) {
    idx.resize(n);
    std::iota(idx.begin(), idx.end(), 0);
    return idx;
  }
  for (size_t i = 0; i < m; ++i) idx.push_back(i * n / m);
  return idx;
}

}  // namespace

CodebookFile calibrate_polarvq(const PolarVqParams& p, int n_layer, int n_head_kv, int dim,
                               RopePairing rope, const std::vector<HeadSamples>& heads,
                               const CalibrateOptions& opt) {
  TQ_ASSERT(heads.size() == size_t(n_layer) * n_head_kv);
  CodebookFile f;
  f.params = p;
  f.n_layer = uint32_t(n_layer);
  f.n_head_kv = uint32_t(n_head_kv);
  f.head_dim = uint32_t(dim);
  f.rope = rope;
  const int A = 1 << p.angle_bits, half = dim / 2;
  PolarVqParams p1 = p;  // stage 1 only, for the residuals
  p1.vq_size = 0;
  for (size_t h = 0; h < heads.size(); ++h) {
    const HeadSamples& hs = heads[h];
    const size_t n = hs.n;
    if (n < size_t(std::max(A, 2)))
      throw Error("calibration: " + std::to_string(n) + " samples per head are too few");
    auto cal = std::make_shared<PolarVqCalibration>();
    cal->dim = dim;
    // Angles per pair-channel, in the model's RoPE pairing.
    const auto rows = subsample(n, opt.max_angle_points);
    std::vector<float> th(rows.size());
    for (int i = 0; i < half; ++i) {
      const int a = rope == RopePairing::kNeox ? i : 2 * i;
      const int b = rope == RopePairing::kNeox ? i + half : 2 * i + 1;
      for (size_t r = 0; r < rows.size(); ++r)
        th[r] = std::atan2(hs.keys[rows[r] * dim + b], hs.keys[rows[r] * dim + a]);
      const auto c = kmeans_circular(th.data(), th.size(), A, derive_seed(opt.seed, h, i, 1));
      cal->angle_centroids.insert(cal->angle_centroids.end(), c.begin(), c.end());
    }
    // Value channels by descending variance (stable for ties).
    std::vector<double> var(dim, 0.0), mean(dim, 0.0);
    for (size_t t = 0; t < n; ++t)
      for (int j = 0; j < dim; ++j) mean[j] += hs.values[t * dim + j];
    for (auto& m : mean) m /= double(n);
    for (size_t t = 0; t < n; ++t)
      for (int j = 0; j < dim; ++j) {
        const double e = hs.values[t * dim + j] - mean[j];
        var[j] += e * e;
      }
    cal->value_perm.resize(dim);
    std::iota(cal->value_perm.begin(), cal->value_perm.end(), 0);
    std::stable_sort(cal->value_perm.begin(), cal->value_perm.end(),
                     [&](int a, int b) { return var[a] > var[b]; });
    // Stage 2 on the stage-1 residuals.
    if (p.vq_size > 0) {
      for (bool key : {true, false}) {
        if (!p.has_vq(key)) continue;
        CodecOptions o;
        o.is_key = key;
        o.rope = rope;
        o.calibration = cal;
        PolarVqCodec c1(p1, dim, o);
        const float* x = key ? hs.keys.data() : hs.values.data();
        const int T = c1.block_tokens();
        const size_t nb = n / T;
        if (nb == 0) throw Error("calibration: too few samples for one block");
        std::vector<uint8_t> codes(nb * c1.block_bytes());
        std::vector<float> rec(nb * T * size_t(dim));
        c1.encode(x, nb, codes.data());
        c1.decode(codes.data(), nb, rec.data());
        // Residuals in the stored order (values are permuted).
        const size_t m = nb * T;
        std::vector<float> res(m * dim);
        for (size_t t = 0; t < m; ++t)
          for (int j = 0; j < dim; ++j) {
            const int src = key ? j : cal->value_perm[j];
            res[t * dim + j] = x[t * dim + src] - rec[t * dim + src];
          }
        const int g = p.vq_dim_for(key);
        int s = std::max(1, std::min(p.subspaces, dim / g));
        while ((dim / g) % s) --s;
        const int per = (dim / g) / s;
        std::vector<float> books;
        for (int sp = 0; sp < s; ++sp) {
          // Every sub-vector of this subspace from every sampled token.
          std::vector<float> pts;
          const auto take = subsample(m * per, opt.max_vq_points);
          pts.reserve(take.size() * g);
          for (size_t k : take) {
            const size_t t = k / per, sub = size_t(sp) * per + k % per;
            pts.insert(pts.end(), &res[t * dim + sub * g], &res[t * dim + sub * g] + g);
          }
          const size_t np = pts.size() / g;
          if (np < size_t(p.vq_size))
            throw Error("calibration: " + std::to_string(np) + " residual vectors are fewer than " +
                        std::to_string(p.vq_size) + " codebook entries; use more samples");
          const auto km = kmeans(pts.data(), np, g, p.vq_size, derive_seed(opt.seed, h, sp, key ? 2 : 3),
                                 opt.vq_iterations, 1e-6, 1);
          books.insert(books.end(), km.centroids.begin(), km.centroids.end());
        }
        (key ? cal->key_vq : cal->value_vq) = std::move(books);
      }
    }
    f.heads.push_back(std::move(cal));
    if (opt.progress) opt.progress(h + 1, heads.size());
  }
  return f;
}

}  // namespace tq
