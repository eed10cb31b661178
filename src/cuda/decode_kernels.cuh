// Flash-decoding attention over the packed cache (one query token per sequence).
// One warp takes one 32-token page of one KV head at a time:
//   S^T (32 tok × 8 heads) = K (32 × D, decoded in registers) · Q'^T   (mma, fp32/int32 acc)
//   online softmax in the log2 domain (Q' carries scale·log2 e)
//   O^T (D × 8 heads)    += V^T (decoded) · P'^T   (P' = p·v_norm, transposed by movmatrix)
// The G ≤ 8 query heads of a KV head are the mma's N dimension: every code is decoded once and
// used by all of them. Codes become fp16 (or int8, turbo3) through byte-permute lookups of the
// codebook held in registers (prmt), never through per-element tables in memory.
// Two drivers: the split grid (CTA = split × KV head × sequence; warps merge in shared memory,
// the last CTA of a head merges the splits) and the stream mode (a persistent grid, one page
// range per warp across heads and sequences; see stream_range). turbo3 runs on the int8
// tensor cores with one-byte tables by default and, for G ≤ 4, "pair columns" (kPair).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

#include "cuda/append_kernels.cuh"
#include "cuda/consts.cuh"
#include "cuda/formats.cuh"

namespace tq::cuda {

struct DecodeParams {
  const uint8_t* pool;
  const int* block_table;
  int max_pages;
  int bt_stride;  // ints between the block-table rows of consecutive sequences (0: shared)
  const int* seq_lens;
  const uint16_t* q;   // prepared Q' [B][Hq][D] (fp16, bf16 for a BF16 key cache)
  const uint16_t* qs;  // T3P: √(π/2)/D · S Q'
  float* part_o;       // [B][Hq][splits][D]
  float* part_ml;      // [B][Hq][splits][2]
  int Hq, Hkv, G, splits, pages_per_split;
  long long page_bytes;
  int tile_k;  // bytes of a K tile (V tile follows)
  uint32_t klo[2][2], khi[2][2], vlo[2][2], vhi[2][2];
  uint32_t ki8[2][2];  // turbo3 keys: int8 tables K1, K2 (fp16 centroid = α(256·K1 + K2))
  float kalpha128;     // 128·α
  uint32_t vi8[2][2];  // turbo3 values: the same two int8 tables of the value codebook
  float valpha256;     // 256·α of the value codebook
  // turbo3, one byte table (kTab = 1): centroid c ≈ s·T (T int8, s chosen on the host to
  // minimise the rounding error); k1mul = s_K/2, v1mul = s_V.
  uint32_t k1tab[2], v1tab[2];
  float k1mul, v1mul;
  int B;               // sequences (stream mode)
  // turbo3 keys: the query rotation runs in the kernel prologue (no prepared q):
  // Q' = FWHT(ksigns ⊙ q32)·qscale/√D
  const float* q32;    // [B][Hq][D] fp32, original domain
  const float* ksigns;
  float qscale;        // softmax scale · log2 e
  // Fused split merge (out != null): every CTA writes its partial, the last CTA of a
  // (sequence, KV head) (counters, zero between calls) merges them and writes
  // out = vsigns ⊙ FWHT(o)/√D / l (no vsigns: o / l).
  float* out;
  const float* vsigns;
  int* counters;       // [B][Hkv]
};

namespace dk {

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

// One 32-code group of turbo3 codes → int8 A fragments: through the one-byte table (kOne: k1
// only), the two-byte tables (k1, k2), or (kRaw, a timing diagnostic) the code words fed to the
// tensor cores as they are.
template <bool kRaw, bool kOne>
__device__ __forceinline__ void group_i8(const uint32_t* w, const uint32_t (&one)[2],
                                         const uint32_t (&two)[2][2], uint32_t (&k1)[8],
                                         uint32_t (&k2)[8]) {
  if constexpr (kRaw) {
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      k1[r] = w[r % 3];
      k2[r] = w[(r + 1) % 3];
    }
  } else if constexpr (kOne) {
    lut_i8_group1(w, one[0], one[1], k1);
  } else {
    lut_i8_group(w, two[0][0], two[0][1], two[1][0], two[1][1], k1, k2);
  }
}

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

// Decode one group of 32 lane elements (kind_bits(K) words at w) into 16 registers, register j
// = elements (2j, 2j+1). sc: q8_0/q4_0 scales (4 half2 per group, see scale_index).
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
  static constexpr int kNB = (F == Fmt::Q8_0 || F == Fmt::Q4_0) ? D / 32 : 1;
  __half2 qs[kNB][4];                // q8_0/q4_0 scales, 4 per 32-dim block

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
    if constexpr (F == Fmt::Q8_0 || F == Fmt::Q4_0) {
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

__host__ __device__ constexpr int decode_stage_bytes(Fmt kf, Fmt vf, int D) {
  return (tile_bytes(kf, D) + tile_bytes(vf, D) + 15) / 16 * 16;
}
// Small pages (compressed types) go through the shared-memory ring; bf16/q8_0 pages are large
// enough that plain loads keep plenty of bytes in flight.
__host__ __device__ constexpr bool decode_uses_ring(Fmt kf, Fmt vf, int D) {
  return decode_stage_bytes(kf, vf, D) <= 5120;
}
// [ring | CTA merge] [turbo3 keys: rotated queries, 8 heads × D floats]
__host__ __device__ constexpr int decode_qsm_offset(Fmt kf, Fmt vf, int D, int nw, int stages) {
  const int merge = nw * 8 * 2 * 4 + nw * 8 * D * 4;
  const int ring = decode_uses_ring(kf, vf, D) ? nw * stages * decode_stage_bytes(kf, vf, D) : 0;
  return merge > ring ? merge : ring;
}
__host__ __device__ constexpr int decode_smem_bytes(Fmt kf, Fmt vf, int D, int nw, int stages) {
  return decode_qsm_offset(kf, vf, D, nw, stages) + (kf == Fmt::T3 ? 8 * D * 4 : 0);
}

// turbo3 keys: the query of (sequence b, KV head kvh) rotated (FWHT of ksigns ⊙ q), scaled
// by softmax-scale·log2 e and quantised to int8 B fragments qf (see decode_kernel), and the
// per-head score scales kscale (heads 2t, 2t+1). kWarp: one warp does all G heads (qsm: its
// own 8 × D floats); else the NW warps of the CTA share them (CTA barrier, qsm shared).
template <int D, int NW, bool kWarp, int kTab, bool kSplit = false>
__device__ __forceinline__ void t3_query_frags(const DecodeParams& p, int b, int kvh, float* qsm,
                                               uint32_t (&qf)[D / 16][2], float (&kscale)[2]) {
  constexpr bool kQ8 = kTab == 0, kOneTab = kTab != 2;
  constexpr int E = D / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const float sc = p.qscale * rsqrtf(float(D));
  if constexpr (kWarp) {
    // all G heads by this warp: every load first (one latency, not G)
    float u[8][E];
#pragma unroll
    for (int h = 0; h < 8; ++h)
#pragma unroll
      for (int k = 0; k < E; ++k)
        u[h][k] = h < p.G ? p.q32[(size_t(b) * p.Hq + kvh * p.G + h) * D + E * lane + k] *
                                p.ksigns[E * lane + k]
                          : 0.f;
#pragma unroll
    for (int h = 0; h < 8; ++h) {
      if (h < p.G) {
        ak::fwht_warp<E>(u[h], lane);
#pragma unroll
        for (int k = 0; k < E; ++k) qsm[h * D + E * lane + k] = u[h][k] * sc;
      }
    }
    __syncwarp();
  } else {
    for (int h = warp; h < p.G; h += NW) {
      const float* q = p.q32 + (size_t(b) * p.Hq + kvh * p.G + h) * D + E * lane;
      float u[E];
#pragma unroll
      for (int k = 0; k < E; ++k) u[k] = q[k] * p.ksigns[E * lane + k];
      ak::fwht_warp<E>(u, lane);
#pragma unroll
      for (int k = 0; k < E; ++k) qsm[h * D + E * lane + k] = u[k] * sc;
    }
    __syncthreads();
  }
  // kSplit (G ≤ 4, 15-bit query, "pair columns"): B column 2h carries Q1 of head h, column
  // 2h + 1 its low part 2·Q2, so lanes g = 2h, 2h + 1 quantise head h (one key product
  // instead of two; the two parts of a score then sit in one lane)
  const int hq = kSplit ? g >> 1 : g;
  const bool ok = hq < p.G;
  float qv[D / 32][2][4], mx = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 32; ++kk)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float4 v = ok ? *reinterpret_cast<const float4*>(qsm + hq * D + 32 * kk + 16 * hh +
                                                             4 * t)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
      qv[kk][hh][0] = v.x;
      qv[kk][hh][1] = v.y;
      qv[kk][hh][2] = v.z;
      qv[kk][hh][3] = v.w;
#pragma unroll
      for (int j = 0; j < 4; ++j) mx = fmaxf(mx, fabsf(qv[kk][hh][j]));
    }
  if constexpr (kWarp) __syncwarp();  // the scratch is reused at the segment's end
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  // Q = round(q/β): β = max|q|/16256 (15 bits, = 128·Q1 + Q2) or max|q|/127 (kQ8). inv may be
  // off by an ulp: |q|·inv stays < 16256.5, and β·inv = 1 within 1e-7
  constexpr float kQmax = kQ8 ? 127.f : 16256.f;
  const float beta = mx > 0.f ? mx * (1.f / kQmax) : 1.f;
  const float inv = mx > 0.f ? __fdividef(kQmax, mx) : 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 32; ++kk)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      uint32_t w1 = 0, w2 = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int Q = __float2int_rn(qv[kk][hh][j] * inv);
        const int Q1 = kQ8 ? Q : (Q + 64) >> 7, Q2 = Q - 128 * Q1;
        w1 |= uint32_t(Q1 & 0xFF) << (8 * j);
        w2 |= uint32_t((2 * Q2) & 0xFF) << (8 * j);
      }
      qf[2 * kk][hh] = kSplit && (g & 1) ? w2 : w1;
      qf[2 * kk + 1][hh] = w2;
    }
  const float kmul = kQ8 ? 2.f * p.k1mul : kOneTab ? p.k1mul : p.kalpha128;
