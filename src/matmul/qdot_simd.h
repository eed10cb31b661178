// turboquant — the SIMD tile kernels of the quantized products (qdot.h), written once on
// 256-bit vectors and compiled twice: qdot_avx2.cpp (AVX2: maddubs + madd) and qdot_avx512.cpp
// (AVX-512 VL + VNNI: vpdpbusd / vpdpwssd on the same vectors). Include inside a namespace with
// TQ_MM_VNNI defined to 0 or 1.
//
// Each kernel unpacks one weight block into unsigned bytes (nibbles plus high bits), then for up
// to four activation rows multiplies them with the int8 activations: Σ u8·s8 in int32 (exact; a
// pair of products never exceeds 2·128·127 < 2^15, so maddubs cannot saturate), the sub-block
// scales applied as int16 multipliers of the pair sums, and one float multiply-add per block and
// row with d_w·d_a. Q8_0's signed weights use |w| with the activations' signs moved by w.
#include <immintrin.h>

#include <cstring>

namespace {

using tq::mm::BlockQ8;
using tq::mm::BlockQ8K;

inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline __m256i loadu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// acc + Σ over groups of 4 bytes of u·s (u unsigned, s signed).
inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if TQ_MM_VNNI
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s),
                                                 _mm256_set1_epi16(1)));
#endif
}

// acc + Σ over pairs of bytes of (u·s pair sum) · scale (int16 per pair).
inline __m256i dot_u8s8_scaled(__m256i acc, __m256i u, __m256i s, __m256i scale16) {
  const __m256i p = _mm256_maddubs_epi16(u, s);
#if TQ_MM_VNNI
  return _mm256_dpwssd_epi32(acc, p, scale16);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale16));
#endif
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// Byte j = 0x10 where bit j of x is set (the 5th bit of Q5_0/Q5_1 value j).
inline __m256i high_bits_32(uint32_t x) {
  const __m256i shuf = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202,
                                          0x0303030303030303);
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(x)), shuf);
  v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

// --- the block kernels: acc[c] / corr[c] += block b of the weight row · activation row c ------

struct Q8_0K {
  using Act = BlockQ8;
  static constexpr int kElems = 32, kBytes = 34;
  template <int NC>
  static void block(const uint8_t* wb, const Act* const* a, int64_t b, __m256* acc, float*) {
    const float d = f16_at(wb);
    const __m256i q = loadu(wb + 2);
    const __m256i u = _mm256_abs_epi8(q);  // |−128| = 128 as an unsigned byte
    for (int c = 0; c < NC; ++c) {
      const BlockQ8& x = a[c][b];
      const __m256i s = _mm256_sign_epi8(loadu(x.qs), q);
      const __m256i i = dot_u8s8(_mm256_setzero_si256(), u, s);
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(d * x.d), acc[c]);
    }
  }
};

