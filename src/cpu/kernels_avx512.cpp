// AVX-512 level (F, BW, VL, DQ + FMA, F16C, BMI2) of the CPU kernels: W = 16 floats per vector.
// GCC 12 warns about the deliberately undefined upper lanes inside its own intrinsics headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/bitpack.h"
#include "core/half.h"
#include "cpu/dispatch.h"

namespace tq::cpu {
namespace avx512_level {

constexpr Level kLevel = Level::kAvx512;
constexpr int W = 16;
using VF = __m512;
inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vset1(float a) { return _mm512_set1_ps(a); }
inline VF vloadf(const float* p) { return _mm512_loadu_ps(p); }
inline void vstoref(float* p, VF v) { _mm512_storeu_ps(p, v); }
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
inline VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
inline VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
inline float vhmax(VF a) { return _mm512_reduce_max_ps(a); }
inline float vhsum(VF a) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// e^x for x ≤ 0: 2^n · p(r), r = x − n·ln2, p of degree 6; scalef applies 2^n.
inline VF vexp(VF x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const VF n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VF r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  VF p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
inline float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline void store_half(uint8_t* p, float v) {
  const uint16_t h = _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(p, &h, 2);
}
inline VF vload_f16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline VF vload_i8(const uint8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline VF vload_nib(const uint8_t* p, int s) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m512i q =
      _mm512_and_si512(_mm512_srl_epi32(b, _mm_cvtsi32_si128(s)), _mm512_set1_epi32(15));
  return _mm512_cvtepi32_ps(_mm512_sub_epi32(q, _mm512_set1_epi32(8)));
}
// Code → value: one vpermps over 16 table entries (repeated for bits < 4, so bits above the
// code's own are ignored).
struct Lut {
  __m512 t;
  Lut(const float* table, int bits) {
    alignas(64) float a[16];
    const int m = (1 << bits) - 1;
    for (int i = 0; i < 16; ++i) a[i] = table[i & m];
    t = _mm512_load_ps(a);
  }
};
// Byte-shuffle pattern for 16 B-bit codes in a broadcast qword starting `off` bytes in: dword
// lane i gets the two bytes holding code i (bytes off + ⌊B·i/8⌋ and the next one).
template <int B>
inline __m512i code_shuffle(int off) {
  alignas(64) int8_t idx[64];
  for (int i = 0; i < 16; ++i) {
    const int b = off + (B * i) / 8;
    int8_t* d = idx + 4 * i;
    d[0] = int8_t(b);
    d[1] = int8_t(b + 1);
    d[2] = d[3] = int8_t(0x80);
  }
  return _mm512_load_si512(idx);
}
// p: the chunk's first code byte; avail: code bytes from p to the end of the row's codes;
// back: readable bytes before p in the row. 16 codes = 2B bytes: broadcast-load 8 bytes (ending
// at the chunk's end when fewer than 8 remain), one in-lane byte shuffle puts each code's two
// bytes in its dword, one variable shift aligns it, one vpermps looks it up (bits above the code
// only reach table entries that repeat the code's own).
template <int B>
inline VF vdecode(const Lut& l, const uint8_t* p, int avail, int back) {
  constexpr int NB = 2 * B;
  static const __m512i shuf0 = code_shuffle<B>(0), shuf1 = code_shuffle<B>(8 - NB);
  const __m512i sh =
      _mm512_setr_epi32(0, B % 8, (2 * B) % 8, (3 * B) % 8, (4 * B) % 8, (5 * B) % 8, (6 * B) % 8,
                        (7 * B) % 8, (8 * B) % 8, (9 * B) % 8, (10 * B) % 8, (11 * B) % 8,
                        (12 * B) % 8, (13 * B) % 8, (14 * B) % 8, (15 * B) % 8);
  uint64_t v;
  __m512i x;
  if (avail >= 8) {
    std::memcpy(&v, p, 8);
    x = _mm512_shuffle_epi8(_mm512_set1_epi64(int64_t(v)), shuf0);
  } else if (back >= 8 - NB) {
    std::memcpy(&v, p - (8 - NB), 8);
    x = _mm512_shuffle_epi8(_mm512_set1_epi64(int64_t(v)), shuf1);
  } else {
    v = 0;
    std::memcpy(&v, p, NB);
    x = _mm512_shuffle_epi8(_mm512_set1_epi64(int64_t(v)), shuf0);
  }
  return _mm512_permutexvar_ps(_mm512_srlv_epi32(x, sh), l.t);
}
// FWHT stages h = 1, 2, 4, 8 inside one vector: lane j gets partner j ^ h; low lanes a + b,
// high lanes a − b, computed as fma(x, ±1, partner) (exact: one rounding, like a ± b).
inline VF vfwht_inner(VF x) {
  const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
  const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
  const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  x = _mm512_fmadd_ps(x, s1, _mm512_permute_ps(x, 0xB1));
  x = _mm512_fmadd_ps(x, s2, _mm512_permute_ps(x, 0x4E));
  x = _mm512_fmadd_ps(x, s4, _mm512_shuffle_f32x4(x, x, 0xB1));
  x = _mm512_fmadd_ps(x, s8, _mm512_shuffle_f32x4(x, x, 0x4E));
  return x;
}
// Sums of four vectors: {Σa, Σb, Σc, Σd}.
inline void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  const __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 u = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))));
  const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(u),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}
