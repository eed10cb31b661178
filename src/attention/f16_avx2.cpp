// AVX2/F16C/FMA kernels for the f16 parts of the cache (compiled with those flags only; reached
// through attention.cpp when the active SIMD level is avx2 or above). Scalar reference: the table loops in
// attention.cpp; tests/test_kv_cache.cpp compares both paths.
#include <immintrin.h>

#include <cstdint>

namespace tq::avx2 {

// Σ_j q[j]·h[j], h in f16; n a multiple of 8.
float dot_f16(const float* q, const uint16_t* h, int n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j)));
    const __m256 x1 =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j + 8)));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), x0, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), x1, a1);
  }
  for (; j < n; j += 8) {
    const __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j)));
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), x0, a0);
  }
  a0 = _mm256_add_ps(a0, a1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// acc[j] += w·h[j]; n a multiple of 8.
void axpy_f16(float w, const uint16_t* h, float* acc, int n) {
  const __m256 vw = _mm256_set1_ps(w);
  for (int j = 0; j < n; j += 8) {
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j)));
    _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(vw, x, _mm256_loadu_ps(acc + j)));
  }
}

// x[j] = h[j] as f32; n a multiple of 8.
void f16_to_f32(const uint16_t* h, float* x, size_t n) {
  for (size_t j = 0; j < n; j += 8)
    _mm256_storeu_ps(x + j,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j))));
}

}  // namespace tq::avx2