#pragma unroll
  for (int c = 0; c < 2; ++c)
    kscale[c] = __shfl_sync(0xffffffffu, beta, 4 * (kSplit ? 2 * t : 2 * t + c)) * kmul;
}

// ---- stream mode: page ranges, fetch cursor and the end of a piece (decode_kernel<kStream> and
// decode_ws_kernel). A unit (a warp, or a pair of warps) reads flat pages [u·per, (u+1)·per)
// of the (sequence, KV head, page) order; segment piece ids: segment index + u (unique: a
// segment's pieces are consecutive units, and the next segment starts at or after its last).
__device__ __forceinline__ int seq_pages(const DecodeParams& p, int b) {
  return (max(p.seq_lens[b], 0) + kPageTokens - 1) / kPageTokens;
}
struct SegCursor {
  int b, kvh, pg, np;  // sequence, KV head, page, pages of the sequence
  __device__ __forceinline__ void advance(const DecodeParams& p) {
    if (++pg == np) {
      pg = 0;
      if (++kvh == p.Hkv) {
        kvh = 0;
        do {
          ++b;
        } while (b < p.B && (np = seq_pages(p, b)) == 0);
      }
    }
  }
};
struct StreamRange {
  int per, r0, n;  // pages per unit, first flat page, pages of this unit
  int seg0;        // flat page 0 of the cursor's segment
  SegCursor c;     // at r0
};
// This unit's range; false when it is empty. Rows of empty sequences are zeroed here.
template <int D>
__device__ bool stream_range(const DecodeParams& p, int unit, int nunits, StreamRange& r) {
  const int lane = threadIdx.x & 31, Hkv = p.Hkv, nseq = p.B;
  int W = 0;  // (the host checks that B·Hkv·pages fits an int)
  for (int i = lane; i < nseq; i += 32) W += seq_pages(p, i);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) W += __shfl_xor_sync(0xffffffffu, W, off);
  W *= Hkv;
  for (int seg = unit; seg < nseq * Hkv; seg += nunits)
    if (seq_pages(p, seg / Hkv) == 0)
      for (int h = 0; h < p.G; ++h)
        for (int d = lane; d < D; d += 32)
          p.out[(size_t(seg / Hkv) * p.Hq + (seg % Hkv) * p.G + h) * D + d] = 0.f;
  r.per = (W + nunits - 1) / nunits;
  r.r0 = unit * r.per;
  r.n = min(W, r.r0 + r.per) - r.r0;
  if (r.n <= 0) return false;
  // sequence of r0 (cpre: pages of the earlier sequences), then KV head and page
  int cb = 0, cpre = 0;
  for (int base = 0; base < nseq; base += 32) {
    const int np = base + lane < nseq ? seq_pages(p, base + lane) : 0;
    int inc = np;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, inc, off);
      if (lane >= off) inc += y;
    }
    const unsigned hit = __ballot_sync(0xffffffffu, np > 0 && (cpre + inc) * Hkv > r.r0);
    if (hit) {
      const int l0 = __ffs(hit) - 1;
      cb = base + l0;
      cpre += __shfl_sync(0xffffffffu, inc - np, l0);
      break;
    }
    cpre += __shfl_sync(0xffffffffu, inc, 31);
  }
  const int np = seq_pages(p, cb), rel = r.r0 - cpre * Hkv;
  r.c = SegCursor{cb, rel / np, rel % np, np};
  r.seg0 = cpre * Hkv + rel / np * np;
  return true;
}
// Tile addresses along a cursor, in chunks of up to 32 pages of one segment: lane l holds the
// address of page l of the chunk (one shuffle pair per page); the block-table entries of the
// following chunk are loaded one chunk ahead.
struct TileFetcher {
  SegCursor c;  // first page of the next chunk
  const uint8_t* addr = nullptr;
  int idx = 0, cnt = 0;  // position in the current chunk, its pages
  int pre_e = 0, pre_b = -1, pre_pg = 0;  // prefetched entries of chunk (pre_b, pre_pg)
  __device__ __forceinline__ int entries(const DecodeParams& p) const {
    const int lane = threadIdx.x & 31, n = min(32, c.np - c.pg);
    return lane < n ? p.block_table[size_t(c.b) * p.bt_stride + c.pg + lane] : 0;
  }
  __device__ __forceinline__ const uint8_t* next(const DecodeParams& p, size_t head_bytes) {
    if (idx == cnt) {
      cnt = min(32, c.np - c.pg);
      const int e = (pre_b == c.b && pre_pg == c.pg) ? pre_e : entries(p);
      addr = p.pool + size_t(e) * p.page_bytes + size_t(c.kvh) * head_bytes;
      idx = 0;
      c.pg += cnt - 1;  // the page after the chunk
      c.advance(p);
      pre_b = -1;
      if (c.b < p.B) {
        pre_b = c.b;
        pre_pg = c.pg;
        pre_e = entries(p);
      }
    }
    const auto tp = reinterpret_cast<const uint8_t*>(
        __shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(addr), idx));
    ++idx;
    return tp;
  }
};
// End of a unit's piece of the segment (cursor c, flat page 0 at seg0): l summed over the lanes.
// One piece: write the output rows; several: write this partial and, for the last one to
// arrive, merge them (o and l are overwritten) and write the rows: out = Πᵀ(o / l) (vsigns:
// FWHT). scratch: this warp's 8 × D floats.
template <int D>
__device__ void stream_finish(const DecodeParams& p, float (&o)[D / 16][4], float (&l)[2],
                              const float (&m)[2], const StreamRange& r, const SegCursor& c,
                              int seg0, int unit, float* scratch) {
  constexpr int KS = D / 16, E = D / 32;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int seg = c.b * p.Hkv + c.kvh;
  const int w_first = seg0 / r.per, w_last = (seg0 + c.np - 1) / r.per;
  if (w_last > w_first) {
    const int id0 = seg + w_first, id = seg + unit;
    float4* po = reinterpret_cast<float4*>(p.part_o + (size_t(id) * 32 + lane) * (KS * 4));
#pragma unroll
    for (int i = 0; i < KS; ++i) po[i] = make_float4(o[i][0], o[i][1], o[i][2], o[i][3]);
    if (g == 0)
      reinterpret_cast<float4*>(p.part_ml + size_t(id) * 16)[t] =
          make_float4(m[0], l[0], m[1], l[1]);
    __threadfence();
    __syncwarp();
    int last = 0;
    if (lane == 0) last = atomicAdd(p.counters + seg, 1) == w_last - w_first;
    if (!__shfl_sync(0xffffffffu, last, 0)) return;
    __threadfence();
    if (lane == 0) p.counters[seg] = 0;  // ready for the next call
    const int npc = w_last - w_first + 1;
    auto ml_of = [&](int j) {
      return __ldcg(reinterpret_cast<const float4*>(p.part_ml + size_t(id0 + j) * 16) + t);
    };
    float M[2] = {-1e30f, -1e30f};
    for (int j = 0; j < npc; ++j) {
      const float4 ml = ml_of(j);
      M[0] = fmaxf(M[0], ml.x);
      M[1] = fmaxf(M[1], ml.z);
    }
#pragma unroll
    for (int i = 0; i < KS; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    l[0] = l[1] = 0.f;
    for (int j = 0; j < npc; ++j) {
      const float4 ml = ml_of(j);
      const float w0 = exp2f(ml.x - M[0]), w1 = exp2f(ml.z - M[1]);
      l[0] += w0 * ml.y;
      l[1] += w1 * ml.w;
      const float4* pj =
          reinterpret_cast<const float4*>(p.part_o + (size_t(id0 + j) * 32 + lane) * (KS * 4));
#pragma unroll
      for (int i = 0; i < KS; ++i) {
        const float4 v = __ldcg(pj + i);
        o[i][0] += w0 * v.x;
        o[i][1] += w1 * v.y;
        o[i][2] += w0 * v.z;
        o[i][3] += w1 * v.w;
      }
    }
  }
  const float il0 = l[0] > 0.f ? 1.f / l[0] : 0.f, il1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
#pragma unroll
  for (int mt = 0; mt < KS; ++mt)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
      scratch[(2 * t + (cc & 1)) * D + 16 * mt + g + 8 * (cc >> 1)] =
          o[mt][cc] * ((cc & 1) ? il1 : il0);
  __syncwarp();
  for (int h = 0; h < p.G; ++h) {
    float u[E];
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] = scratch[h * D + E * lane + k];
    float* dst = p.out + (size_t(c.b) * p.Hq + c.kvh * p.G + h) * D + E * lane;
    if (p.vsigns) {
      ak::fwht_warp<E>(u, lane);
      const float sc = rsqrtf(float(D));
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k] * sc * p.vsigns[E * lane + k];
    } else {
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k];
    }
  }
  __syncwarp();
}

