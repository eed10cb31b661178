// Device primitives of the decode kernel: byte-permute codebook lookups (prmt), the tensor-core
// products (mma / int8 mma / movmatrix), the decoding of one 32-element group of codes into
// fp16 fragments, and a lane's view of one tile (LaneTile). Layouts: formats.cuh.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/formats.cuh"

namespace tq::cuda::dk {

// x >> k computed as mul.hi (IMAD.HI runs on the FMA pipe, leaving the integer ALU to prmt).
template <int K>
__device__ __forceinline__ uint32_t shr_fma(uint32_t x) {
  uint32_t r;
  asm("mul.hi.u32 %0, %1, %2;" : "=r"(r) : "r"(x), "n"(1u << (32 - K)));
  return r;
}
// (x >> K) + c as mad.hi, also on the FMA pipe.
template <int K>
__device__ __forceinline__ uint32_t shr_add_fma(uint32_t x, uint32_t c) {
  uint32_t r;
  asm("mad.hi.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "n"(1u << (32 - K)), "r"(c));
  return r;
}
// 16 bytes global → shared (cp.async), both addresses + OFF.
template <int OFF>
__device__ __forceinline__ void cp16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%2], 16;" ::"r"(dst), "l"(src), "n"(OFF));
}
// 2^x on the SFU, flushing denormals (x ≤ 0 here; −inf → 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
  return r;
}
// Four lookups (selector nibbles 0..3, each 0..7) into an 8-entry fp16 table stored as low bytes
// (L0: entries 0-3, L1: 4-7) and high bytes; → half2(e0, e1), half2(e2, e3).
__device__ __forceinline__ void lut4(uint32_t sel, uint32_t L0, uint32_t L1, uint32_t H0,
                                     uint32_t H1, uint32_t& o0, uint32_t& o1) {
  const uint32_t lo = prmt(L0, L1, sel), hi = prmt(H0, H1, sel);
  o0 = prmt(lo, hi, 0x5140);
  o1 = prmt(lo, hi, 0x7362);
}

// The prmt selectors of one 32-element group of 3-bit codes (3 words, LUT3 layout of
// formats.cuh): n[k] holds 8 codes as nibbles (bits 0-2). 3 masks on the integer ALU; the 8
// codes spread over bit 3 of the nibbles are gathered as (w − (w & 0x77777777)) >> s sums on
// the FMA pipe (the three pieces have disjoint bits).
__device__ __forceinline__ void selectors3(const uint32_t* w, uint32_t (&n)[4]) {
  n[0] = w[0] & 0x77777777u;
  n[1] = w[1] & 0x77777777u;
  n[2] = w[2] & 0x77777777u;
  n[3] = shr_add_fma<3>(w[0] - n[0], shr_add_fma<2>(w[1] - n[1], shr_fma<1>(w[2] - n[2])));
}
// One group → two int8 lookups (tables T1 = {t1a, t1b}, T2), registers 2k / 2k+1 = lane
// elements 8k..8k+3 / 8k+4..8k+7: 16 prmt.
__device__ __forceinline__ void lut_i8_group(const uint32_t* w, uint32_t t1a, uint32_t t1b,
                                             uint32_t t2a, uint32_t t2b, uint32_t (&k1)[8],
                                             uint32_t (&k2)[8]) {
  uint32_t n[4];
  selectors3(w, n);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t hi = shr_fma<16>(n[k]);
    k1[2 * k] = prmt(t1a, t1b, n[k]);
    k1[2 * k + 1] = prmt(t1a, t1b, hi);
    k2[2 * k] = prmt(t2a, t2b, n[k]);
    k2[2 * k + 1] = prmt(t2a, t2b, hi);
  }
}

// The same with one table: 8 prmt per 32 codes.
__device__ __forceinline__ void lut_i8_group1(const uint32_t* w, uint32_t ta, uint32_t tb,
                                              uint32_t (&k1)[8]) {
  uint32_t n[4];
  selectors3(w, n);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    k1[2 * k] = prmt(ta, tb, n[k]);
    k1[2 * k + 1] = prmt(ta, tb, shr_fma<16>(n[k]));
  }
}