inline double vnorm2(const float* x, int d) {
  __m512d a = _mm512_setzero_pd(), b = _mm512_setzero_pd();
  int j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    a = _mm512_fmadd_pd(lo, lo, a);
    b = _mm512_fmadd_pd(hi, hi, b);
  }
  double s = _mm512_reduce_add_pd(_mm512_add_pd(a, b));
  for (; j < d; ++j) s += double(x[j]) * x[j];
  return s;
}
inline void pack_codes(const uint8_t* idx, int d, int bits, uint8_t* out) {
  if (d % 8 || bits > 8) {
    pack_bits(idx, size_t(d), bits, out);
    return;
  }
  const uint64_t mask = 0x0101010101010101ull * ((1u << bits) - 1);
  for (int j = 0; j < d; j += 8) {
    uint64_t v;
    std::memcpy(&v, idx + j, 8);
    const uint64_t p = _pext_u64(v, mask);
    std::memcpy(out + (j / 8) * bits, &p, size_t(bits));
  }
}
inline void vquantize(const float* y, int d, const float* bnd, int nb, uint8_t* idx) {
  int j = 0;
  for (; j + 16 <= d; j += 16) {
    const __m512 v = _mm512_loadu_ps(y + j);
    __m512i k = _mm512_setzero_si512();
    for (int b = 0; b < nb; ++b) {
      const __mmask16 m = _mm512_cmp_ps_mask(_mm512_set1_ps(bnd[b]), v, _CMP_LT_OQ);
      k = _mm512_mask_add_epi32(k, m, k, _mm512_set1_epi32(1));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(idx + j), _mm512_cvtepi32_epi8(k));
  }
  for (; j < d; ++j) {
    int k = 0;
    while (k < nb && bnd[k] < y[j]) ++k;
    idx[j] = uint8_t(k);
  }
}

#define TQ_KERNEL_W1 0
void k_polar_decode_v(const uint8_t* codes, size_t n, size_t stride, int groups,
                      const PolarTables& tb, float* y);
#define TQ_POLAR_DECODE_FN k_polar_decode_v
void k_score_rows_fast(const CodeRows& r, size_t n, const float* q, int G, float* out, size_t ldo,
                       bool add);
void k_acc_rows_fast(const CodeRows& r, size_t n, const float* w, size_t ldw, int G, float* acc,
                     size_t lda);
#define TQ_SCORE_ROWS_FN k_score_rows_fast
#define TQ_ACC_ROWS_FN k_acc_rows_fast
#include "cpu/kernels_impl.h"

// ------------------------------------------------------------------ 8-bit fast-scan scores
// With AVX-512 VBMI + VNNI (Ice Lake, Zen 4 and later), code-table scores run on bytes: the
// query is quantized to int8 per head (scale max|q|/127) and the codebook to unsigned bytes
// (c ≈ cs·(u − 128), cs = max|c|/127); per 64 codes of a token one masked load, vpermb +
// vpmultishiftqb unpack them to bytes, a second vpermb looks the bytes up, and one vpdpbusd per
// query head multiplies-and-adds 64 byte pairs — 4× the work of a float FMA per instruction.
//   q·c ≈ qs·cs·(Σ q8_j·u_j − 128·Σ q8_j)
// This is an approximation of the float score (like FAISS fast-scan tables or ggml's q8 query):
// normalised error ≲ 1e-3 typical, 1e-2 worst (tests/test_cpu_kernels.cpp), well below the
// codes' own quantization error. Values (accumulate) stay in float.
#define TQ_VNNI __attribute__((target("avx512vbmi,avx512vnni")))
#define TQ_VNNI_LAMBDA __attribute__((target("avx512vbmi,avx512vnni")))

bool has_vnni_vbmi() { return cpu_has_vbmi_vnni(); }