// Stream mode (kStream): a persistent grid of exactly the resident CTAs; the pages of all
// (sequence, KV head) segments, flattened in that order, are cut into one contiguous range per
// warp. A warp streams its range through its ring without pausing at segment boundaries and
// without CTA barriers; at the end of each segment piece it writes a partial (m, l, o) and
// the last piece of a segment (atomic counter) merges them and writes the output. This removes
// the per-wave prologue/epilogue of the split grid (query preparation, pipeline fill, CTA merge)
// and its wave tail. Smem: [ring: NW × kStages × SB][scratch: NW × 8 × D floats].
__host__ __device__ constexpr int stream_scratch_offset(Fmt kf, Fmt vf, int D, int nw,
                                                        int stages) {
  return nw * stages * decode_stage_bytes(kf, vf, D);
}
__host__ __device__ constexpr int stream_smem_bytes(Fmt kf, Fmt vf, int D, int nw, int stages) {
  return stream_scratch_offset(kf, vf, D, nw, stages) + nw * 8 * D * 4;
}
// Types the stream mode serves: ring types whose output needs no dense rotation.
__host__ __device__ constexpr bool stream_eligible(Fmt kf, Fmt vf, int D) {
  return decode_uses_ring(kf, vf, D) && !is_split(kf) && !is_split(vf);
}

// kDiag (timing diagnostics of the turbo3 kernel only, results wrong): 4 = pages streamed and
// folded with no decode at all; bits 1 | 2: 1 = value codes fed
// to the tensor cores raw (no V lookup), 2 = key codes raw (no K lookup).
// kStream: the persistent stream mode above (else the split grid (splits, Hkv, B)).
// kTab (turbo3): 2 = the exact two-byte codebook tables, 1 = one byte table (the centroids
// rounded to s·int8, see DecodeParams::k1tab): half the lookups and tensor-core ops; 0 = one
// byte table and an 8-bit query (one key product instead of two). (8-bit P' per page, one
// value product, ran 6 % slower than 1: its page-max shuffles sit on the critical path.)
template <Fmt KF, Fmt VF, int D, int NW, int kStages = 3, int MINB = 1, int kDiag = 0,
          bool kStream = false, int kTab = 2, bool kG4 = false>