// Q4_0 (off 8), Q4_1 (min), Q5_0 (off 16, high bits), Q5_1 (min, high bits).
template <int kBytes_, int kOff, bool kMin, bool kHigh>
struct NibbleK {
  using Act = BlockQ8;
  static constexpr int kElems = 32, kBytes = kBytes_;
  template <int NC>
  static void block(const uint8_t* wb, const Act* const* a, int64_t b, __m256* acc,
                    float* corr) {
    const float d = f16_at(wb), m = kMin ? f16_at(wb + 2) : 0.f;
    const uint8_t* p = wb + (kMin ? 4 : 2);
    uint32_t qh = 0;
    if (kHigh) {
      std::memcpy(&qh, p, 4);
      p += 4;
    }
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t),
                                 _mm256_set1_epi8(0x0F));
    if (kHigh) q = _mm256_or_si256(q, high_bits_32(qh));
    const float off = m - float(kOff) * d;
    for (int c = 0; c < NC; ++c) {
      const BlockQ8& x = a[c][b];
      const __m256i i = dot_u8s8(_mm256_setzero_si256(), q, loadu(x.qs));
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(d * x.d), acc[c]);
      corr[c] += off * x.d * float(x.sum);
    }
  }
};

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins (layout: dequant.cpp).
template <bool kFive>
struct QK45K {
  using Act = BlockQ8K;
  static constexpr int kElems = 256, kBytes = kFive ? 176 : 144;
  template <int NC>
  static void block(const uint8_t* wb, const Act* const* a, int64_t b, __m256* acc, float*) {
    const float d = f16_at(wb), dmin = f16_at(wb + 2);
    // Scales: bytes 0..3 of `sc`, mins: bytes 0..3 of `mn`, then 4..7 from the third word.
    uint32_t w[3];
    std::memcpy(w, wb + 4, 12);
    const uint32_t sc_w[2] = {w[0] & 0x3F3F3F3Fu,
                              (w[2] & 0x0F0F0F0Fu) | (((w[0] >> 6) & 0x03030303u) << 4)};
    const uint32_t mn_w[2] = {w[1] & 0x3F3F3F3Fu,
                              ((w[2] >> 4) & 0x0F0F0F0Fu) | (((w[1] >> 6) & 0x03030303u) << 4)};
    uint8_t sc[8];
    std::memcpy(sc, sc_w, 8);
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn_w)));
    const __m256i mins = _mm256_set_m128i(_mm_unpackhi_epi16(mn16, mn16),
                                          _mm_unpacklo_epi16(mn16, mn16));
    const uint8_t* qs = wb + (kFive ? 48 : 16);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i qhv = _mm256_setzero_si256();
    if (kFive) qhv = loadu(wb + 16);
    __m256i isum[NC];
    for (int c = 0; c < NC; ++c) isum[c] = _mm256_setzero_si256();
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
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * ch]), s_hi = _mm256_set1_epi16(sc[2 * ch + 1]);
      for (int c = 0; c < NC; ++c) {
        const int8_t* xq = a[c][b].qs + 64 * ch;
        isum[c] = dot_u8s8_scaled(isum[c], lo, loadu(xq), s_lo);
        isum[c] = dot_u8s8_scaled(isum[c], hi, loadu(xq + 32), s_hi);
      }
    }
    for (int c = 0; c < NC; ++c) {
      const BlockQ8K& x = a[c][b];
      const __m256i ms = _mm256_madd_epi16(mins, loadu(x.bsums));
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), _mm256_set1_ps(d * x.d), acc[c]);
      acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_set1_ps(dmin * x.d), acc[c]);
    }
  }
};

// Q6_K: 16 sub-blocks of 16 with int8 scales, q − 32 (layout: dequant.cpp).
struct Q6K {
  using Act = BlockQ8K;
  static constexpr int kElems = 256, kBytes = 210;
  template <int NC>
  static void block(const uint8_t* wb, const Act* const* a, int64_t b, __m256* acc, float*) {
    const int8_t* scales = reinterpret_cast<const int8_t*>(wb + 192);
    const float d = f16_at(wb + 208);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    __m256i isum[NC];
    for (int c = 0; c < NC; ++c) isum[c] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = loadu(wb + 64 * h), ql1 = loadu(wb + 64 * h + 32);
      const __m256i qh = loadu(wb + 128 + 32 * h);
      __m256i q[4];
      q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                             _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
      q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
      q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
      q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                             _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
      for (int k = 0; k < 4; ++k) {
        const int s = 8 * h + 2 * k;  // values 128h + 32k .. +31: sub-blocks s, s + 1
        const __m256i sv = _mm256_set_m128i(_mm_set1_epi16(scales[s + 1]),
                                            _mm_set1_epi16(scales[s]));
        for (int c = 0; c < NC; ++c)
          isum[c] = dot_u8s8_scaled(isum[c], q[k], loadu(a[c][b].qs + 128 * h + 32 * k), sv);
      }
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
    for (int c = 0; c < NC; ++c) {
      const BlockQ8K& x = a[c][b];
      const __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(sc16, loadu(x.bsums)), 5);
      acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(isum[c], off)),
                               _mm256_set1_ps(d * x.d), acc[c]);
    }
  }
};