// The codebook as unsigned bytes, c ≈ cs·(u − 128) with cs = max|c|/127: a 64-entry table for
// vpermb (which ignores index bits 6-7), repeated mod 2^B so that the bits above a code never
// need masking. Built with vector ops: it is rebuilt for every call (every 256-token step), and
// 64 scalar lrint calls cost ~5 % of a turbo3 step.
template <int B>
TQ_VNNI inline __m512i byte_lut(const float* table, float* cs_out) {
  constexpr int K = 1 << B;
  // lane i ← table[i mod K] (K ≤ 16)
  const __m512i idx = _mm512_and_si512(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(K - 1));
  const __m512 t = _mm512_permutexvar_ps(idx, _mm512_maskz_loadu_ps(__mmask16((1u << K) - 1), table));
  const float cmax = _mm512_reduce_max_ps(_mm512_abs_ps(t));
  const float cs = cmax > 0 ? cmax / 127.0f : 1.0f;
  *cs_out = cs;
  // round-to-nearest-even like lrint in the default rounding mode
  const __m512i u = _mm512_add_epi32(
      _mm512_cvtps_epi32(_mm512_div_ps(t, _mm512_set1_ps(cs))), _mm512_set1_epi32(128));
  return _mm512_broadcast_i32x4(_mm512_cvtepi32_epi8(u));  // 16 bytes repeated ×4
}