__global__ void __launch_bounds__(NW * 32, MINB) decode_kernel(DecodeParams p) {
  static_assert(!kStream || stream_eligible(KF, VF, D), "stream mode: ring types only");
  constexpr bool KBF = KF == Fmt::BF16, VBF = VF == Fmt::BF16;
  constexpr int KS = D / 16;  // k-steps over dims (K side) = m-tiles over dims (V side)
  using KT = LaneTile<KF, D>;
  using VT = LaneTile<VF, D>;
  using KP0 = PartT<KF, D, 0>;
  using KP1 = PartT<KF, D, 1>;
  using VP0 = PartT<VF, D, 0>;
  using VP1 = PartT<VF, D, 1>;
  constexpr bool K2 = nparts(KF) > 1;   // a second score accumulator
  constexpr bool V2 = is_split(VF);     // two P' variants (norm of each part)
  constexpr bool kRing = decode_uses_ring(KF, VF, D);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const uint8_t* pool = p.pool;
  const size_t head_bytes = size_t(p.tile_k + tile_bytes(VF, D));

  // Each warp streams its pages through a ring of kStages shared-memory slots (cp.async,
  // 16 B per lane per request): kStages − 1 pages in flight while one is computed. (One bulk
  // copy per page on an mbarrier instead ran slower: 0.217 → 0.252 ms streaming alone.)
  constexpr int SB = decode_stage_bytes(KF, VF, D);
  extern __shared__ __align__(16) uint8_t dsm[];
  uint8_t* ring = dsm + warp * kStages * SB;
  const uint32_t ring_s = uint32_t(__cvta_generic_to_shared(ring)) + 16 * lane;
  // per-warp scratch (stream mode): rotated queries, the output tile
  float* scratch = reinterpret_cast<float*>(dsm + stream_scratch_offset(KF, VF, D, NW, kStages)) +
                   warp * 8 * D;
  // lane l copies 16-byte chunks l, l + 32, ... of the page's K and V tiles (one base address,
  // immediate offsets)
  auto issue = [&](const uint8_t* tile, int slot) {
    const uint8_t* src = tile + 16 * lane;
    const uint32_t dst = ring_s + slot * SB;
    constexpr int NCH = SB / 16;
    [&]<int... J>(std::integer_sequence<int, J...>) {
      (cp16<512 * J>(dst, src), ...);
    }(std::make_integer_sequence<int, NCH / 32>{});
    if constexpr (NCH % 32 != 0) {
      if (lane < NCH % 32) cp16<512 * (NCH / 32)>(dst, src);
    }
  };

  // turbo3 keys: int8 tensor cores (see DecodeParams::ki8). The query of head g is quantised
  // to Q = round(q/β) = 128·Q1 + Q2 (β = max|q|/16256, so Q1 in [-127, 127], Q2 in [-64, 63]);
  // score = 128αβ·(256·K1·Q1 + K1·2Q2 + K2·Q1), the K2·Q2/128 term (< 1e-4 relative) dropped.
  // One table (kTab = 1, c ≈ s·T): score = (s/2)β·(256·T·Q1 + T·2Q2).
  // qf[2kk] = Q1, qf[2kk + 1] = 2·Q2 as B fragments of k-step kk (dims 32kk + 4t + 0..3 and
  // 32kk + 16 + 4t + 0..3).
  constexpr bool KI8 = KF == Fmt::T3;
  constexpr bool kOneTab = kTab != 2;              // one-byte codebook tables
  constexpr bool kQ8 = kTab == 0;                  // 8-bit query
  // G ≤ 4 with turbo3 values and one-byte tables: the mma's 4 spare head columns carry the low
  // bytes of P' (see the value step), one int8 product per value instead of two
  constexpr bool kSplitCols = kG4 && VF == Fmt::T3 && kOneTab;
  // ... and with turbo3 keys and the 15-bit query: "pair columns" (kPair). Column 2h of every
  // product is head h's high part, 2h + 1 its low part (query Q1 | 2·Q2 on the key side, P'
  // bytes Q1 | Q2 on the value side), so lane (g, t) holds both parts of head t: one product
  // per 32 keys and per 32 values, scores and o combined in the lane, 4 softmax terms per lane.
  // State then: o[i][0..1] = dims 16i + g (+8) of head t, m_run[0], l_run[0] of head t.
  constexpr bool kPair = kSplitCols && KI8 && !kQ8;
  float kscale[2] = {1.f, 1.f};  // 128αβ of heads 2t, 2t+1

  // Q'^T fragments (B operand): b0b1 = dims 16ks + 2t (+1), b2b3 = +8; head g.
  uint32_t qf[KS][2], qf2[K2 && KF == Fmt::T3P ? KS : 1][2];
  // The query fragments of (sequence b, KV head kvh). Split grid: the CTA's warps rotate its
  // G heads together (CTA barrier); stream mode: the warp rotates all G heads itself.
  auto prep_query = [&](int b, int kvh) {
    if constexpr (KI8) {
      float* qsm = kStream ? scratch
                           : reinterpret_cast<float*>(dsm + decode_qsm_offset(KF, VF, D, NW,
                                                                              kStages));
      t3_query_frags<D, NW, kStream, kTab, kPair>(p, b, kvh, qsm, qf, kscale);
    } else {
      const int qh = kvh * p.G + g;
      const bool ok = g < p.G;
      const uint32_t* q = reinterpret_cast<const uint32_t*>(p.q + (size_t(b) * p.Hq + qh) * D);
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        qf[ks][0] = ok ? q[(16 * ks + 2 * t) / 2] : 0u;
        qf[ks][1] = ok ? q[(16 * ks + 8 + 2 * t) / 2] : 0u;
      }
      if constexpr (KF == Fmt::T3P) {
        const uint32_t* qs =
            reinterpret_cast<const uint32_t*>(p.qs + (size_t(b) * p.Hq + qh) * D);
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
          qf2[ks][0] = ok ? qs[(16 * ks + 2 * t) / 2] : 0u;
          qf2[ks][1] = ok ? qs[(16 * ks + 8 + 2 * t) / 2] : 0u;
        }
      }
    }
  };

  float o[KS][4];
  float m_run[2], l_run[2];

  // turbo3 values: int8 tensor cores too. V codes → V1, V2 (c/α = 256·V1 + V2, as the keys);
  // P' = p·‖v‖ → Q = round(P'·vqinv) ≤ 65535 = 256·Q1 + Q2 (u8 bytes, Q1 and Q2 exact);
  // O^T += α/vqinv · V^T·Q^T ≈ 256α/vqinv · (256·V1Q1 + V1Q2 + V2Q1) (V2Q2 < 2^-15 of the
  // product dropped). One table (kTab = 1, c ≈ s·T): O^T += s/vqinv · (256·TQ1 + TQ2).
  // The int32 sums va1, va2 of a page are converted into o at its end (vflush). (Keeping them
  // over pages, converted only when their scale changes, saved no time: session 3, v18.)
  constexpr bool VI8 = VF == Fmt::T3;
  int va1[VI8 ? KS : 1][4], va2[VI8 ? KS : 1][4];
  float vbound, vqinv, vscale;  // Q scale: vqinv = 65535 / vbound
  auto reset_state = [&]() {
#pragma unroll
    for (int i = 0; i < KS; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    m_run[0] = m_run[1] = -1e30f;
    l_run[0] = l_run[1] = 0.f;
#pragma unroll
    for (int i = 0; i < (VI8 ? KS : 1); ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c) va1[i][c] = va2[i][c] = 0;
    vbound = vqinv = vscale = 0.f;
  };
  auto vflush = [&]() {
#pragma unroll
    for (int i = 0; i < (VI8 ? KS : 1); ++i)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        o[i][c] = fmaf(float(va1[i][c] * 256 + va2[i][c]), vscale, o[i][c]);
        va1[i][c] = va2[i][c] = 0;
      }
  };
  // Q scale of P' (turbo3 values): a value norm of this page above vbound (warp vote) sets
  // vbound = 2 × the page's largest norm (room for later pages).
  auto update_vbound = [&](float nvm) {
    if (__any_sync(0xffffffffu, nvm > vbound)) {
      float mxn = fmaxf(nvm, __shfl_xor_sync(0xffffffffu, nvm, 4));
      mxn = fmaxf(mxn, __shfl_xor_sync(0xffffffffu, mxn, 8));
      mxn = fmaxf(mxn, __shfl_xor_sync(0xffffffffu, mxn, 16));
      vbound = 2.f * mxn;
      vqinv = 65535.f / vbound;
      vscale = (kOneTab ? p.v1mul : p.valpha256) / vqinv;
    }
  };

  // log2-domain logit of column c relative to the running max (turbo3 keys: kscale applied here)
  auto logit = [&](float sv, int c) {
    if constexpr (KI8) return fmaf(sv, kscale[c], -m_run[c]);
    else return sv - m_run[c];
  };
  // kSplitCols: o columns 0-3 (lanes t < 2) += columns 4-7 (lanes t + 2) at the end of a piece
  auto combine_cols = [&]() {
    if constexpr (kPair) {
      // → the standard layout: lane (g, t) takes heads 2t, 2t + 1 from lanes (g, 2t), (g, 2t+1)
      const int src0 = 4 * g + ((2 * t) & 3), src1 = src0 + 1;
      float on[KS][4];
#pragma unroll
      for (int i = 0; i < KS; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          on[i][c] = __shfl_sync(0xffffffffu, o[i][c >> 1], (c & 1) ? src1 : src0);
#pragma unroll
      for (int i = 0; i < KS; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) o[i][c] = on[i][c];
      const float m0 = __shfl_sync(0xffffffffu, m_run[0], src0);
      const float m1 = __shfl_sync(0xffffffffu, m_run[0], src1);
      const float l0 = __shfl_sync(0xffffffffu, l_run[0], src0);
      const float l1 = __shfl_sync(0xffffffffu, l_run[0], src1);
      m_run[0] = m0;
      m_run[1] = m1;
      l_run[0] = l0;
      l_run[1] = l1;
    } else if constexpr (kSplitCols) {
#pragma unroll
      for (int i = 0; i < KS; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) o[i][c] += __shfl_xor_sync(0xffffffffu, o[i][c], 2);
    }
  };

  // End of a warp's pages (split grid) or of its piece of a segment (stream mode): columns
  // combined, l summed over the lanes of each head.
  auto end_piece = [&]() {
    combine_cols();
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      l_run[c] += __shfl_xor_sync(0xffffffffu, l_run[c], 4);
      l_run[c] += __shfl_xor_sync(0xffffffffu, l_run[c], 8);
      l_run[c] += __shfl_xor_sync(0xffffffffu, l_run[c], 16);
    }
  };

  // Same codebook for K and V: one set of table registers.
  const auto& vlo = KF == VF ? p.klo : p.vlo;
  const auto& vhi = KF == VF ? p.khi : p.vhi;
  int seq = 0;  // length of the sequence being read (masking of its last page)
  // and independent decode/mma chains to interleave.
  // PART 1: scores of the pages' keys into s; PART 2: softmax and values of s (3: both; a
  // software pipeline that scored the next page's keys between them ran 8 % slower).
  // turbo3 keys on the int8 tensor cores: a1 += T1·qf[2·grp] (T1: the one-byte table, or the
  // high bytes of the two-byte one); a2 += T1·qf[2·grp + 1] (the query's low part 2·Q2; not
  // with an 8-bit query, nor with pair columns, which carry it in the same product); a3 +=
  // T2·qf[2·grp] (two-byte tables).
  auto key_products = [&](const KT& kt, int (&a1)[2][4], int (&a2)[2][4], int (&a3)[2][4]) {
#pragma unroll
    for (int grp = 0; grp < D / 32; ++grp) {
      uint32_t k1[8], k2[8];
      group_i8<(kDiag & 2) != 0, kOneTab>(kt.w0 + 3 * grp, p.k1tab, p.ki8, k1, k2);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const uint32_t A1[4] = {k1[4 * mt], k1[4 * mt + 1], k1[4 * mt + 2], k1[4 * mt + 3]};
        imma(a1[mt], A1, qf[2 * grp][0], qf[2 * grp][1]);
        if constexpr (!kQ8 && !kPair) imma(a2[mt], A1, qf[2 * grp + 1][0], qf[2 * grp + 1][1]);
        if constexpr (kTab == 2) {
          const uint32_t A2[4] = {k2[4 * mt], k2[4 * mt + 1], k2[4 * mt + 2], k2[4 * mt + 3]};
          imma(a3[mt], A2, qf[2 * grp][0], qf[2 * grp][1]);
        }
      }
    }
  };
  auto process = [&]<int NP, int PART>(const KT* kts, const VT* vts, int pg,
                                        float (&s)[NP][2][4]) {
    if constexpr (kDiag == 4) {  // streaming only: fold the words into o
#pragma unroll
      for (int pp = 0; pp < NP; ++pp) {
        uint32_t x = 0;
#pragma unroll
        for (int i = 0; i < KT::P0::kWords; ++i) x ^= kts[pp].w0[i] ^ vts[pp].w0[i];
        o[0][0] += __uint_as_float(x & 0x3FFFFFFFu) + kts[pp].sc[0][0] + vts[pp].sc[1][0];
      }
      return;
    }
    if constexpr (kPair) {
      static_assert(NP == 1 && PART == 3, "pair columns: one page per step");
      const KT& kt_cur = kts[0];
      const VT& vt_cur = vts[0];
      // keys: a[mt] = rows tokens 16mt + g (+8) × columns 2t (Q1 part), 2t + 1 (2·Q2 part)
      int a[2][4] = {}, unused2[2][4], unused3[2][4];
      key_products(kt_cur, a, unused2, unused3);
      // scores of head t, tokens g + 8k (k = 2mt + r), without kscale (see logit)
      float sc[4];
      const int nvalid = seq - pg * kPageTokens;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int k = 2 * mt + r;
          sc[k] = float(a[mt][2 * r] * 256 + a[mt][2 * r + 1]) * kt_cur.sc[k][0];
        }
      if (nvalid < kPageTokens) {  // the last page only (warp-uniform)
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (g + 8 * k >= nvalid) sc[k] = -INFINITY;
      }
      float mx = fmaxf(fmaxf(sc[0], sc[1]), fmaxf(sc[2], sc[3])) * kscale[0];
      if (__any_sync(0xffffffffu, mx > m_run[0])) {
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        const float mn = fmaxf(m_run[0], mx);
        const float alpha = fast_exp2(m_run[0] - mn);
        m_run[0] = mn;
        l_run[0] *= alpha;
        if (!__all_sync(0xffffffffu, alpha == 1.f)) {
#pragma unroll
          for (int i = 0; i < KS; ++i) {
            o[i][0] *= alpha;
            o[i][1] *= alpha;
          }
        }
      }
      update_vbound(fmaxf(fmaxf(vt_cur.sc[0][0], vt_cur.sc[1][0]),
                          fmaxf(vt_cur.sc[2][0], vt_cur.sc[3][0])));
      // P' = p·‖v‖ → Q = 256·Q1 + Q2; the b16 pair (Q1, Q2) is row g + 8k, columns 2t, 2t + 1
      // of the 8 × 8 block that movmatrix transposes into the B fragment (column n = lane g)
      uint32_t x[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float pk = fast_exp2(logit(sc[k], 0));
        l_run[0] += pk;
        const uint32_t qb = __float_as_uint(fmaf(pk, vt_cur.sc[k][0] * vqinv, 8388608.f));
        x[k] = movtrans(prmt(qb, 0u, 0x4041));
      }
      const uint32_t b0 = prmt(x[0], x[1], 0x6420), b1 = prmt(x[2], x[3], 0x6420);
      const float vs256 = 256.f * vscale;
#pragma unroll
      for (int grp = 0; grp < D / 32; ++grp) {
        uint32_t v1[8], v2[8];
        group_i8<(kDiag & 1) != 0, true>(vt_cur.w0 + 3 * grp, p.v1tab, p.vi8, v1, v2);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const uint32_t A1[4] = {v1[4 * mt], v1[4 * mt + 1], v1[4 * mt + 2], v1[4 * mt + 3]};
          int d[4] = {0, 0, 0, 0};
          imma_su(d, A1, b0, b1);
          float* oi = o[2 * grp + mt];
          oi[0] = fmaf(float(d[0]), vs256, fmaf(float(d[1]), vscale, oi[0]));  // dim g
          oi[1] = fmaf(float(d[2]), vs256, fmaf(float(d[3]), vscale, oi[1]));  // dim g + 8
        }
      }
      return;
    }
    // ---- scores S^T[mt]: tokens 16mt + g (+8), heads 2t, 2t+1
    float s2[NP][2][4] = {};
    if constexpr ((PART & 1) != 0) {
#pragma unroll
      for (int pp = 0; pp < NP; ++pp)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int c = 0; c < 4; ++c) s[pp][mt][c] = 0.f;
