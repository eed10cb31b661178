// turboquant — causal attention over the stored KV cache: the entry point, the codes path and
// the SIMD decode driver's glue (the tiled and reference paths are tiled.cpp, reference.cpp).
#include "attention/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention/decode.h"
#include "attention/paths.h"
#include "core/half.h"
#include "cpu/dispatch.h"

namespace tq {
namespace avx2 {
float dot_f16(const float* q, const uint16_t* h, int n);
void axpy_f16(float w, const uint16_t* h, float* acc, int n);
void f16_to_f32(const uint16_t* h, float* x, size_t n);
}  // namespace avx2

namespace attn {

// f16 → f32 by table (256 KiB, built once): branch-free, and several times faster than the
// scalar bit-twiddling conversion on machines where we do not dispatch to F16C.
const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = f16_to_f32(uint16_t(i));
    return t;
  }();
  return table.data();
}

bool use_avx2(int d) { return cpu::active_level() != cpu::Level::kScalar && d % 8 == 0; }
float dot_f16(const float* q, const uint16_t* h, int d, bool simd) {
  if (simd) return avx2::dot_f16(q, h, d);
  const float* tab = f16_table();
  float s = 0.f;
  for (int j = 0; j < d; ++j) s += q[j] * tab[h[j]];
  return s;
}
void axpy_f16(float w, const uint16_t* h, float* acc, int d, bool simd) {
  if (simd) return avx2::axpy_f16(w, h, acc, d);
  const float* tab = f16_table();
  for (int j = 0; j < d; ++j) acc[j] += w * tab[h[j]];
}

Plain plain_kind(const Codec& c) {
  const std::string n = c.name();
  return n == "f16" ? Plain::kF16 : n == "f32" ? Plain::kF32 : Plain::kNo;
}

void decode_segment(const Codec& cd, Plain pk, const KvSegment& sg, int d, float* x) {
  const float* tab = f16_table();
  if (sg.f16 || pk == Plain::kF16) {
    const uint16_t* h = sg.f16 ? sg.f16 : reinterpret_cast<const uint16_t*>(sg.codes);
    if (use_avx2(d))
      avx2::f16_to_f32(h, x, size_t(sg.n) * d);
    else
      for (size_t i = 0; i < size_t(sg.n) * d; ++i) x[i] = tab[h[i]];
  } else if (pk == Plain::kF32) {
    std::memcpy(x, sg.codes, sizeof(float) * size_t(sg.n) * d);
  } else {
    cd.decode_at(sg.codes, size_t(sg.n / cd.block_tokens()), sg.pos0, x);
  }
}