template <int B, int G>
TQ_VNNI void score_i8(const CodeRows& r, size_t n, const int8_t* qi, int dpad, const float* mul,
                      const float* corr, __m512i lut, float* out, size_t ldo, bool add) {
  const int d = r.dim, code_bytes = (d * B + 7) / 8, nch = dpad / 64;
  alignas(64) uint8_t pidx[64], pctl[64];
  for (int k = 0; k < 8; ++k)
    for (int i = 0; i < 8; ++i) {
      pidx[8 * k + i] = uint8_t(B * k + i);  // qword k ← code bytes B·k .. B·k+7 (codes 8k..)
      pctl[8 * k + i] = uint8_t(B * i);      // byte i ← bits B·i .. of that qword
    }
  const __m512i vidx = _mm512_load_si512(pidx), vctl = _mm512_load_si512(pctl);
  auto token_bytes = [&](const uint8_t* codes, int c) TQ_VNNI_LAMBDA {
    const int off = 8 * B * c, avail = code_bytes - off;
    const __mmask64 m = avail >= 64 ? ~__mmask64(0) : ((__mmask64(1) << avail) - 1);
    const __m512i x = _mm512_maskz_loadu_epi8(m, codes + off);
    return _mm512_permutexvar_epi8(
        _mm512_multishift_epi64_epi8(vctl, _mm512_permutexvar_epi8(vidx, x)), lut);
  };
  size_t t = 0;
  // Four tokens at a time: their 4 × G int32 accumulators are reduced together by one tree
  // (16 sums in one vector: lane 4·i + g = token t+i, head g).
  const __m512 corrv =
      _mm512_setr_ps(corr[0], corr[1 % G], corr[2 % G], corr[3 % G], corr[0], corr[1 % G],
                     corr[2 % G], corr[3 % G], corr[0], corr[1 % G], corr[2 % G], corr[3 % G],
                     corr[0], corr[1 % G], corr[2 % G], corr[3 % G]);
  const __m512 mulv = _mm512_setr_ps(mul[0], mul[1 % G], mul[2 % G], mul[3 % G], mul[0], mul[1 % G],
                                     mul[2 % G], mul[3 % G], mul[0], mul[1 % G], mul[2 % G],
                                     mul[3 % G], mul[0], mul[1 % G], mul[2 % G], mul[3 % G]);
  // Sixteen tokens at a time, as four quads, with hardly any horizontal sums: a quad's four byte
  // vectors are interleaved by two unpack levels, so that 128-bit lane L, dword i of vector e
  // holds dword 4L + e of token i; one vpdpbusd per (e, head) with a query vector whose lane L
  // repeats query dword 4L + e adds 4 coordinates of every token of the quad in every lane.
  // Lane L then holds the token's partial sum over its dwords 4L..4L+3 (mod 16); the four
  // lanes are summed once per 16 tokens by a 4 × 4 transpose of 128-bit lanes (6 shuffles).
  // (A full 16 × 16 dword transpose costs 64 shuffles per 64 codes instead of 32.)
  const int32_t* qd = reinterpret_cast<const int32_t*>(qi);
  alignas(64) int32_t qv[16 * 4 * G * 16];  // [c][e][g] → 16 dwords, nch ≤ 16
  for (int c = 0; c < nch; ++c)
    for (int e = 0; e < 4; ++e)
      for (int g = 0; g < G; ++g)
        for (int L = 0; L < 4; ++L)
          for (int i = 0; i < 4; ++i)
            qv[((c * 4 + e) * G + g) * 16 + 4 * L + i] = qd[(g * dpad + 64 * c) / 4 + 4 * L + e];
  for (; t + 16 <= n; t += 16) {
    __m512i acc[4][G];
    for (int k = 0; k < 4; ++k) {
      for (int g = 0; g < G; ++g) acc[k][g] = _mm512_setzero_si512();
      const uint8_t* row = r.base + (t + 4 * k) * r.stride + r.code_off;
      for (int c = 0; c < nch; ++c) {
        const __m512i b0 = token_bytes(row, c), b1 = token_bytes(row + r.stride, c);
        const __m512i b2 = token_bytes(row + 2 * r.stride, c),
                      b3 = token_bytes(row + 3 * r.stride, c);
        const __m512i t0 = _mm512_unpacklo_epi32(b0, b1), t1 = _mm512_unpackhi_epi32(b0, b1);
        const __m512i t2 = _mm512_unpacklo_epi32(b2, b3), t3 = _mm512_unpackhi_epi32(b2, b3);
        const __m512i ev[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2),
                               _mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)};
        for (int e = 0; e < 4; ++e)
          for (int g = 0; g < G; ++g)
            acc[k][g] = _mm512_dpbusd_epi32(
                acc[k][g], ev[e], _mm512_load_si512(qv + ((c * 4 + e) * G + g) * 16));
      }
    }
    alignas(64) float nr[16];
    for (int i = 0; i < 16; ++i)
      nr[i] = r.scale_mul * load_half(r.base + (t + i) * r.stride + r.scale_off);
    const __m512 nv = _mm512_load_ps(nr);
    for (int g = 0; g < G; ++g) {
      // lane k of the result = Σ_L lane L of acc[k][g]
      const __m512i s01 = _mm512_add_epi32(_mm512_shuffle_i32x4(acc[0][g], acc[1][g], 0x44),
                                           _mm512_shuffle_i32x4(acc[0][g], acc[1][g], 0xEE));
      const __m512i s23 = _mm512_add_epi32(_mm512_shuffle_i32x4(acc[2][g], acc[3][g], 0x44),
                                           _mm512_shuffle_i32x4(acc[2][g], acc[3][g], 0xEE));
      const __m512i tot = _mm512_add_epi32(_mm512_shuffle_i32x4(s01, s23, 0x88),
                                           _mm512_shuffle_i32x4(s01, s23, 0xDD));
      __m512 v = _mm512_mul_ps(
          _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(tot), _mm512_set1_ps(corr[g])),
                        _mm512_set1_ps(mul[g])),
          nv);
      float* o = out + g * ldo + t;
      if (add) v = _mm512_add_ps(v, _mm512_loadu_ps(o));
      _mm512_storeu_ps(o, v);
    }
  }
  for (; t + 4 <= n; t += 4) {
    __m512i a[4][4];
    for (int i = 0; i < 4; ++i)
      for (int g = 0; g < 4; ++g) a[i][g] = _mm512_setzero_si512();
    for (int c = 0; c < nch; ++c)
      for (int i = 0; i < 4; ++i) {
        const __m512i u = token_bytes(r.base + (t + i) * r.stride + r.code_off, c);
        for (int g = 0; g < G; ++g)
          a[i][g] = _mm512_dpbusd_epi32(a[i][g], u, _mm512_load_si512(qi + g * dpad + 64 * c));
      }
    // x[k] = a[k / 4][k % 4]; tree: pairs of dwords, pairs of qwords, then 128-bit lanes
    __m512i u1[8], v2[4];
    for (int p = 0; p < 8; ++p) {
      const __m512i x0 = a[(2 * p) / 4][(2 * p) % 4], x1 = a[(2 * p + 1) / 4][(2 * p + 1) % 4];
      u1[p] = _mm512_add_epi32(_mm512_unpacklo_epi32(x0, x1), _mm512_unpackhi_epi32(x0, x1));
    }
    for (int q = 0; q < 4; ++q)
      v2[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(u1[2 * q], u1[2 * q + 1]),
                               _mm512_unpackhi_epi64(u1[2 * q], u1[2 * q + 1]));
    const __m512i c01 = _mm512_add_epi32(_mm512_shuffle_i32x4(v2[0], v2[1], 0x88),
                                         _mm512_shuffle_i32x4(v2[0], v2[1], 0xDD));
    const __m512i c23 = _mm512_add_epi32(_mm512_shuffle_i32x4(v2[2], v2[3], 0x88),
                                         _mm512_shuffle_i32x4(v2[2], v2[3], 0xDD));
    const __m512i tot = _mm512_add_epi32(_mm512_shuffle_i32x4(c01, c23, 0x88),
                                         _mm512_shuffle_i32x4(c01, c23, 0xDD));
    alignas(64) float nr[16], res[16];
    for (int i = 0; i < 4; ++i) {
      const float nv = r.scale_mul * load_half(r.base + (t + i) * r.stride + r.scale_off);
      nr[4 * i] = nr[4 * i + 1] = nr[4 * i + 2] = nr[4 * i + 3] = nv;
    }
    _mm512_store_ps(
        res, _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(tot), corrv), mulv),
                           _mm512_load_ps(nr)));
    for (int i = 0; i < 4; ++i)
      for (int g = 0; g < G; ++g) {
        float& o = out[g * ldo + t + i];
        o = add ? o + res[4 * i + g] : res[4 * i + g];
      }
  }
  for (; t < n; ++t) {
    const uint8_t* row = r.base + t * r.stride;
    const uint8_t* codes = row + r.code_off;
    __m512i acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_si512();
    for (int c = 0; c < nch; ++c) {
      const __m512i u = token_bytes(codes, c);
      for (int g = 0; g < G; ++g)
        acc[g] = _mm512_dpbusd_epi32(acc[g], u, _mm512_load_si512(qi + g * dpad + 64 * c));
    }
    float s[4];
    if constexpr (G == 1) {
      s[0] = float(_mm512_reduce_add_epi32(acc[0]));
    } else {
      vhsum4(_mm512_cvtepi32_ps(acc[0]), _mm512_cvtepi32_ps(acc[1]),
             G > 2 ? _mm512_cvtepi32_ps(acc[2 % G]) : vzero(),
             G > 3 ? _mm512_cvtepi32_ps(acc[3 % G]) : vzero(), s);
    }
    const float nrm = r.scale_mul * load_half(row + r.scale_off);
    for (int g = 0; g < G; ++g) {
      const float v = nrm * mul[g] * (s[g] - corr[g]);
      float& o = out[g * ldo + t];
      o = add ? o + v : v;
    }
  }
}