#pragma unroll
      for (int pp = 0; pp < NP; ++pp) {
        const KT& kt_cur = kts[pp];
        if constexpr (KI8) {
          int a1[2][4] = {}, a2[2][4] = {}, a3[2][4] = {};  // up to three chains of D/32
          key_products(kt_cur, a1, a2, a3);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int c = 0; c < 4; ++c)
              // (× kscale later: on the page max and inside the exp2's FFMA)
              s[pp][mt][c] =
                  kQ8 ? float(a1[mt][c]) : float(a1[mt][c] * 256 + a2[mt][c] + a3[mt][c]);
        }
#pragma unroll
        for (int grp = 0; grp < (KI8 ? 0 : D / 32); ++grp) {
          uint32_t h[16];
          const bool in_p0 = grp * 32 < KP0::kFirst + KP0::kElems;
          if (!K2 || KF == Fmt::T3P || in_p0) {
            const int pg_ = grp - KP0::kFirst / 32;
            decode_group<KP0::kKind, false>(kt_cur.w0 + pg_ * KP0::kBits, p.klo[0][0],
                                            p.klo[0][1], p.khi[0][0], p.khi[0][1],
                                            kt_cur.qs[grp % KT::kNB], h);
#pragma unroll
            for (int jj = 0; jj < 2; ++jj)
#pragma unroll
              for (int mt = 0; mt < 2; ++mt) {
                const uint32_t a[4] = {h[8 * jj + 4 * mt], h[8 * jj + 4 * mt + 1],
                                       h[8 * jj + 4 * mt + 2], h[8 * jj + 4 * mt + 3]};
                mma<KBF>(s[pp][mt], a, qf[2 * grp + jj][0], qf[2 * grp + jj][1]);
              }
          }
          if constexpr (K2) {
            if (KF == Fmt::T3P || !in_p0) {
              const int pg_ = grp - KP1::kFirst / 32;
              decode_group<KP1::kKind, false>(kt_cur.w1 + pg_ * KP1::kBits, p.klo[1][0],
                                              p.klo[1][1], p.khi[1][0], p.khi[1][1],
                                              kt_cur.qs[0], h);
#pragma unroll
              for (int jj = 0; jj < 2; ++jj)
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                  const uint32_t a[4] = {h[8 * jj + 4 * mt], h[8 * jj + 4 * mt + 1],
                                         h[8 * jj + 4 * mt + 2], h[8 * jj + 4 * mt + 3]};
                  if constexpr (KF == Fmt::T3P)
                    mma<KBF>(s2[pp][mt], a, qf2[2 * grp + jj][0], qf2[2 * grp + jj][1]);
                  else
                    mma<KBF>(s2[pp][mt], a, qf[2 * grp + jj][0], qf[2 * grp + jj][1]);
                }
            }
          }
        }
      }
      // per-token scaling and masking; c: 0,1 → token 16mt + g, heads 2t, 2t+1; 2,3 → +8
