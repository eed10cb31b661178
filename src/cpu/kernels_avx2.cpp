// AVX2 level (+FMA, F16C, BMI2) of the CPU kernels: W = 8 floats per vector.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/bitpack.h"
#include "core/half.h"
#include "cpu/dispatch.h"

namespace tq::cpu {
namespace avx2_level {

constexpr Level kLevel = Level::kAvx2;
constexpr int W = 8;
using VF = __m256;
inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vset1(float a) { return _mm256_set1_ps(a); }
inline VF vloadf(const float* p) { return _mm256_loadu_ps(p); }
inline void vstoref(float* p, VF v) { _mm256_storeu_ps(p, v); }
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
inline VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
inline VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
inline float vhmax(VF a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float vhsum(VF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// e^x for x ≤ 0: 2^n · p(r), r = x − n·ln2 ∈ [−ln2/2, ln2/2], p of degree 6 (rel. err ~2e-7).
inline VF vexp(VF x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const VF n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VF r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  VF p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
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
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline VF vload_i8(const uint8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline VF vload_nib(const uint8_t* p, int s) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i q =
      _mm256_and_si256(_mm256_srl_epi32(b, _mm_cvtsi32_si128(s)), _mm256_set1_epi32(15));
  return _mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(8)));
}
// Code → value: vpermps over 8 table entries (entries repeated for bits < 3, so bits above the
// code's own are ignored); 4-bit codes select between two such tables by bit 3.
struct Lut {
  __m256 lo, hi;
  Lut(const float* table, int bits) {
    alignas(32) float a[8], b[8];
    const int m = (1 << bits) - 1;
    for (int i = 0; i < 8; ++i) {
      a[i] = table[i & m];
      b[i] = bits >= 4 ? table[(8 + i) & m] : a[i];
    }
    lo = _mm256_load_ps(a);
    hi = _mm256_load_ps(b);
  }
};
// p: the chunk's first code byte; avail / back: readable code bytes from p on / before p.
template <int B>
inline uint32_t load_chunk_bits(const uint8_t* p, int avail, int back) {
  uint32_t v;
  if (avail >= 4) {
    std::memcpy(&v, p, 4);
  } else if (back >= 4 - B) {
    std::memcpy(&v, p - (4 - B), 4);
    v >>= 8 * (4 - B);
  } else {
    v = 0;
    std::memcpy(&v, p, B);
  }
  return v;
}
template <int B>
inline VF vdecode(const Lut& l, const uint8_t* p, int avail, int back) {
  const uint32_t v = load_chunk_bits<B>(p, avail, back);  // 8 codes = B bytes
  const __m256i sh = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
  const __m256i x = _mm256_srlv_epi32(_mm256_set1_epi32(int(v)), sh);
  if constexpr (B < 4) {
    return _mm256_permutevar8x32_ps(l.lo, x);
  } else {
    const VF a = _mm256_permutevar8x32_ps(l.lo, x), b = _mm256_permutevar8x32_ps(l.hi, x);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(x, 28)));
  }
}
// FWHT stages h = 1, 2, 4 inside one vector (see the AVX-512 version).
inline VF vfwht_inner(VF x) {
  const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
  const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
  const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  x = _mm256_fmadd_ps(x, s1, _mm256_permute_ps(x, 0xB1));
  x = _mm256_fmadd_ps(x, s2, _mm256_permute_ps(x, 0x4E));
  x = _mm256_fmadd_ps(x, s4, _mm256_permute2f128_ps(x, x, 0x01));
  return x;
}
inline void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
}
inline double vnorm2(const float* x, int d) {
  __m256d a = _mm256_setzero_pd(), b = _mm256_setzero_pd();
  int j = 0;
  for (; j + 8 <= d; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    a = _mm256_fmadd_pd(lo, lo, a);
    b = _mm256_fmadd_pd(hi, hi, b);
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(a, b));
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; j < d; ++j) s += double(x[j]) * x[j];
  return s;
}
// 8 one-byte codes → `bits` bytes with one pext.
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
  for (; j + 8 <= d; j += 8) {
    const __m256 v = _mm256_loadu_ps(y + j);
    __m256i k = _mm256_setzero_si256();
    for (int b = 0; b < nb; ++b)  // k −= (bnd[b] < y) as −1 masks
      k = _mm256_sub_epi32(
          k, _mm256_castps_si256(_mm256_cmp_ps(_mm256_set1_ps(bnd[b]), v, _CMP_LT_OQ)));
    alignas(32) int32_t t[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), k);
    for (int i = 0; i < 8; ++i) idx[j + i] = uint8_t(t[i]);
  }
  for (; j < d; ++j) {
    int k = 0;
    while (k < nb && bnd[k] < y[j]) ++k;
    idx[j] = uint8_t(k);
  }
}

#define TQ_KERNEL_W1 0
#include "cpu/kernels_impl.h"

}  // namespace avx2_level

const Kernels& kernels_avx2() { return avx2_level::kTable; }

}  // namespace tq::cpu