template <int B>
TQ_VNNI void score_i8_any(const CodeRows& r, size_t n, const float* q, int G, float* out,
                          size_t ldo, bool add) {
  float cs;
  const __m512i lut = byte_lut<B>(r.table, &cs);
  const int d = r.dim, dpad = (d + 63) / 64 * 64;
  alignas(64) int8_t qi[4 * 1024];
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  for (int g0 = 0; g0 < G; g0 += 4) {
    const int gn = std::min(4, G - g0);
    float mul[4], corr[4];
    for (int g = 0; g < gn; ++g) {
      const float* qg = q + size_t(g0 + g) * d;
      int8_t* qd = qi + g * dpad;
      const int d16 = d / 16 * 16;
      __m512 vmx = _mm512_setzero_ps();
      for (int j = 0; j < d16; j += 16)
        vmx = _mm512_max_ps(vmx, _mm512_and_ps(_mm512_loadu_ps(qg + j), absmask));
      float qmax = _mm512_reduce_max_ps(vmx);
      for (int j = d16; j < d; ++j) qmax = std::max(qmax, std::fabs(qg[j]));
      const float qs = qmax > 0 ? qmax / 127.0f : 1.0f, inv = 1.0f / qs;
      __m512i vsum = _mm512_setzero_si512();
      for (int j = 0; j < d16; j += 16) {
        const __m512i v =
            _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(qg + j), _mm512_set1_ps(inv)));
        vsum = _mm512_add_epi32(vsum, v);
        _mm_store_si128(reinterpret_cast<__m128i*>(qd + j), _mm512_cvtepi32_epi8(v));
      }
      int sum = _mm512_reduce_add_epi32(vsum);
      for (int j = d16; j < d; ++j) sum += (qd[j] = int8_t(std::lrint(qg[j] * inv)));
      for (int j = d; j < dpad; ++j) qd[j] = 0;
      mul[g] = qs * cs;
      corr[g] = 128.0f * float(sum);
    }
    float* og = out + size_t(g0) * ldo;
    switch (gn) {
      case 1:
        score_i8<B, 1>(r, n, qi, dpad, mul, corr, lut, og, ldo, add);
        break;
      case 2:
        score_i8<B, 2>(r, n, qi, dpad, mul, corr, lut, og, ldo, add);
        break;
      case 3:
        score_i8<B, 3>(r, n, qi, dpad, mul, corr, lut, og, ldo, add);
        break;
      default:
        score_i8<B, 4>(r, n, qi, dpad, mul, corr, lut, og, ldo, add);
        break;
    }
  }
}

void k_score_rows_fast(const CodeRows& r, size_t n, const float* q, int G, float* out, size_t ldo,
                       bool add) {
  if (!int8_scores_enabled() || !has_vnni_vbmi() || r.dim > 1024)
    return k_score_rows(r, n, q, G, out, ldo, add);
  switch (r.bits) {
    case 1:
      return score_i8_any<1>(r, n, q, G, out, ldo, add);
    case 2:
      return score_i8_any<2>(r, n, q, G, out, ldo, add);
    case 3:
      return score_i8_any<3>(r, n, q, G, out, ldo, add);
    case 4:
      return score_i8_any<4>(r, n, q, G, out, ldo, add);
    default:
      return k_score_rows(r, n, q, G, out, ldo, add);
  }
}