#pragma unroll
      for (int pp = 0; pp < NP; ++pp) {
        const int nvalid = seq - (pg + pp * NW) * kPageTokens;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int k = 2 * mt + (c >> 1);  // token g + 8k
            float v = s[pp][mt][c];
            if constexpr (is_turbo(KF)) {
              v *= kts[pp].sc[k][0];
              if constexpr (K2) v += s2[pp][mt][c] * kts[pp].sc[k][1];
            }
            s[pp][mt][c] = v;
          }
        if (nvalid < kPageTokens) {  // the last page only (warp-uniform)
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int c = 0; c < 4; ++c)
              if (g + 8 * (2 * mt + (c >> 1)) >= nvalid) s[pp][mt][c] = -INFINITY;
        }
      }
    }  // PART & 1
    if constexpr ((PART & 2) != 0) {
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int pp = 0; pp < NP; ++pp)
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int c = 0; c < 4; ++c) mx[c & 1] = fmaxf(mx[c & 1], s[pp][mt][c]);
      if constexpr (KI8) {  // scores still without kscale (> 0): the max commutes with it
        mx[0] *= kscale[0];
        mx[1] *= kscale[1];
      }
      // The running max rarely moves after the first pages. When no score exceeds it
      // (one warp vote), the update below would give alpha = 1 and the same max: skip the
      // shuffle reduction too (bit-identical results).
      if (__any_sync(0xffffffffu, mx[0] > m_run[0] || mx[1] > m_run[1])) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 4));
          mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 8));
          mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xffffffffu, mx[c], 16));
        }
        float alpha[2];
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float mn = fmaxf(m_run[c], mx[c]);
          alpha[c] = fast_exp2(m_run[c] - mn);
          m_run[c] = mn;
          l_run[c] *= alpha[c];
        }
        // skip the rescale warp-uniformly when nothing moved
        if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f)) {
          if constexpr (kSplitCols) {  // columns 2t, 2t+1 ≥ 4: heads 2t − 4, 2t − 3
            const float s0 = __shfl_xor_sync(0xffffffffu, alpha[0], 2);
            const float s1 = __shfl_xor_sync(0xffffffffu, alpha[1], 2);
            const float a0 = t < 2 ? alpha[0] : s0, a1 = t < 2 ? alpha[1] : s1;
#pragma unroll
            for (int i = 0; i < KS; ++i) {
              o[i][0] *= a0; o[i][1] *= a1; o[i][2] *= a0; o[i][3] *= a1;
            }
          } else {
#pragma unroll
            for (int i = 0; i < KS; ++i) {
              o[i][0] *= alpha[0]; o[i][1] *= alpha[1]; o[i][2] *= alpha[0]; o[i][3] *= alpha[1];
            }
          }
        }
      }
      if constexpr (VI8) {
#pragma unroll
        for (int pp = 0; pp < NP; ++pp) {
          const VT& vt_cur = vts[pp];
          update_vbound(fmaxf(fmaxf(vt_cur.sc[0][0], vt_cur.sc[1][0]),
                              fmaxf(vt_cur.sc[2][0], vt_cur.sc[3][0])));
          // Q of token g + 8k, heads 2t | 2t+1 (u16 pair; 2^23 + Q as a float holds Q in its low
          // bits), transposed to head g, tokens 8k + 2t | 8k + 2t + 1
          uint32_t x[4];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              const int k = 2 * mt + hh;
              const float p0 = fast_exp2(logit(s[pp][mt][2 * hh], 0));
              const float p1 = fast_exp2(logit(s[pp][mt][2 * hh + 1], 1));
              l_run[0] += p0;
              l_run[1] += p1;
              const float f = vt_cur.sc[k][0] * vqinv;
              x[k] = movtrans(prmt(__float_as_uint(fmaf(p0, f, 8388608.f)),
                                   __float_as_uint(fmaf(p1, f, 8388608.f)), 0x5410));
            }
          // B fragments: k = 16h + 4t + j ↔ token 16h + 8(j>>1) + 2t + (j&1) (formats.cuh)
          const uint32_t bh0 = prmt(x[0], x[1], 0x7531), bl0 = prmt(x[0], x[1], 0x6420);
          const uint32_t bh1 = prmt(x[2], x[3], 0x7531), bl1 = prmt(x[2], x[3], 0x6420);
          if constexpr (kSplitCols) {
            // B columns 0-3 (lanes g < 4): Q1 bytes of heads 0-3; columns 4-7: their Q2 bytes
            // (from lanes g − 4). One product per value: o columns 0-3 gather 256·ΣTQ1, columns
            // 4-7 ΣTQ2 (scales per lane), added together once at the end of the piece.
            const uint32_t q0 = __shfl_xor_sync(0xffffffffu, bl0, 16);
            const uint32_t q1 = __shfl_xor_sync(0xffffffffu, bl1, 16);
            const uint32_t b0 = g < 4 ? bh0 : q0, b1 = g < 4 ? bh1 : q1;
            const float osc = t < 2 ? 256.f * vscale : vscale;
#pragma unroll
            for (int grp = 0; grp < D / 32; ++grp) {
              uint32_t v1[8], v2[8];
              group_i8<(kDiag & 1) != 0, true>(vt_cur.w0 + 3 * grp, p.v1tab, p.vi8, v1, v2);
#pragma unroll
              for (int mt = 0; mt < 2; ++mt) {
                const uint32_t A1[4] = {v1[4 * mt], v1[4 * mt + 1], v1[4 * mt + 2],
                                        v1[4 * mt + 3]};
                int d[4] = {0, 0, 0, 0};
                imma_su(d, A1, b0, b1);
#pragma unroll
                for (int c = 0; c < 4; ++c)
                  o[2 * grp + mt][c] = fmaf(float(d[c]), osc, o[2 * grp + mt][c]);
              }
            }
            continue;
          }
#pragma unroll
          for (int grp = 0; grp < D / 32; ++grp) {
            uint32_t v1[8], v2[8];
            group_i8<(kDiag & 1) != 0, kOneTab>(vt_cur.w0 + 3 * grp, p.v1tab, p.vi8, v1, v2);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              const uint32_t A1[4] = {v1[4 * mt], v1[4 * mt + 1], v1[4 * mt + 2], v1[4 * mt + 3]};
              imma_su(va1[2 * grp + mt], A1, bh0, bh1);
              imma_su(va2[2 * grp + mt], A1, bl0, bl1);
              if constexpr (kTab == 2) {
                const uint32_t A2[4] = {v2[4 * mt], v2[4 * mt + 1], v2[4 * mt + 2],
                                        v2[4 * mt + 3]};
                imma_su(va2[2 * grp + mt], A2, bh0, bh1);
              }
            }
          }
          vflush();
        }
      } else {
#pragma unroll
      for (int pp = 0; pp < NP; ++pp) {
        const VT& vt_cur = vts[pp];
        // P' = p·(value scalar), fp16/bf16, transposed into B fragments pf[kt][0..1]
        uint32_t pf[2][2], pf2[V2 ? 2 : 1][2];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int k = 2 * mt + hh;
            // q8_0/q4_0 (fp16 P' = p): p·4096 (l likewise; the factor cancels in o/l) keeps
            // probabilities far below the running max normal fp16 numbers down to 1.5e-8
            constexpr float kLog2PS = (!is_turbo(VF) && !VBF) ? 12.f : 0.f;
            const float p0 = fast_exp2(logit(s[pp][mt][2 * hh], 0) + kLog2PS);
            const float p1 = fast_exp2(logit(s[pp][mt][2 * hh + 1], 1) + kLog2PS);
            l_run[0] += p0;
            l_run[1] += p1;
            float a0 = p0, a1 = p1;
            if constexpr (is_turbo(VF)) {
              const float nv = vt_cur.sc[k][0];
              a0 *= nv;
              a1 *= nv;
            }
            uint32_t x;
            if constexpr (VBF) {
              __nv_bfloat162 bb = __floats2bfloat162_rn(a0, a1);
              x = *reinterpret_cast<uint32_t*>(&bb);
            } else {
              x = h2u(__floats2half2_rn(a0, a1));
            }
            pf[mt][hh] = movtrans(x);
            if constexpr (V2) {
              const float nv = vt_cur.sc[k][1];
              pf2[mt][hh] = movtrans(h2u(__floats2half2_rn(p0 * nv, p1 * nv)));
            }
          }
        // ---- O^T[mt] += V^T(mt, kt) · P'^T(kt)
#pragma unroll
        for (int grp = 0; grp < D / 32; ++grp) {
          uint32_t h[16];
          const bool in_p0 = grp * 32 < VP0::kFirst + VP0::kElems;
          if (kDiag == 1) {
#pragma unroll
            for (int j = 0; j < 16; ++j) h[j] = vt_cur.w0[3 * grp + j % 3];
          } else if (in_p0) {
            decode_group<VP0::kKind, true>(vt_cur.w0 + (grp - VP0::kFirst / 32) * VP0::kBits,
                                           vlo[0][0], vlo[0][1], vhi[0][0], vhi[0][1],
                                           vt_cur.qs[grp % VT::kNB], h);
          } else if constexpr (VP1::kExists) {
            decode_group<VP1::kKind, true>(vt_cur.w1 + (grp - VP1::kFirst / 32) * VP1::kBits,
                                           vlo[1][0], vlo[1][1], vhi[1][0], vhi[1][1],
                                           vt_cur.qs[0], h);
          }
#pragma unroll
          for (int jm = 0; jm < 2; ++jm)
#pragma unroll
            for (int kt = 0; kt < 2; ++kt) {
              const uint32_t a[4] = {h[8 * jm + 4 * kt], h[8 * jm + 4 * kt + 1],
                                     h[8 * jm + 4 * kt + 2], h[8 * jm + 4 * kt + 3]};
              if (V2 && !in_p0)
                mma<VBF>(o[2 * grp + jm], a, pf2[kt][0], pf2[kt][1]);
              else
                mma<VBF>(o[2 * grp + jm], a, pf[kt][0], pf[kt][1]);
            }
        }
      }
      }
    }  // PART & 2
  };

  // One page from the ring: wait for it, refill the slot freed last (next_tile(): the tile
  // kStages − 1 pages ahead) and process it.
  int slot = 0, fill = kStages - 1;  // slot being read, slot being filled (no modulo)
  auto ring_step = [&](bool refill, auto&& next_tile, int pg) {
    asm volatile("cp.async.wait_group %0;" ::"n"(kStages - 2));
    __syncwarp();
    if (refill) issue(next_tile(), fill);
    asm volatile("cp.async.commit_group;");
    const uint8_t* tp = ring + slot * SB;
    slot = slot == kStages - 1 ? 0 : slot + 1;
    fill = fill == kStages - 1 ? 0 : fill + 1;
    KT kt;
    VT vt;
    kt.template load<false>(tp, lane, false);
    vt.template load<false>(tp + tile_bytes(KF, D), lane, true);
    float s[1][2][4];
    process.template operator()<1, 3>(&kt, &vt, pg, s);
  };

  // ---- the split grid: CTA (split, KV head, sequence), its warps take every NW-th page
  if constexpr (!kStream) {
  const int split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  seq = p.seq_lens[b];
  const int np = (seq + kPageTokens - 1) / kPageTokens;
  const int pg0 = split * p.pages_per_split;
  const int pg1 = min(np, pg0 + p.pages_per_split);
  const int* bt = p.block_table + size_t(b) * p.bt_stride;
  const size_t head_off = size_t(kvh) * head_bytes;
  auto tile_ptr = [&](int pg) { return pool + size_t(bt[pg]) * p.page_bytes + head_off; };
  const int first = pg0 + warp;
  const int n_my = first < pg1 ? (pg1 - first + NW - 1) / NW : 0;
  // The ring's first pages are requested before the query preparation (they do not depend on it).
  if constexpr (kRing) {
#pragma unroll
    for (int it = 0; it < kStages - 1; ++it) {
      if (it < n_my) issue(tile_ptr(first + it * NW), it);
      asm volatile("cp.async.commit_group;");
    }
  }
  prep_query(b, kvh);
  reset_state();

  if constexpr (kRing) {
    for (int it = 0; it < n_my; ++it)
      ring_step(it + kStages - 1 < n_my, [&] { return tile_ptr(first + (it + kStages - 1) * NW); },
                first + it * NW);
    asm volatile("cp.async.wait_all;");
    __syncthreads();
  } else {
    for (int pg = pg0 + warp; pg < pg1; pg += NW) {
      KT kt;
      VT vt;
      const uint8_t* tp = tile_ptr(pg);
      kt.template load<true>(tp, lane, false);
      vt.template load<true>(tp + p.tile_k, lane, true);
      float s[1][2][4];
      process.template operator()<1, 3>(&kt, &vt, pg, s);
    }
  }

  end_piece();
  // ---- merge the warps of this CTA, write one partial per query head
  extern __shared__ __align__(16) uint8_t dsm[];
  auto sm_ml = reinterpret_cast<float(*)[8][2]>(dsm);
  auto sm_o = reinterpret_cast<float(*)[8][D]>(dsm + NW * 8 * 2 * sizeof(float));
  if (g == 0) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      sm_ml[warp][2 * t + c][0] = m_run[c];
      sm_ml[warp][2 * t + c][1] = l_run[c];
    }
  }
