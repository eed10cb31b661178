// turboquant — the tiled attention path (prefill, large T): per (layer, kv-head) the stored
// codes are decoded into a transient f32 tile, then sgemm Q·Kᵀ, causal mask, softmax,
// sgemm P·V, in row blocks so that masked columns are mostly skipped.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention/paths.h"
#include "core/parallel.h"
#include "cpu/dispatch.h"

namespace tq::attn {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// x (n × d floats) = the decoded segment: f16 rows (f16 segments, and the codes of a type
// whose layout is plain f16) by the dispatched conversion, plain f32 codes copied, everything
// else through the codec's decode (with positions).
void decode_segment(const Codec& cd, PlainLayout plain, const KvSegment& sg, int d, float* x) {
  const size_t m = size_t(sg.n) * d;
  if (sg.f16)
    cpu::kernels().f16_to_f32(reinterpret_cast<const uint8_t*>(sg.f16), m, x);
  else if (plain == PlainLayout::kF16)
    cpu::kernels().f16_to_f32(sg.codes, m, x);
  else if (plain == PlainLayout::kF32)
    std::memcpy(x, sg.codes, sizeof(float) * m);
  else
    cd.decode_at(sg.codes, size_t(sg.n / cd.block_tokens()), sg.pos0, x);
  if (sg.key_offset)  // the page's key-mean offset (KvCacheOptions::key_means_per_page)
    for (int i = 0; i < sg.n; ++i)
      for (int j = 0; j < d; ++j) x[size_t(i) * d + j] += sg.key_offset[j];
}

// max of x[0, n): 16 running maxima, which the compiler keeps in one vector register
float row_max(const float* x, int n) {
  float m16[16];
  std::fill(m16, m16 + 16, kNegInf);
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) m16[j] = x[i + j] > m16[j] ? x[i + j] : m16[j];
  float m = kNegInf;
  for (int j = 0; j < 16; ++j) m = std::max(m, m16[j]);
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

}  // namespace

void attention_tiled(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
                     int pos0, float scale, float* out, int window) {
  const int d = cache.shape().head_dim, H = cache.shape().n_kv_head, g = n_head / H;
  const int L = pos0 + T;  // positions beyond the last query are never visible
  const int lo_all = first_visible(pos0, window);  // nor those before the first one's window
  const auto hs = collect(cache, seq, layer);
  // Decode every (kv-head, K|V) segment into the transient tiles, in parallel.
  std::vector<std::vector<float>> K(H, std::vector<float>(size_t(L) * d));
  std::vector<std::vector<float>> V(H, std::vector<float>(size_t(L) * d));
  struct Job {
    int kh;
    bool is_key;
    const KvSegment* sg;
  };
  std::vector<Job> jobs;
  for (int kh = 0; kh < H; ++kh) {
    for (const auto& sg : hs[kh].k)
      if (sg.pos0 < L && sg.pos0 + sg.n > lo_all) jobs.push_back({kh, true, &sg});
    for (const auto& sg : hs[kh].v)
      if (sg.pos0 < L && sg.pos0 + sg.n > lo_all) jobs.push_back({kh, false, &sg});
  }
  const PlainLayout plain_k = cache.traits(layer, true).plain;
  const PlainLayout plain_v = cache.traits(layer, false).plain;
  ParallelErrors errors;
#pragma omp parallel for schedule(dynamic)
  for (int i = 0; i < int(jobs.size()); ++i)
    errors.run([&] {
      const Job& jb = jobs[i];
      const Codec& cd = cache.codec(layer, jb.kh, jb.is_key);
      const PlainLayout plain = jb.is_key ? plain_k : plain_v;
      const KvSegment& sg = *jb.sg;
      float* X = (jb.is_key ? K : V)[jb.kh].data() + size_t(sg.pos0) * d;
      if (sg.pos0 + sg.n <= L) {
        decode_segment(cd, plain, sg, d, X);
      } else {  // a compressed block reaching past the last query: decode whole, copy the part
        std::vector<float> tmp(size_t(sg.n) * d);
        decode_segment(cd, plain, sg, d, tmp.data());
        std::memcpy(X, tmp.data(), sizeof(float) * size_t(L - sg.pos0) * d);
      }
    });
  errors.rethrow();
  // (query head, row block) items; BLAS is single-threaded inside the OpenMP threads. Row
  // blocks only read the columns up to their last row, so masked work is mostly skipped.
  constexpr int kRows = 64;
  const int n_blocks = (T + kRows - 1) / kRows;
  const int ld = n_head * d;
  const cpu::Kernels& kern = cpu::kernels();
#pragma omp parallel
  {
    std::vector<float> S(size_t(kRows) * L);
#pragma omp for schedule(dynamic)
    for (int it = 0; it < n_head * n_blocks; ++it) {
      const int qh = it % n_head, blk = n_blocks - 1 - it / n_head;  // big blocks first
      const int kh = qh / g;
      const int r0 = blk * kRows, r1 = std::min(T, r0 + kRows), nr = r1 - r0;
      // Columns from the first row's window start c0 (row[i] is position c0 + i).
      const int c0 = first_visible(pos0 + r0, window), cols = pos0 + r1 - c0;
      const float* Q = q + size_t(r0) * ld + size_t(qh) * d;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, cols, d, scale, Q, ld,
                  K[kh].data() + size_t(c0) * d, d, 0.f, S.data(), cols);
      for (int r = 0; r < nr; ++r) {
        float* row = S.data() + size_t(r) * cols;
        const int vis = pos0 + r0 + r + 1 - c0, lo = first_visible(pos0 + r0 + r, window) - c0;
        float m = row_max(row + lo, vis - lo);
        // exp by the dispatched SIMD kernel (its scalar form is std::exp): at long context the
        // T × L exponentials cost as much as both products together when done one by one
        const float sum = kern.exp_sum(row + lo, size_t(vis - lo), m);
        const float inv = 1.f / sum;
        for (int i = 0; i < lo; ++i) row[i] = 0.f;
        for (int i = lo; i < vis; ++i) row[i] *= inv;
        for (int i = vis; i < cols; ++i) row[i] = 0.f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, cols, 1.f, S.data(), cols,
                  V[kh].data() + size_t(c0) * d, d, 0.f, out + size_t(r0) * ld + size_t(qh) * d,
                  ld);
    }
  }
}

}  // namespace tq::attn