// ------------------------------------------------------------------ PolarQuant decode
// One group of 16 coordinates = one vector, lane j = coordinate j: y_j = r·f4·f3·f2·f1 with
// f_ℓ the cos (or sin) of the level-ℓ angle of the node above j — cos/sin chosen by bit
// (ℓ−1) of j, the code by j >> ℓ. Each level is a per-lane variable shift of the group word
// and one table permute. Multiplied in the scalar reference's order (level 4 first): exact.
void k_polar_decode_v(const uint8_t* codes, size_t n, size_t stride, int groups,
                      const PolarTables& tb, float* y) {
  const size_t bytes = (size_t(groups) * 62 + 7) / 8;
  const __m512i j = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i one = _mm512_set1_epi32(1), three = _mm512_set1_epi32(3);
  const __m512i fifteen = _mm512_set1_epi32(15);
  // level 1: code 4·(j>>1) bits into w1 = bits >> 16; sin table (entries 16..31) for odd j
  const __m512i sh1 = _mm512_slli_epi32(_mm512_srli_epi32(j, 1), 2);
  const __m512i sel1 = _mm512_slli_epi32(_mm512_and_si512(j, one), 4);
  // levels 2..4 from w2 = bits >> 48: level 2 at 2·(j>>2), level 3 at 8 + 2·(j>>3), level 4 at
  // 12; table T23 = [cos l2 | sin l2 | cos l3 | sin l3], T4 = [cos l4 | sin l4 | unused]
  const __m512i sh2 = _mm512_slli_epi32(_mm512_srli_epi32(j, 2), 1);
  const __m512i sel2 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(j, 1), one), 2);
  const __m512i sh3 = _mm512_add_epi32(_mm512_slli_epi32(_mm512_srli_epi32(j, 3), 1),
                                       _mm512_set1_epi32(8));
  const __m512i sel3 = _mm512_or_si512(
      _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(j, 2), one), 2), _mm512_set1_epi32(8));
  const __m512i sel4 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(j, 3), one), 2);
  const __m512 t1c = _mm512_loadu_ps(tb.l1c), t1s = _mm512_loadu_ps(tb.l1s);
  alignas(64) float t23[16], t4[16] = {};
  for (int k = 0; k < 4; ++k) {
    t23[k] = tb.lc[0][k];
    t23[4 + k] = tb.ls[0][k];
    t23[8 + k] = tb.lc[1][k];
    t23[12 + k] = tb.ls[1][k];
    t4[k] = tb.lc[2][k];
    t4[4 + k] = tb.ls[2][k];
  }
  const __m512 v23 = _mm512_load_ps(t23), v4 = _mm512_load_ps(t4);
  for (size_t t = 0; t < n; ++t) {
    const uint8_t* blk = codes + t * stride;
    float* out = y + t * size_t(16 * groups);
    for (int g = 0; g < groups; ++g) {
      const size_t o = size_t(g) * 62, b0 = o / 8;
      const int sh = int(o % 8);  // even
      uint64_t lo;
      std::memcpy(&lo, blk + b0, 8);  // b0 + 8 ≤ bytes for every group
      const uint64_t hi = b0 + 8 < bytes ? blk[b0 + 8] : 0;
      const uint64_t bits = sh ? (lo >> sh) | (hi << (64 - sh)) : lo;
      const __m512i w1 = _mm512_set1_epi32(int(uint32_t(bits >> 16)));
      const __m512i w2 = _mm512_set1_epi32(int(uint32_t(bits >> 48)));
      const __m512i i1 = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(w1, sh1), fifteen), sel1);
      const __m512i i2 = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(w2, sh2), three), sel2);
      const __m512i i3 = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi32(w2, sh3), three), sel3);
      const __m512i i4 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w2, 12), three), sel4);
      const uint16_t h = uint16_t(bits & 0xFFFF);
      __m512 r = _mm512_set1_ps(_cvtsh_ss(h));
      r = _mm512_mul_ps(r, _mm512_permutexvar_ps(i4, v4));
      r = _mm512_mul_ps(r, _mm512_permutexvar_ps(i3, v23));
      r = _mm512_mul_ps(r, _mm512_permutexvar_ps(i2, v23));
      r = _mm512_mul_ps(r, _mm512_permutex2var_ps(t1c, i1, t1s));
      _mm512_storeu_ps(out + 16 * g, r);
    }
  }
}

}  // namespace avx512_level

const Kernels& kernels_avx512() { return avx512_level::kTable; }

}  // namespace tq::cpu