// One 32-code group of turbo3 codes → int8 A fragments (the lookup policy of the production
// decode modes, DecodeMode::Lookup): through the one-byte table (kOne: k1 only) or the
// two-byte tables (k1, k2). Experiments (bench/gpu/decode_variants.cu) plug in others.
struct TableLookup {
  template <bool kOne>
  __device__ __forceinline__ static void i8(const uint32_t* w, const uint32_t (&one)[2],
                                            const uint32_t (&two)[2][2], uint32_t (&k1)[8],
                                            uint32_t (&k2)[8]) {
    if constexpr (kOne) {
      lut_i8_group1(w, one[0], one[1], k1);
    } else {
      lut_i8_group(w, two[0][0], two[0][1], two[1][0], two[1][1], k1, k2);
    }
  }
};

template <bool BF>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  if constexpr (BF) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
// Exact int8 products, int32 accumulation (turbo3 keys).
__device__ __forceinline__ void imma(int (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                     uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// int8 codes (signed) × u8 probabilities (turbo3 values).
__device__ __forceinline__ void imma_su(int (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t movtrans(uint32_t x) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(x));
  return r;
}
__device__ __forceinline__ uint32_t h2u(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 u2h(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

// Two E4M3FN codes (bytes 2hi, 2hi + 1 of w) → half2 (the lower byte in the lower half), divided
// by fp8_unit(). sm_89+: the hardware conversion (cvt.rn.f16x2.e4m3x2, exact: every E4M3FN
// value is an fp16 number), unit 1. The compute_80 PTX path: e4m3x2_to_f16x2_div256
// (formats.cuh), the value × 2^-8, the 2^8 folded into the per-token scale.
__device__ __forceinline__ float fp8_unit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return 1.f;
#else
  return 256.f;
#endif
}
template <int HI>
__device__ __forceinline__ uint32_t fp8x2_to_h2(uint32_t w) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const unsigned short pair = static_cast<unsigned short>(HI ? w >> 16 : w & 0xFFFFu);
  uint32_t r;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(pair));
  return r;
#else
  return e4m3x2_to_f16x2_div256(HI ? w >> 16 : w & 0xFFFFu);
#endif
}

// Decode one group of 32 lane elements (kind_bits(K) words at w) into 16 registers, register j
// = elements (2j, 2j+1). sc: q8_0/q4_0 scales (4 half2 per group, see scale_index); fp8_e4m3
// values: the per-token scales × the unit (keys are decoded unscaled, the score scaled per
// token, as the turbo norms).
template <Kind K, bool IsV>
__device__ __forceinline__ int scale_index(int j) {
  return IsV ? (((j >> 2) & 1) * 2 + ((j & 3) >> 1)) : (((j >> 2) & 1) * 2 + (j & 1));
}
template <Kind K, bool IsV>
__device__ __forceinline__ void decode_group(const uint32_t* w, uint32_t L0, uint32_t L1,
                                             uint32_t H0, uint32_t H1, const __half2* sc,
                                             uint32_t (&h)[16]) {
  if constexpr (K == Kind::LUT3 || K == Kind::LUT4) {
    uint32_t n[4];
    n[0] = w[0] & 0x77777777u;
    n[1] = w[1] & 0x77777777u;
    n[2] = w[2] & 0x77777777u;
    n[3] = (shr_fma<3>(w[0]) & 0x11111111u) | (shr_fma<2>(w[1]) & 0x22222222u) |
           (shr_fma<1>(w[2]) & 0x44444444u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      lut4(n[k], L0, L1, H0, H1, h[4 * k], h[4 * k + 1]);
      lut4(shr_fma<16>(n[k]), L0, L1, H0, H1, h[4 * k + 2], h[4 * k + 3]);
    }
    if constexpr (K == Kind::LUT4) {
#pragma unroll
      for (int j = 0; j < 16; ++j) h[j] ^= (w[3] << j) & 0x80008000u;
    }
  } else if constexpr (K == Kind::LUT2) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t n = ((k & 1) ? shr_fma<2>(w[k >> 1]) : w[k >> 1]) & 0x33333333u;
      lut4(n, L0, L0, H0, H0, h[4 * k], h[4 * k + 1]);
      lut4(shr_fma<16>(n), L0, L0, H0, H0, h[4 * k + 2], h[4 * k + 3]);
    }
  } else if constexpr (K == Kind::LUT1) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t n = (w[0] >> k) & 0x11111111u;
      lut4(n, L0, L0, H0, H0, h[4 * k], h[4 * k + 1]);
      lut4(n >> 16, L0, L0, H0, H0, h[4 * k + 2], h[4 * k + 3]);
    }
  } else if constexpr (K == Kind::Q8) {
    const __half2 off = __half2half2(__ushort_as_half(0x6480));  // 1152 = 1024 + 128
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t x = w[k] ^ 0x80808080u;
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int j = 2 * k + s;
        const uint32_t v = prmt(x, 0x64646464u, s ? 0x4342u : 0x4140u);
        h[j] = h2u(__hmul2(__hsub2(u2h(v), off), sc[scale_index<K, IsV>(j)]));
      }
    }
  } else if constexpr (K == Kind::FP8) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t lo = fp8x2_to_h2<0>(w[k]), hi = fp8x2_to_h2<1>(w[k]);
      if constexpr (IsV) {
        h[2 * k] = h2u(__hmul2(u2h(lo), sc[scale_index<K, IsV>(2 * k)]));
        h[2 * k + 1] = h2u(__hmul2(u2h(hi), sc[scale_index<K, IsV>(2 * k + 1)]));
      } else {
        h[2 * k] = lo;
        h[2 * k + 1] = hi;
      }
    }
  } else if constexpr (K == Kind::Q4) {
    const __half2 off0 = __half2half2(__ushort_as_half(0x6408));  // 1032 = 1024 + 8
    const __half2 off1 = __half2half2(__ushort_as_half(0x6480));  // 1152 = 1024 + 16·8
    const __half2 s16 = __half2half2(__float2half(0.0625f));
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int j = 4 * k + jj;
        const uint32_t src = (jj >= 2) ? (w[k] >> 8) : w[k];
        const uint32_t m = (jj & 1) ? 0x00F000F0u : 0x000F000Fu;
        const uint32_t v = (src & m) | 0x64006400u;
        const __half2 sc2 = sc[scale_index<K, IsV>(j)];
        h[j] = (jj & 1) ? h2u(__hmul2(__hsub2(u2h(v), off1), __hmul2(sc2, s16)))
                        : h2u(__hmul2(__hsub2(u2h(v), off0), sc2));
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) h[j] = w[j];
  }
}