// NC activation rows against nr weight rows of a block type.
template <class T, int NC>
void rows_cols(const uint8_t* w, size_t row_bytes, int nr, const uint8_t* act, size_t stride,
               int64_t cols, float* out, size_t ldo, bool add) {
  using Act = typename T::Act;
  const Act* a[NC];
  for (int c = 0; c < NC; ++c) a[c] = reinterpret_cast<const Act*>(act + size_t(c) * stride);
  const int64_t nb = cols / T::kElems;
  for (int r = 0; r < nr; ++r) {
    const uint8_t* wr = w + size_t(r) * row_bytes;
    __m256 acc[NC];
    float corr[NC];
    for (int c = 0; c < NC; ++c) {
      acc[c] = _mm256_setzero_ps();
      corr[c] = 0.f;
    }
    for (int64_t b = 0; b < nb; ++b) T::template block<NC>(wr + size_t(b) * T::kBytes, a, b, acc, corr);
    for (int c = 0; c < NC; ++c) {
      const float v = hsum(acc[c]) + corr[c];
      float& o = out[size_t(c) * ldo + r];
      o = add ? o + v : v;
    }
  }
}

// Float weights: 8 values per step, the rest scalar.
struct F32L {
  static constexpr size_t kSize = 4;
  static __m256 load8(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
  static float load1(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
};
struct F16L {
  static constexpr size_t kSize = 2;
  static __m256 load8(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float load1(const uint8_t* p) { return f16_at(p); }
};
struct BF16L {
  static constexpr size_t kSize = 2;
  static __m256 load8(const uint8_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static float load1(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

template <class L, int NC>
void rows_cols_float(const uint8_t* w, size_t row_bytes, int nr, const uint8_t* act,
                     size_t stride, int64_t cols, float* out, size_t ldo, bool add) {
  const float* x[NC];
  for (int c = 0; c < NC; ++c) x[c] = reinterpret_cast<const float*>(act + size_t(c) * stride);
  const int64_t n8 = cols / 8 * 8;
  for (int r = 0; r < nr; ++r) {
    const uint8_t* wr = w + size_t(r) * row_bytes;
    __m256 acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n8; j += 8) {
      const __m256 wv = L::load8(wr + size_t(j) * L::kSize);
      for (int c = 0; c < NC; ++c) acc[c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[c] + j), acc[c]);
    }
    for (int c = 0; c < NC; ++c) {
      float v = hsum(acc[c]);
      for (int64_t j = n8; j < cols; ++j) v += L::load1(wr + size_t(j) * L::kSize) * x[c][j];
      float& o = out[size_t(c) * ldo + r];
      o = add ? o + v : v;
    }
  }
}

using RowsCols = void (*)(const uint8_t*, size_t, int, const uint8_t*, size_t, int64_t, float*,
                          size_t, bool);

// Groups of four activation rows (the weight block is unpacked once per group), then the rest.
template <RowsCols k4, RowsCols k3, RowsCols k2, RowsCols k1>
void tile_groups(const uint8_t* w, size_t row_bytes, int nr, const uint8_t* act, size_t stride,
                 int nc, int64_t cols, float* out, size_t ldo, bool add) {
  int c = 0;
  for (; c + 4 <= nc; c += 4)
    k4(w, row_bytes, nr, act + size_t(c) * stride, stride, cols, out + size_t(c) * ldo, ldo, add);
  const uint8_t* a = act + size_t(c) * stride;
  float* o = out + size_t(c) * ldo;
  switch (nc - c) {
    case 3: k3(w, row_bytes, nr, a, stride, cols, o, ldo, add); break;
    case 2: k2(w, row_bytes, nr, a, stride, cols, o, ldo, add); break;
    case 1: k1(w, row_bytes, nr, a, stride, cols, o, ldo, add); break;
    default: break;
  }
}

template <class T>
constexpr tq::mm::TileFn block_tile =
    tile_groups<rows_cols<T, 4>, rows_cols<T, 3>, rows_cols<T, 2>, rows_cols<T, 1>>;
template <class L>
constexpr tq::mm::TileFn float_tile =
    tile_groups<rows_cols_float<L, 4>, rows_cols_float<L, 3>, rows_cols_float<L, 2>,
                rows_cols_float<L, 1>>;

tq::mm::TileFn simd_tile(tq::GgmlType t) {
  using tq::GgmlType;
  switch (t) {
    case GgmlType::F32: return float_tile<F32L>;
    case GgmlType::F16: return float_tile<F16L>;
    case GgmlType::BF16: return float_tile<BF16L>;
    case GgmlType::Q4_0: return block_tile<NibbleK<18, 8, false, false>>;
    case GgmlType::Q4_1: return block_tile<NibbleK<20, 0, true, false>>;
    case GgmlType::Q5_0: return block_tile<NibbleK<22, 16, false, true>>;
    case GgmlType::Q5_1: return block_tile<NibbleK<24, 0, true, true>>;
    case GgmlType::Q8_0: return block_tile<Q8_0K>;
    case GgmlType::Q4_K: return block_tile<QK45K<false>>;
    case GgmlType::Q5_K: return block_tile<QK45K<true>>;
    case GgmlType::Q6_K: return block_tile<Q6K>;
    default: return nullptr;
  }
}

// --- activation quantization (same arithmetic as quantize_act_ref, so the same bytes) ----------

float amax_of(const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 values × id → 32 int8 at q; returns the int32 sums of the two halves of 16.
inline void quant32(const float* x, __m256 id, int8_t* q, int* s_lo, int* s_hi) {
  const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
  __m256i v[4];
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id));
    v[k] = _mm256_max_epi32(nlim, _mm256_min_epi32(lim, v[k]));
  }
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]),
                                       _mm256_packs_epi32(v[2], v[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  *s_lo = hsum_i32(_mm256_add_epi32(v[0], v[1]));
  *s_hi = hsum_i32(_mm256_add_epi32(v[2], v[3]));
}

void simd_quantize(tq::GgmlType t, const float* x, int64_t cols, uint8_t* out) {
  using tq::mm::ActKind;
  switch (tq::mm::act_kind(t)) {
    case ActKind::kF32: std::memcpy(out, x, size_t(cols) * 4); return;
    case ActKind::kQ8: {
      auto* b = reinterpret_cast<BlockQ8*>(out);
      for (int64_t i = 0; i < cols / 32; ++i) {
        const float amax = amax_of(x + 32 * i, 32);
        const float id = amax > 0.f ? 127.f / amax : 0.f;
        const float d = tq::mm::act_scale(amax, id, ActKind::kQ8);
        int lo, hi;
        quant32(x + 32 * i, _mm256_set1_ps(id), b[i].qs, &lo, &hi);
        b[i].d = d;
        b[i].sum = lo + hi;
      }
      return;
    }
    case ActKind::kQ8K: {
      auto* b = reinterpret_cast<BlockQ8K*>(out);
      for (int64_t i = 0; i < cols / 256; ++i) {
        std::memset(b[i].pad, 0, sizeof b[i].pad);
        const float* xb = x + 256 * i;
        const float amax = amax_of(xb, 256);
        const float id = amax > 0.f ? 127.f / amax : 0.f;
        const float d = tq::mm::act_scale(amax, id, ActKind::kQ8K);
        for (int g = 0; g < 8; ++g) {
          int lo, hi;
          quant32(xb + 32 * g, _mm256_set1_ps(id), b[i].qs + 32 * g, &lo, &hi);
          b[i].bsums[2 * g] = int16_t(lo);
          b[i].bsums[2 * g + 1] = int16_t(hi);
        }
        b[i].d = d;
      }
      return;
    }
  }
}

}  // namespace