namespace tq::cpu::avx512_level {

// ------------------------------------------------------------------ 8-bit value accumulation
// Same idea for values: per call (≤ 128 tokens) each head's weights a_t = w_t·scale_t are
// quantized to int8 (scale max|a|/127), codes are looked up as unsigned bytes, four tokens'
// bytes are interleaved (two unpack levels) so that one vpdpbusd adds 4 tokens × 16 coordinates
// per head, into int32 accumulators flushed to the float accumulator once per call:
//   acc_j += as·cs·(Σ_t a8_t·u_tj − 128·Σ_t a8_t).
// A token's weight error is ≤ min(|a_t|, max|a|/254), so tokens with tiny weights do not
// accumulate error. Token counts that are not a multiple of 4 finish on the float kernel.
template <int B, int G>
TQ_VNNI void acc_i8(const CodeRows& r, size_t n4, const uint32_t* wq /*G × n4/4*/, const float* mul,
                    const float* corr, __m512i lut, float* acc, size_t lda) {
  const int d = r.dim, code_bytes = (d * B + 7) / 8, nch = (d + 63) / 64;
  alignas(64) uint8_t pidx[64], pctl[64];
  for (int k = 0; k < 8; ++k)
    for (int i = 0; i < 8; ++i) {
      pidx[8 * k + i] = uint8_t(B * k + i);
      pctl[8 * k + i] = uint8_t(B * i);
    }
  const __m512i vidx = _mm512_load_si512(pidx), vctl = _mm512_load_si512(pctl);
  for (int c = 0; c < nch; ++c) {
    const int off = 8 * B * c, avail = code_bytes - off;
    const __mmask64 m = avail >= 64 ? ~__mmask64(0) : ((__mmask64(1) << avail) - 1);
    const uint8_t* cb = r.base + r.code_off + off;
    const size_t stride = r.stride;
#define TQ_BYTES(t)                                                                          \
  _mm512_permutexvar_epi8(                                                                   \
      _mm512_multishift_epi64_epi8(                                                          \
          vctl, _mm512_permutexvar_epi8(vidx, _mm512_maskz_loadu_epi8(m, cb + (t)*stride))), \
      lut)
    __m512i a[G][4];
    for (int g = 0; g < G; ++g)
      for (int k = 0; k < 4; ++k) a[g][k] = _mm512_setzero_si512();
    for (size_t t = 0; t < n4; t += 4) {
      const __m512i A = TQ_BYTES(t), Bv = TQ_BYTES(t + 1), C = TQ_BYTES(t + 2), D = TQ_BYTES(t + 3);
      const __m512i ablo = _mm512_unpacklo_epi8(A, Bv), abhi = _mm512_unpackhi_epi8(A, Bv);
      const __m512i cdlo = _mm512_unpacklo_epi8(C, D), cdhi = _mm512_unpackhi_epi8(C, D);
      // Qk, 128-bit lane L, dword i = coordinate 64c + 16L + 4k + i, bytes = the 4 tokens
      const __m512i Q[4] = {_mm512_unpacklo_epi16(ablo, cdlo), _mm512_unpackhi_epi16(ablo, cdlo),
                            _mm512_unpacklo_epi16(abhi, cdhi), _mm512_unpackhi_epi16(abhi, cdhi)};
      for (int g = 0; g < G; ++g) {
        const __m512i wv = _mm512_set1_epi32(int(wq[g * (n4 / 4) + t / 4]));
        for (int k = 0; k < 4; ++k) a[g][k] = _mm512_dpbusd_epi32(a[g][k], Q[k], wv);
      }
    }
#undef TQ_BYTES
    // Flush: Qk lanes L → coordinates 16L + 4k + i; transpose the 4×4 grid of 128-bit lanes.
    for (int g = 0; g < G; ++g) {
      const __m512 s = _mm512_set1_ps(mul[g]), cc = _mm512_set1_ps(corr[g]);
      __m512 f[4];
      for (int k = 0; k < 4; ++k)
        f[k] = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(a[g][k]), cc), s);
      // lanes: f[k] = [L0k, L1k, L2k, L3k]; want out[L] = [L,0 | L,1 | L,2 | L,3]
      const __m512 t01lo = _mm512_shuffle_f32x4(f[0], f[1], 0x44);  // L0k0 L1k0 L0k1 L1k1
      const __m512 t01hi = _mm512_shuffle_f32x4(f[0], f[1], 0xEE);  // L2k0 L3k0 L2k1 L3k1
      const __m512 t23lo = _mm512_shuffle_f32x4(f[2], f[3], 0x44);
      const __m512 t23hi = _mm512_shuffle_f32x4(f[2], f[3], 0xEE);
      const __m512 o[4] = {_mm512_shuffle_f32x4(t01lo, t23lo, 0x88),   // L0: k0 k1 k2 k3
                           _mm512_shuffle_f32x4(t01lo, t23lo, 0xDD),   // L1
                           _mm512_shuffle_f32x4(t01hi, t23hi, 0x88),   // L2
                           _mm512_shuffle_f32x4(t01hi, t23hi, 0xDD)};  // L3
      float* ag = acc + size_t(g) * lda + 64 * c;
      for (int L = 0; L < 4; ++L) {
        const int j0 = 64 * c + 16 * L;
        if (j0 >= d) break;
        if (j0 + 16 <= d) {
          _mm512_storeu_ps(ag + 16 * L, _mm512_add_ps(_mm512_loadu_ps(ag + 16 * L), o[L]));
        } else {
          const __mmask16 mk = __mmask16((1u << (d - j0)) - 1);
          _mm512_mask_storeu_ps(ag + 16 * L, mk,
                                _mm512_add_ps(_mm512_maskz_loadu_ps(mk, ag + 16 * L), o[L]));
        }
      }
    }
  }
}