template <Fmt F, int D, int P>
struct PartT {
  static constexpr bool kExists = P < nparts(F);
  static constexpr Kind kKind = part_kind(F, P);
  static constexpr int kBits = kind_bits(kKind);
  static constexpr int kElems = kExists ? part_elems(F, P, D) : 0;
  static constexpr int kFirst = kExists ? part_first(F, P, D) : 0;
  static constexpr int kWords = kExists ? part_words(F, P, D) : 0;
  static constexpr int kWordsAlloc = kWords > 0 ? kWords : 1;
  static constexpr int kU = unit_words(kWordsAlloc);
  static constexpr int kOff = kExists ? part_offset_bytes(F, P, D) : 0;
};

// One tile's code words and per-token scalars, as one lane holds them.
template <Fmt F, int D>
struct LaneTile {
  using P0 = PartT<F, D, 0>;
  using P1 = PartT<F, D, 1>;
  uint32_t w0[P0::kWordsAlloc];
  uint32_t w1[P1::kWordsAlloc];
  float sc[4][2];                    // turbo: up to two per-token scalars for tokens g+8k
  static constexpr int kNB = (F == Fmt::kQ8_0 || F == Fmt::kQ4_0) ? D / 32 : 1;
  __half2 qs[kNB][4];                // q8_0/q4_0 scales, 4 per 32-dim block; fp8_e4m3 values

