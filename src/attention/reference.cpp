// turboquant — the reference attention path: plain scalar code in double precision over
// KvCache::read() of the stored values (for tests only).
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/paths.h"

namespace tq::attn {

void attention_reference(const KvCache& cache, int seq, int layer, int n_head, const float* q,
                         int T, int pos0, float scale, float* out) {
  const int d = cache.shape().head_dim, H = cache.shape().n_kv_head, g = n_head / H;
  const int L = cache.seq_len(seq, layer);
  std::vector<float> K(size_t(L) * d), V(size_t(L) * d);
  std::vector<double> s(L);
  for (int kh = 0; kh < H; ++kh) {
    cache.read(seq, layer, kh, true, K.data());
    cache.read(seq, layer, kh, false, V.data());
    for (int qh = kh * g; qh < (kh + 1) * g; ++qh)
      for (int t = 0; t < T; ++t) {
        const float* qv = q + (size_t(t) * n_head + qh) * d;
        const int vis = pos0 + t + 1;
        double m = -1e300;
        for (int i = 0; i < vis; ++i) {
          double a = 0;
          for (int j = 0; j < d; ++j) a += double(qv[j]) * K[size_t(i) * d + j];
          s[i] = a * scale;
          m = std::max(m, s[i]);
        }
        double sum = 0;
        for (int i = 0; i < vis; ++i) sum += (s[i] = std::exp(s[i] - m));
        float* o = out + (size_t(t) * n_head + qh) * d;
        for (int j = 0; j < d; ++j) {
          double a = 0;
          for (int i = 0; i < vis; ++i) a += s[i] * V[size_t(i) * d + j];
          o[j] = float(a / sum);
        }
      }
  }
}

}  // namespace tq::attn