template <int B>
TQ_VNNI void acc_i8_any(const CodeRows& r, size_t n, const float* w, size_t ldw, int G, float* acc,
                        size_t lda) {
  float cs;
  const __m512i lut = byte_lut<B>(r.table, &cs);
  constexpr size_t kMax = 256;
  for (size_t t0 = 0; t0 < n; t0 += kMax) {
    const size_t m = std::min(kMax, n - t0), m4 = m / 4 * 4;
    alignas(64) float sc[kMax];
    for (size_t i = 0; i < m4; ++i) sc[i] = load_half(r.base + (t0 + i) * r.stride + r.scale_off);
    CodeRows rr = r;
    rr.base = r.base + t0 * r.stride;
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int g0 = 0; g0 < G; g0 += 4) {
      const int gn = std::min(4, G - g0);
      // wc[g·(m4/4) + i/4]: the int8 weights of tokens i..i+3, one per byte (token order).
      alignas(64) uint32_t wc[4 * kMax / 4 + 16];
      float mul[4], corr[4];
      for (int g = 0; g < gn; ++g) {
        const float* wg = w + size_t(g0 + g) * ldw + t0;
        alignas(64) float a[kMax];
        __m512 vmx = _mm512_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= m4; i += 16) {
          const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(wg + i), _mm512_load_ps(sc + i));
          _mm512_store_ps(a + i, v);
          vmx = _mm512_max_ps(vmx, _mm512_and_ps(v, absmask));
        }
        float amax = _mm512_reduce_max_ps(vmx);
        for (; i < m4; ++i) amax = std::max(amax, std::fabs(a[i] = wg[i] * sc[i]));
        const float as = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / as;
        uint32_t* wq = wc + g * (m4 / 4);
        __m512i vs = _mm512_setzero_si512();
        int sum = 0;
        i = 0;
        for (; i + 16 <= m4; i += 16) {
          const __m512i v =
              _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(a + i), _mm512_set1_ps(inv)));
          vs = _mm512_add_epi32(vs, v);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(wq + i / 4), _mm512_cvtepi32_epi8(v));
        }
        sum += _mm512_reduce_add_epi32(vs);
        for (; i < m4; i += 4) {
          uint32_t pk = 0;
          for (int u = 0; u < 4; ++u) {
            const int v = int(std::lrint(a[i + u] * inv));
            sum += v;
            pk |= uint32_t(uint8_t(int8_t(v))) << (8 * u);
          }
          wq[i / 4] = pk;
        }
        mul[g] = as * cs * r.scale_mul;
        corr[g] = 128.0f * float(sum);
      }
      float* ag = acc + size_t(g0) * lda;
      switch (gn) {
        case 1:
          acc_i8<B, 1>(rr, m4, wc, mul, corr, lut, ag, lda);
          break;
        case 2:
          acc_i8<B, 2>(rr, m4, wc, mul, corr, lut, ag, lda);
          break;
        case 3:
          acc_i8<B, 3>(rr, m4, wc, mul, corr, lut, ag, lda);
          break;
        default:
          acc_i8<B, 4>(rr, m4, wc, mul, corr, lut, ag, lda);
          break;
      }
    }
    if (m4 < m) {  // leftover tokens on the float kernel
      CodeRows rt = r;
      rt.base = r.base + (t0 + m4) * r.stride;
      k_acc_rows(rt, m - m4, w + t0 + m4, ldw, G, acc, lda);
    }
  }
}

void k_acc_rows_fast(const CodeRows& r, size_t n, const float* w, size_t ldw, int G, float* acc,
                     size_t lda) {
  if (!int8_scores_enabled() || !has_vnni_vbmi() || n < 4)
    return k_acc_rows(r, n, w, ldw, G, acc, lda);
  switch (r.bits) {
    case 1:
      return acc_i8_any<1>(r, n, w, ldw, G, acc, lda);
    case 2:
      return acc_i8_any<2>(r, n, w, ldw, G, acc, lda);
    case 3:
      return acc_i8_any<3>(r, n, w, ldw, G, acc, lda);
    case 4:
      return acc_i8_any<4>(r, n, w, ldw, G, acc, lda);
    default:
      return k_acc_rows(r, n, w, ldw, G, acc, lda);
  }
}

}  // namespace tq::cpu::avx512_level