std::vector<HeadSegs> collect(const KvCache& cache, int seq, int layer) {
  std::vector<HeadSegs> hs(cache.shape().n_kv_head);
  for (int h = 0; h < int(hs.size()); ++h) {
    cache.segments(seq, layer, h, true, hs[h].k);
    cache.segments(seq, layer, h, false, hs[h].v);
  }
  return hs;
}

}  // namespace attn
namespace {
using namespace attn;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void check_args(const KvCache& cache, int seq, int layer, int n_head, int T, int pos0) {
  const int L = cache.seq_len(seq, layer);
  TQ_ASSERT(n_head % cache.shape().n_kv_head == 0);
  TQ_ASSERT(T >= 0 && pos0 >= 0 && pos0 + T <= L);
}

// ---------------------------------------------------------------------------------------------
// Codes path. For one query: pages of the position axis are visited in order; in each, the
// scores come from the K segments that overlap it, the running max/sum are updated (online
// softmax: earlier partial sums are rescaled when the max grows) and the values are
// accumulated from the V segments that overlap it — compressed ones in the codec's working
// domain (one accumulator, finish() once at the end), f16 ones in plain f32.
void attention_codes(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
                     int pos0, float scale, float* out) {
  const int d = cache.shape().head_dim, H = cache.shape().n_kv_head, g = n_head / H;
  const int PT = cache.options().page_tokens;
  const auto hs = collect(cache, seq, layer);
  const bool simd = use_avx2(d);
  const int n_items = T * n_head;
#pragma omp parallel
  {
    std::vector<float> qs_buf(d), sc(PT), w(PT), acc_f(d), tmp(d);
    std::vector<float> acc_c;
#pragma omp for schedule(dynamic)
    for (int it = 0; it < n_items; ++it) {
      // Items ordered head-major so that the query heads of one KV head run back to back.
      const int qh = it / T, t = it % T, kh = qh / g;
      const Codec& ck = cache.codec(layer, kh, true);
      const Codec& cv = cache.codec(layer, kh, false);
      const Plain pk = plain_kind(ck), pv = plain_kind(cv);
      const float* qv = q + (size_t(t) * n_head + qh) * d;
      for (int j = 0; j < d; ++j) qs_buf[j] = qv[j] * scale;
      std::unique_ptr<QueryState> qs;
      if (pk == Plain::kNo) qs = ck.prepare_query(qs_buf.data());
      acc_c.assign(cv.acc_size(), 0.f);
      std::fill(acc_f.begin(), acc_f.end(), 0.f);
      bool used_c = false;
      const int vis = pos0 + t + 1;
      float m = kNegInf, l = 0.f;
      for (int a = 0; a < vis; a += PT) {
        const int b = std::min(a + PT, vis);  // positions [a, b) are visible in this page
        // Scores.
        for (const KvSegment& sg : hs[kh].k) {
          const int lo = std::max(a, sg.pos0), hi = std::min(b, sg.pos0 + sg.n);
          if (lo >= hi) continue;
          float* dst = sc.data() + (lo - a);
          if (sg.codes && pk == Plain::kNo) {
            // Compressed segments lie inside one page: score the whole segment (its last
            // block may reach past b; those scores are masked below).
            TQ_ASSERT(sg.pos0 >= a && sg.pos0 + sg.n <= a + PT);
            ck.score_at(*qs, sg.codes, size_t(sg.n / ck.block_tokens()), sg.pos0,
                        sc.data() + (sg.pos0 - a));
          } else if (sg.codes && pk == Plain::kF32) {
            const float* x = reinterpret_cast<const float*>(sg.codes);
            for (int i = lo; i < hi; ++i) {
              const float* row = x + size_t(i - sg.pos0) * d;
              float s = 0.f;
              for (int j = 0; j < d; ++j) s += qs_buf[j] * row[j];
              dst[i - lo] = s;
            }
          } else {
            const uint16_t* h = sg.f16 ? sg.f16 : reinterpret_cast<const uint16_t*>(sg.codes);
            for (int i = lo; i < hi; ++i)
              dst[i - lo] = dot_f16(qs_buf.data(), h + size_t(i - sg.pos0) * d, d, simd);
          }
        }
        // Online softmax update.
        float pm = kNegInf;
        for (int i = 0; i < b - a; ++i) pm = std::max(pm, sc[i]);
        const float m_new = std::max(m, pm);
        const float alpha = m == kNegInf ? 0.f : std::exp(m - m_new);
        if (alpha != 1.f) {
          l *= alpha;
          for (float& x : acc_f) x *= alpha;
          if (used_c)
            for (float& x : acc_c) x *= alpha;
        }
        for (int i = 0; i < PT; ++i) w[i] = i < b - a ? std::exp(sc[i] - m_new) : 0.f;
        for (int i = 0; i < b - a; ++i) l += w[i];
        m = m_new;
        // Values.
        for (const KvSegment& sg : hs[kh].v) {
          const int lo = std::max(a, sg.pos0), hi = std::min(b, sg.pos0 + sg.n);
          if (lo >= hi) continue;
          if (sg.codes && pv == Plain::kNo) {
            TQ_ASSERT(sg.pos0 >= a && sg.pos0 + sg.n <= a + PT);
            cv.accumulate(sg.codes, size_t(sg.n / cv.block_tokens()), w.data() + (sg.pos0 - a),
                          acc_c.data());
            used_c = true;
          } else if (sg.codes && pv == Plain::kF32) {
            const float* x = reinterpret_cast<const float*>(sg.codes);
            for (int i = lo; i < hi; ++i) {
              const float wi = w[i - a];
              const float* row = x + size_t(i - sg.pos0) * d;
              for (int j = 0; j < d; ++j) acc_f[j] += wi * row[j];
            }
          } else {
            const uint16_t* h = sg.f16 ? sg.f16 : reinterpret_cast<const uint16_t*>(sg.codes);
            for (int i = lo; i < hi; ++i)
              axpy_f16(w[i - a], h + size_t(i - sg.pos0) * d, acc_f.data(), d, simd);
          }
        }
      }
      float* o = out + (size_t(t) * n_head + qh) * d;
      if (used_c) {
        cv.finish(acc_c.data(), tmp.data());
        for (int j = 0; j < d; ++j) acc_f[j] += tmp[j];
      }
      const float inv = 1.f / l;
      for (int j = 0; j < d; ++j) o[j] = acc_f[j] * inv;
    }
  }
}

// Generation through the SIMD driver: one page list per KV head, K and V segments aligned.
bool driver_pages(const KvCache& cache, int seq, int layer,
                  std::vector<std::vector<cpu::KvPage>>& pages) {
  const int H = cache.shape().n_kv_head;
  pages.assign(H, {});
  std::vector<KvSegment> ks, vs;
  for (int h = 0; h < H; ++h) {
    // The driver's kernels know no positions: position-dependent codecs (kvquant keys) take
    // the codes path.
    const Codec &ck = cache.codec(layer, h, true), &cv = cache.codec(layer, h, false);
    if (ck.block_tokens() != 1 || cv.block_tokens() != 1 || ck.positional() || cv.positional())
      return false;
    cache.segments(seq, layer, h, true, ks);
    cache.segments(seq, layer, h, false, vs);
    if (ks.size() != vs.size()) return false;
    for (size_t i = 0; i < ks.size(); ++i) {
      if (!ks[i].codes || !vs[i].codes || ks[i].pos0 != vs[i].pos0 || ks[i].n != vs[i].n)
        return false;
      pages[h].push_back({ks[i].codes, vs[i].codes, size_t(ks[i].n)});
    }
  }
  return true;
}

void attention_driver(const KvCache& cache, int seq, int layer, int n_head, const float* q,
                      int pos0, float scale, float* out) {
  std::vector<std::vector<cpu::KvPage>> pages;
  TQ_ASSERT(driver_pages(cache, seq, layer, pages));
  const int d = cache.shape().head_dim, H = cache.shape().n_kv_head, g = n_head / H;
  size_t total = 0;
  for (const auto& pg : pages[0]) total += pg.tokens;
  TQ_ASSERT(total == size_t(pos0) + 1);  // T = 1: the query sees every stored position
  std::vector<cpu::HeadTask> tasks;
  for (int h = 0; h < H; ++h)
    tasks.push_back({&cache.codec(layer, h, true), &cache.codec(layer, h, false), pages[h],
                     q + size_t(h) * g * d, out + size_t(h) * g * d});
  cpu::decode_attention_batch(tasks, g, scale);
}

}  // namespace

