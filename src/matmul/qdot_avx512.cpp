// turboquant — AVX-512 VNNI kernels of the quantized products (qdot.h). The 256-bit kernels of
// qdot_simd.h with vpdpbusd / vpdpwssd (AVX-512 VL + VNNI), and 512-bit kernels for the K types
// of the real models (Q4_K, Q5_K, Q6_K: Qwen2.5 and Gemma 3 Q4_K_M), where prefill is
// compute-bound: one 512-bit maddubs + vpdpwssd per 64 weights and activation row (half the
// instructions of the 256-bit kernels; on this session's AMD EPYC (Zen 4, which executes 512-bit
// operations as two 256-bit halves) bench_matmul measured them level with the 256-bit ones:
// Q4_K prefill-64 57 vs 64 GMAC/s CPU time on a loaded machine, decode 18.5 vs 16.1 GB/s).
// Reached only when the CPU has AVX-512 VNNI (avx512_vnni_available()).
#include <immintrin.h>

#include "matmul/qdot.h"

#define TQ_MM_VNNI 1
#include "matmul/qdot_simd.h"

namespace {

inline __m512i loadu512(const void* p) { return _mm512_loadu_si512(p); }

inline __m512i dot512_scaled(__m512i acc, __m512i u, __m512i s, __m512i scale16) {
  return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(u, s), scale16);
}

inline __m256i fold(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// Word index vectors for vpermw: 16 words of index a, then 16 of index b.
inline __m512i two_index(int a, int b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(short(a))),
                            _mm256_set1_epi16(short(b)), 1);
}
// 8 words each of indices a, a+1, a+2, a+3.
inline __m512i four_index(int a) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16(short(a + 1)), _mm_set1_epi16(short(a)))),
      _mm256_set_m128i(_mm_set1_epi16(short(a + 3)), _mm_set1_epi16(short(a + 2))), 1);
}

// Q4_K / Q5_K: chunk ch's 32 bytes give values 64ch..64ch+63 (low nibbles, then high) in one
// 512-bit register, matching 64 contiguous activation bytes; sub-blocks 2ch, 2ch+1.
template <bool kFive>
struct QK45K512 {
  using Act = BlockQ8K;
  static constexpr int kElems = 256, kBytes = kFive ? 176 : 144;
  template <int NC>
  static void block(const uint8_t* wb, const Act* const* a, int64_t b, __m256* acc, float*) {
    const float d = f16_at(wb), dmin = f16_at(wb + 2);
    uint32_t w[3];
    std::memcpy(w, wb + 4, 12);
    const uint32_t sc_w[2] = {w[0] & 0x3F3F3F3Fu,
                              (w[2] & 0x0F0F0F0Fu) | (((w[0] >> 6) & 0x03030303u) << 4)};
    const uint32_t mn_w[2] = {w[1] & 0x3F3F3F3Fu,
                              ((w[2] >> 4) & 0x0F0F0F0Fu) | (((w[1] >> 6) & 0x03030303u) << 4)};
    const __m512i sc16 = _mm512_castsi128_si512(
        _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc_w))));
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn_w)));
    const __m256i mins = _mm256_set_m128i(_mm_unpackhi_epi16(mn16, mn16),
                                          _mm_unpacklo_epi16(mn16, mn16));
    const uint8_t* qs = wb + (kFive ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i qhv = _mm256_setzero_si256();
    if (kFive) qhv = loadu(wb + 16);
    __m512i isum[NC];
    for (int c = 0; c < NC; ++c) isum[c] = _mm512_setzero_si512();
    for (int ch = 0; ch < 4; ++ch) {
      const __m256i v = loadu(qs + 32 * ch);
      __m256i lo = _mm256_and_si256(v, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      if (kFive) {
        const __m256i one = _mm256_set1_epi8(1);
        const __m128i sl = _mm_cvtsi32_si128(2 * ch), sh = _mm_cvtsi32_si128(2 * ch + 1);
        lo = _mm256_or_si256(
            lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qhv, sl), one), 4));
        hi = _mm256_or_si256(
            hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qhv, sh), one), 4));
      }
      const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      const __m512i sv = _mm512_permutexvar_epi16(two_index(2 * ch, 2 * ch + 1), sc16);
      for (int c = 0; c < NC; ++c)
        isum[c] = dot512_scaled(isum[c], q, loadu512(a[c][b].qs + 64 * ch), sv);
    }
    for (int c = 0; c < NC; ++c) {
      const BlockQ8K& x = a[c][b];
      const __m256i ms = _mm256_madd_epi16(mins, loadu(x.bsums));
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold(isum[c])), _mm256_set1_ps(d * x.d), acc[c]);
      acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_set1_ps(dmin * x.d), acc[c]);
    }
  }
};

// Q6_K: per half h, the 64 ql bytes give values 128h..128h+63 (low nibbles) and +64..+127 (high
// nibbles) in order; the 32 qh bytes, broadcast to both 256-bit halves and shifted per half
// (vpsrlvw), give their top two bits. Sub-blocks of 16: four per register.
struct Q6K512 {
  using Act = BlockQ8K;
  static constexpr int kElems = 256, kBytes = 210;
  template <int NC>
  static void block(const uint8_t* wb, const Act* const* a, int64_t b, __m256* acc, float*) {
    const int8_t* scales = reinterpret_cast<const int8_t*>(wb + 192);
    const float d = f16_at(wb + 208);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales));
    const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m512i sc512 = _mm512_castsi256_si512(sc16);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
    const __m512i sh_a = two_index(0, 2), sh_b = two_index(4, 6);
    __m512i isum[NC];
    for (int c = 0; c < NC; ++c) isum[c] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = loadu512(wb + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(loadu(wb + 128 + 32 * h));
      const __m512i qa = _mm512_or_si512(
          _mm512_and_si512(ql, m4),
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_a), m2), 4));
      const __m512i qb = _mm512_or_si512(
          _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_b), m2), 4));
      const __m512i sa = _mm512_permutexvar_epi16(four_index(8 * h), sc512);
      const __m512i sb = _mm512_permutexvar_epi16(four_index(8 * h + 4), sc512);
      for (int c = 0; c < NC; ++c) {
        const int8_t* xq = a[c][b].qs + 128 * h;
        isum[c] = dot512_scaled(isum[c], qa, loadu512(xq), sa);
        isum[c] = dot512_scaled(isum[c], qb, loadu512(xq + 64), sb);
      }
    }
    for (int c = 0; c < NC; ++c) {
      const BlockQ8K& x = a[c][b];
      const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, loadu(x.bsums)), 5);
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(fold(isum[c]), off)),
                               _mm256_set1_ps(d * x.d), acc[c]);
    }
  }
};

tq::mm::TileFn avx512_tile(tq::GgmlType t) {
  switch (t) {
    case tq::GgmlType::Q4_K: return block_tile<QK45K512<false>>;
    case tq::GgmlType::Q5_K: return block_tile<QK45K512<true>>;
    case tq::GgmlType::Q6_K: return block_tile<Q6K512>;
    default: return simd_tile(t);
  }
}

}  // namespace

namespace tq::mm {
const QKernels& qkernels_avx512() {
  static const QKernels k{avx512_tile, simd_quantize};
  return k;
}
}  // namespace tq::mm