#pragma unroll
  for (int mt = 0; mt < KS; ++mt)
#pragma unroll
    for (int c = 0; c < 4; ++c) sm_o[warp][2 * t + (c & 1)][16 * mt + g + 8 * (c >> 1)] = o[mt][c];
  __syncthreads();
  for (int idx = threadIdx.x; idx < p.G * D; idx += NW * 32) {
    const int h = idx / D, d = idx % D;
    float M = -1e30f;
#pragma unroll
    for (int w = 0; w < NW; ++w) M = fmaxf(M, sm_ml[w][h][0]);
    float acc = 0.f, L = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float e = exp2f(sm_ml[w][h][0] - M);
      acc += e * sm_o[w][h][d];
      L += e * sm_ml[w][h][1];
    }
    const size_t row = (size_t(b) * p.Hq + kvh * p.G + h) * p.splits + split;
    p.part_o[row * D + d] = acc;
    if (d == 0) {
      p.part_ml[row * 2] = M;
      p.part_ml[row * 2 + 1] = L;
    }
  }
  if (!p.out) return;
  // ---- fused split merge: the last CTA of this (sequence, KV head) finishes its G rows
  __shared__ int is_last;
  if (p.splits > 1) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      int* cnt = p.counters + size_t(b) * p.Hkv + kvh;
      is_last = atomicAdd(cnt, 1) == p.splits - 1;
      if (is_last) *cnt = 0;  // ready for the next call
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
  } else {
    __syncthreads();
  }
  constexpr int E = D / 32;
  for (int h = warp; h < p.G; h += NW) {
    const size_t row = size_t(b) * p.Hq + kvh * p.G + h;
    const float* ml = p.part_ml + row * p.splits * 2;
    float M = -1e30f;
    for (int s = 0; s < p.splits; ++s) M = fmaxf(M, __ldcg(ml + 2 * s));
    float u[E] = {}, L = 0.f;
    for (int s = 0; s < p.splits; ++s) {
      const float w = exp2f(__ldcg(ml + 2 * s) - M);
      L += w * __ldcg(ml + 2 * s + 1);
      const float* po = p.part_o + (row * p.splits + s) * D + E * lane;
#pragma unroll
      for (int k = 0; k < E; ++k) u[k] += w * __ldcg(po + k);
    }
    float* dst = p.out + row * D + E * lane;
    if (p.vsigns) {
      ak::fwht_warp<E>(u, lane);
      const float sc = (L > 0.f ? 1.0f / L : 0.f) * rsqrtf(float(D));
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k] * sc * p.vsigns[E * lane + k];
    } else {
      const float sc = L > 0.f ? 1.0f / L : 0.f;
#pragma unroll
      for (int k = 0; k < E; ++k) dst[k] = u[k] * sc;
    }
  }
  } else {
  // ---- stream mode (see stream_smem_bytes and stream_range): the units are warps
  const int gw = blockIdx.x * NW + warp;
  StreamRange rg;
  if (!stream_range<D>(p, gw, gridDim.x * NW, rg)) return;
  SegCursor cur = rg.c;
  TileFetcher fetch{rg.c};
  int seg0 = rg.seg0;
  const int n_my = rg.n;
#pragma unroll
  for (int it = 0; it < kStages - 1; ++it) {
    if (it < n_my) issue(fetch.next(p, head_bytes), it);
    asm volatile("cp.async.commit_group;");
  }
  // outer loop: the pieces of segments in this warp's range; inner loop: their pages (the hot
  // loop stays small: query preparation and the piece's merge are outside it)
  for (int it = 0; it < n_my;) {
    seq = p.seq_lens[cur.b];
    prep_query(cur.b, cur.kvh);  // (its loads overlap the pages in flight)
    reset_state();
    const int n_here = min(cur.np - cur.pg, n_my - it);
    for (int k = 0; k < n_here; ++k)
      ring_step(it + k + kStages - 1 < n_my, [&] { return fetch.next(p, head_bytes); },
                cur.pg + k);
    it += n_here;
    end_piece();
    stream_finish<D>(p, o, l_run, m_run, rg, cur, seg0, gw, scratch);
    // next segment (page 0)
    cur.pg = cur.np - 1;
    cur.advance(p);
    seg0 = rg.r0 + it;
  }
  asm volatile("cp.async.wait_all;");
  }
}

}  // namespace dk
}  // namespace tq::cuda