  template <int W, int U, bool GL>
  __device__ __forceinline__ static void load_words(const uint8_t* base, int lane,
                                                    uint32_t* w) {
#pragma unroll
    for (int u = 0; u < W / U; ++u) {
      const uint8_t* p = base + (u * 32 * U + lane * U) * 4;
      if constexpr (U == 4) {
        const uint4 v = GL ? __ldg(reinterpret_cast<const uint4*>(p))
                           : *reinterpret_cast<const uint4*>(p);
        w[4 * u] = v.x; w[4 * u + 1] = v.y; w[4 * u + 2] = v.z; w[4 * u + 3] = v.w;
      } else if constexpr (U == 2) {
        const uint2 v = GL ? __ldg(reinterpret_cast<const uint2*>(p))
                           : *reinterpret_cast<const uint2*>(p);
        w[2 * u] = v.x; w[2 * u + 1] = v.y;
      } else {
        w[u] = GL ? __ldg(reinterpret_cast<const unsigned*>(p))
                  : *reinterpret_cast<const unsigned*>(p);
      }
    }
  }

  // GL: tile in global memory (read-only path), else in shared memory.
  template <bool GL>
  __device__ __forceinline__ void load(const uint8_t* tile, int lane, bool is_v) {
    load_words<P0::kWords, P0::kU, GL>(tile + P0::kOff, lane, w0);
    if constexpr (P1::kExists) load_words<P1::kWords, P1::kU, GL>(tile + P1::kOff, lane, w1);
    const __half* scal = reinterpret_cast<const __half*>(tile + codes_bytes(F, D));
    const int g = lane >> 2, t = lane & 3;
    if constexpr (F == Fmt::kQ8_0 || F == Fmt::kQ4_0) {
#pragma unroll
      for (int b = 0; b < kNB; ++b) {
        const __half* s = scal + b * 32;
        if (!is_v) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {  // index (mt)*2 + r1 → token 16mt + g + 8r1
            qs[b][k] = __half2half2(s[16 * (k >> 1) + g + 8 * (k & 1)]);
          }
        } else {
#pragma unroll
          for (int k = 0; k < 4; ++k) {  // index kt*2 + hi → tokens 16kt + 8hi + 2t + {0,1}
            qs[b][k] = *reinterpret_cast<const __half2*>(s + 16 * (k >> 1) + 8 * (k & 1) +
                                                         2 * t);
          }
        }
      }
    } else if constexpr (F == Fmt::kFp8E4M3) {
      // one scale per token, token order; × fp8_unit() (see fp8x2_to_h2)
      const float u = fp8_unit();
      if (!is_v) {
#pragma unroll
        for (int k = 0; k < 4; ++k) sc[k][0] = __half2float(scal[g + 8 * k]) * u;  // token g+8k
      } else {
        const __half2 u2 = __float2half2_rn(u);  // 256·s: exact (s < 2^8 for fp16-range data)
#pragma unroll
        for (int k = 0; k < 4; ++k)  // as q8_0: tokens 16kt + 8hi + 2t + {0,1}
          qs[0][k] = __hmul2(*reinterpret_cast<const __half2*>(scal + 16 * (k >> 1) + 8 * (k & 1) +
                                                               2 * t), u2);
      }
    } else if constexpr (nscalars(F, D) > 0) {
      // tokens g + 8k, k = 0..3, are adjacent (scalar_slot)
#pragma unroll
      for (int a = 0; a < nscalars(F, D); ++a) {
        const uint2 v = *reinterpret_cast<const uint2*>(scal + 32 * a + 4 * g);
        const float2 f01 = __half22float2(*reinterpret_cast<const __half2*>(&v.x));
        const float2 f23 = __half22float2(*reinterpret_cast<const __half2*>(&v.y));
        sc[0][a] = f01.x;
        sc[1][a] = f01.y;
        sc[2][a] = f23.x;
        sc[3][a] = f23.y;
      }
    }
  }
};

}  // namespace tq::cuda::dk