using attn::attention_reference;
using attn::attention_tiled;

bool attention_driver_applicable(const KvCache& cache, int seq, int layer) {
  std::vector<std::vector<cpu::KvPage>> pages;
  return driver_pages(cache, seq, layer, pages);
}

int attention_tiled_threshold() { return 8; }

void attention(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
               int pos0, float scale, float* out, AttnPath path) {
  check_args(cache, seq, layer, n_head, T, pos0);
  if (T == 0) return;
  if (path == AttnPath::kAuto) {
    if (T >= attention_tiled_threshold())
      path = AttnPath::kTiled;
    else if (T == 1 && pos0 + 1 == cache.seq_len(seq, layer) &&
             attention_driver_applicable(cache, seq, layer))
      path = AttnPath::kDriver;
    else
      path = AttnPath::kCodes;
  }
  switch (path) {
    case AttnPath::kReference:
      attention_reference(cache, seq, layer, n_head, q, T, pos0, scale, out);
      break;
    case AttnPath::kTiled:
      attention_tiled(cache, seq, layer, n_head, q, T, pos0, scale, out);
      break;
    case AttnPath::kDriver:
      if (T != 1 || !attention_driver_applicable(cache, seq, layer))
        throw Error("attention: the driver path needs one query over codes-only segments");
      attention_driver(cache, seq, layer, n_head, q, pos0, scale, out);
      break;
    default:
      attention_codes(cache, seq, layer, n_head, q, T, pos0, scale, out);
  }
}

}  // namespace tq
