// Append: rotate, quantize and pack new tokens into their pages (the GPU layout of formats.cuh).
// One CTA of 8 warps per (sequence, page, KV head): the page's K and V tiles are built in
// shared memory (bitwise OR of each code into its lane word) and written back with 16-byte
// stores. One warp per vector; lane l holds elements l, l+32, ...; the randomised Hadamard
// transform runs across the warp (5 shuffle stages + in-register stages), dense rotations
// (split types, the QJL sketch) read a transposed matrix so that lanes read consecutive floats.
// Quantization matches the CPU codecs: turbo = count of Lloyd-Max boundaries below u_j; q8_0 /
// q4_0 as ggml quantize_row_q8_0 / q4_0_ref; fp8_e4m3 as codecs/baseline_codecs.cpp (IEEE
// divisions, RNE saturating conversion: the same bytes).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "cuda/consts.cuh"
#include "cuda/formats.cuh"

// #pragma unroll in host+device functions (the host compiler does not know it).
#ifdef __CUDA_ARCH__
#define TQ_UNROLL _Pragma("unroll")
#else
#define TQ_UNROLL
#endif

namespace tq::cuda {

struct AppendParams {
  uint8_t* pool;
  const int* block_table;
  int max_pages;
  const int* start;
  const uint16_t* k;  // bf16 [B][n_new][Hkv][D]
  const uint16_t* v;
  int n_new, Hkv;
  long long page_bytes;
  int tile_k, tile_v;
  FormatConsts kc, vc;
};

namespace ak {

constexpr int kWarps = 8;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Phase 1 (one warp per vector; lane l holds the E = D/32 consecutive elements 4l.. of a
// 128-dim vector, E·l.. in general): rotate and quantize, write one code byte per element to
// shared memory (bf16: the 16-bit value), the per-token scalars straight to the page.
// Phase 2 (all threads): build each lane word of the tiles from the code bytes and store it,
// coalesced; a partially filled page ORs into its existing words.

// FWHT of a vector spread over L consecutive lanes (lane group), E consecutive elements per lane:
// in-register stages, then log2(L) shuffle stages within the group (unnormalised).
template <int E, int L>
__device__ __forceinline__ void fwht_group(float (&u)[E], int lane) {
#pragma unroll
  for (int h = 1; h < E; h <<= 1)
#pragma unroll
    for (int k = 0; k < E; ++k)
      if (!(k & h)) {
        const float a = u[k], b = u[k + h];
        u[k] = a + b;
        u[k + h] = a - b;
      }
#pragma unroll
  for (int hb = 1; hb < L; hb <<= 1) {
    const float sg = (lane & hb) ? -1.f : 1.f;
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] = fmaf(sg, u[k], __shfl_xor_sync(0xffffffffu, u[k], hb));
  }
}

// The same over the whole warp (32 lanes × E consecutive elements).
template <int E>
__device__ __forceinline__ void fwht_warp(float (&u)[E], int lane) {
  fwht_group<E, 32>(u, lane);
}

// Lloyd-Max index = number of the NB sorted boundaries below u (NB = 3, 7, 15), by a binary
// search over boundaries held in registers (selects, no memory access).
template <int NB>
__device__ __forceinline__ int count_below(float u, const float (&b)[NB]) {
  static_assert(NB == 3 || NB == 7 || NB == 15, "2^L - 1 boundaries");
  if constexpr (NB == 3) {
    const bool c0 = b[1] < u;
    const bool c1 = (c0 ? b[2] : b[0]) < u;
    return 2 * c0 + c1;
  } else if constexpr (NB == 7) {
    const bool c0 = b[3] < u;
    const bool c1 = (c0 ? b[5] : b[1]) < u;
    const float m2 = c0 ? (c1 ? b[6] : b[4]) : (c1 ? b[2] : b[0]);
    const bool c2 = m2 < u;
    return 4 * c0 + 2 * c1 + c2;
  } else {
    const bool c0 = b[7] < u;
    const bool c1 = (c0 ? b[11] : b[3]) < u;
    const float m2 = c0 ? (c1 ? b[13] : b[9]) : (c1 ? b[5] : b[1]);
    const bool c2 = m2 < u;
    const float q0 = c2 ? (c1 ? b[6] : b[2]) : (c1 ? b[4] : b[0]);
    const float q1 = c2 ? (c1 ? b[14] : b[10]) : (c1 ? b[12] : b[8]);
    const bool c3 = (c0 ? q1 : q0) < u;
    return 8 * c0 + 4 * c1 + 2 * c2 + c3;
  }
}

// Lloyd-Max index = number of boundaries below u, through the cell table in shared memory.
__device__ __forceinline__ int quantize_cells(float u, const float2* cells, float qinv,
                                              float qoff) {
  // round(x − 1/2) = ⌊x⌋ except exactly at a cell edge, where either neighbour gives the count
  const float y = fmaf(u, qinv, qoff - 0.5f);
  int ci = __float_as_int(y + 12582912.0f) - 0x4B400000;
  ci = min(max(ci, 0), kQCells - 1);
  const float2 e = cells[ci];
  return __float_as_int(e.y) + (e.x < u ? 1 : 0);  // y holds the count's int bits
}

template <int NB>
__device__ __forceinline__ int quantize(float u, const float* bounds) {
  int idx = 0;
#pragma unroll
  for (int i = 0; i < NB; ++i) idx += bounds[i] < u ? 1 : 0;
  return idx;
}
__device__ __forceinline__ int quantize_n(float u, const float* bounds, int nb) {
  switch (nb) {
    case 1: return quantize<1>(u, bounds);
    case 3: return quantize<3>(u, bounds);
    case 7: return quantize<7>(u, bounds);
    default: return quantize<15>(u, bounds);
  }
}

// turbo norms (scalar_slot order); q8_0/q4_0 scales: [block][token]
__device__ __forceinline__ void store_scalar(uint8_t* gtile, int codes_b, int a, int tok,
                                             float v) {
  reinterpret_cast<__half*>(gtile + codes_b + a * 64)[scalar_slot(tok)] = __float2half_rn(v);
}
__device__ __forceinline__ void store_scale(uint8_t* gtile, int codes_b, int a, int tok,
                                            float v) {
  reinterpret_cast<__half*>(gtile + codes_b + a * 64)[tok] = __float2half_rn(v);
}

// Sum over the 32/E·... lanes of one 32-dim block (E·8 lanes hold 32 dims when E = 4).
template <int LANES>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = LANES / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Row stride (bytes) of the per-page code bytes [tok][dim] in shared memory: 16 bytes of padding
// per token so that the word-building gathers of phase 2 (lanes = tokens g, g+1, ...) do not
// all hit one bank (a 128-byte row is exactly the 32 banks). bf16 keeps [tok][dim] of 16 bits.
TQ_HD constexpr int code_row(Fmt f, int D) { return f == Fmt::kBF16 ? D : D + 16; }

// GPU code of a 4-bit Lloyd-Max index: sign (1 = negative) and magnitude index of |c[8+m]|.
TQ_HD uint32_t lut4_code(int idx) { return idx < 8 ? 8u | uint32_t(7 - idx) : uint32_t(idx - 8); }

template <Fmt F, int D>
__device__ void encode_vector(const float (&x)[D / 32], uint8_t* codes, uint16_t* raw16,
                              const uint16_t (&raw)[D / 32], uint8_t* gtile, int tok,
                              const FormatConsts& c, const float (&sg)[D / 32], float* stage,
                              const float2* cells, int lane) {
  constexpr int E = D / 32;
  constexpr int CB = codes_bytes(F, D);
  constexpr int RS = code_row(F, D);
  const int j0 = E * lane;  // first element of this lane
  if constexpr (F == Fmt::kBF16) {
#pragma unroll
    for (int k = 0; k < E; ++k) raw16[tok * D + j0 + k] = raw[k];
  } else if constexpr (F == Fmt::kQ8_0 || F == Fmt::kQ4_0) {
    constexpr int LB = 32 / E;  // lanes per 32-dim block
    uint32_t q[E];
    float d;
    if constexpr (F == Fmt::kQ8_0) {
      float a = 0.f;
#pragma unroll
      for (int k = 0; k < E; ++k) a = fmaxf(a, fabsf(x[k]));
      a = group_max<LB>(a);
      d = a / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
#pragma unroll
      for (int k = 0; k < E; ++k) q[k] = uint32_t(int(roundf(x[k] * id))) & 0xFFu;
    } else {
      // the first element of largest magnitude, with its sign (ggml: d = max / −8)
      float a = -1.f, mx = 0.f;
      int who = 0;
#pragma unroll
      for (int k = 0; k < E; ++k)
        if (fabsf(x[k]) > a) { a = fabsf(x[k]); mx = x[k]; who = j0 + k; }
#pragma unroll
      for (int o = LB / 2; o > 0; o >>= 1) {
        const float a2 = __shfl_xor_sync(0xffffffffu, a, o);
        const float m2 = __shfl_xor_sync(0xffffffffu, mx, o);
        const int w2 = __shfl_xor_sync(0xffffffffu, who, o);
        if (a2 > a || (a2 == a && w2 < who)) { a = a2; mx = m2; who = w2; }
      }
      d = mx / -8.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
#pragma unroll
      for (int k = 0; k < E; ++k) q[k] = uint32_t(min(15, int(x[k] * id + 8.5f)));
    }
#pragma unroll
    for (int k = 0; k < E; ++k) codes[tok * RS + j0 + k] = uint8_t(q[k]);
    if (lane % LB == 0) store_scale(gtile, CB, j0 / 32, tok, d);
  } else if constexpr (F == Fmt::kFp8E4M3) {
    // s = fp16(amax/448) of the whole vector, codes E4M3FN(x/s) with the stored (fp16) s. The
    // divisions are IEEE (__fdiv_rn, whatever the fast-math flags), the conversion rounds to
    // nearest even and saturates at ±448 (sm_89+: cvt.rn.satfinite; cuda_fp8.h's software
    // path elsewhere), as codecs/fp8.h's f32_to_e4m3fn_sat.
    float a = 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k) a = fmaxf(a, fabsf(x[k]));
    a = warp_max(a);
    const __half s16 = __float2half_rn(__fdiv_rn(a, 448.0f));
    const float s = __half2float(s16);
#pragma unroll
    for (int k = 0; k < E; ++k)
      codes[tok * RS + j0 + k] =
          s > 0.f ? uint8_t(__nv_cvt_float_to_fp8(__fdiv_rn(x[k], s), __NV_SATFINITE, __NV_E4M3))
                  : uint8_t(0);
    if (lane == 0) reinterpret_cast<__half*>(gtile + CB)[tok] = s16;
  } else if constexpr (is_split(F)) {
    constexpr int NH = D / 4, NL = D - D / 4;
    const bool hi = j0 < NH;  // whole lanes belong to one part (E divides D/4)
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k) ss += x[k] * x[k];
    float s_hi = hi ? ss : 0.f, s_lo = hi ? 0.f : ss;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      s_hi += __shfl_xor_sync(0xffffffffu, s_hi, o);
      s_lo += __shfl_xor_sync(0xffffffffu, s_lo, o);
    }
    const float n_hi = sqrtf(s_hi), n_lo = sqrtf(s_lo);
    const float inv = hi ? (n_hi > 0.f ? 1.0f / n_hi : 0.f) : (n_lo > 0.f ? 1.0f / n_lo : 0.f);
#pragma unroll
    for (int k = 0; k < E; ++k) stage[j0 + k] = x[k] * inv;
    __syncwarp();
    const int part = hi ? 0 : 1;
    const int n = hi ? NH : NL, o0 = hi ? j0 : j0 - NH;
    const float* M = c.rot_t[part];
    const float* xs = stage + (hi ? 0 : NH);
    float u[E] = {};
    for (int i = 0; i < n; ++i) {
      const float xi = xs[i];
#pragma unroll
      for (int k = 0; k < E; ++k) u[k] += M[i * n + o0 + k] * xi;
    }
    const bool zero = hi ? n_hi == 0.f : n_lo == 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k)
    {
      const int q = zero ? 0 : quantize_n(u[k], c.bounds[part], c.nbounds[part]);
      codes[tok * RS + j0 + k] =
          uint8_t(part == 0 && F == Fmt::kTurbo3_5 ? lut4_code(q) : uint32_t(q));
    }
    __syncwarp();
    if (lane == 0) {
      store_scalar(gtile, CB, 0, tok, n_hi);
      store_scalar(gtile, CB, 1, tok, n_lo);
    }
  } else {  // T2, T3, T4, T3P: one randomised Hadamard rotation of the whole vector
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k) ss += x[k] * x[k];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float n = sqrtf(ss);
    const float inv = n > 0.f ? 1.0f / n : 0.f;
    float u[E];
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] = x[k] * inv * sg[k];
    fwht_warp<E>(u, lane);
    const float sc = 1.0f / sqrtf(float(D));
    int idx[E];
#pragma unroll
    for (int k = 0; k < E; ++k) {
      u[k] *= sc;
      idx[k] = n > 0.f ? quantize_cells(u[k], cells, c.qinv, c.qoff) : 0;
      if constexpr (F == Fmt::kTurbo4) idx[k] = int(lut4_code(idx[k]));
    }
    if constexpr (F == Fmt::kTurbo3p) {
      const float n16 = __half2float(__float2half_rn(n));
      float g2 = 0.f;
#pragma unroll
      for (int k = 0; k < E; ++k) {
        const float r = n * u[k] - n16 * c.cent[0][idx[k]];
        stage[j0 + k] = r;
        g2 += r * r;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) g2 += __shfl_xor_sync(0xffffffffu, g2, o);
      __syncwarp();
      float acc[E] = {};
      for (int j = 0; j < D; ++j) {
        const float rj = stage[j];
#pragma unroll
        for (int k = 0; k < E; ++k) acc[k] += c.St[j * D + j0 + k] * rj;
      }
#pragma unroll
      for (int k = 0; k < E; ++k)
        codes[tok * RS + j0 + k] = uint8_t(idx[k] | ((n > 0.f && acc[k] >= 0.f) ? 0x80 : 0));
      __syncwarp();
      if (lane == 0) {
        store_scalar(gtile, CB, 0, tok, n);
        store_scalar(gtile, CB, 1, tok, n > 0.f ? sqrtf(g2) : 0.f);
      }
    } else {
      uint32_t packed = 0;
      if constexpr (E == 4) {
        packed = uint32_t(idx[0]) | uint32_t(idx[1]) << 8 | uint32_t(idx[2]) << 16 |
                 uint32_t(idx[3]) << 24;
        *reinterpret_cast<uint32_t*>(codes + tok * RS + j0) = packed;
      } else {
#pragma unroll
        for (int k = 0; k < E; ++k) codes[tok * RS + j0 + k] = uint8_t(idx[k]);
      }
      if (lane == 0) store_scalar(gtile, CB, 0, tok, n);
    }
  }
}

// Code of lane element i of lane l, from the code bytes [tok][dim] (row stride RS). I8: int8
// map.
template <bool IsV, int RS, bool I8 = false>
TQ_HD uint32_t code_at(const uint8_t* codes, int lane, int i) {
  int tok, dim;
  elem_to_td(IsV, lane, i, tok, dim, I8);
  return codes[tok * RS + dim];
}

// Index into the code bytes [tok][dim] of element 8·blk + r of a lane: base(blk) + off(r).
template <bool IsV, int RS, bool I8 = false>
TQ_HD int blk_base(int lane, int blk) {
  int tok, dim;
  elem_to_td(IsV, lane, 8 * blk, tok, dim, I8);
  return tok * RS + dim;
}
template <bool IsV, int RS, bool I8 = false>
TQ_HD constexpr int elem_off(int r) {
  return I8 ? (IsV ? (8 * ((r >> 1) & 1) + (r & 1)) * RS + 8 * (r >> 2)
                   : 8 * (r >> 2) * RS + (r & 3))
       : IsV ? (8 * (r >> 2) + (r & 1)) * RS + 8 * ((r >> 1) & 1)
             : 8 * ((r >> 1) & 1) * RS + 8 * (r >> 2) + (r & 1);
}

// Word w (within its part) of lane l.
template <Fmt F, int D, int P, bool IsV>
TQ_HD uint32_t build_word(const uint8_t* codes, const uint16_t* raw16, int lane, int w) {
  constexpr Kind K = part_kind(F, P);
  constexpr int bits = kind_bits(K), first = part_first(F, P, D);
  constexpr bool I8 = i8_layout(F, IsV);
  constexpr int RS = code_row(F, D);  // row stride of the code bytes
  const int G = w / bits, wg = w % bits, e0 = first + 32 * G, b0 = e0 >> 3;
  uint32_t x = 0;
  if constexpr (K == Kind::BF16) {
    int tok, dim;
    elem_to_td(IsV, lane, e0 + 2 * wg, tok, dim);
    const uint32_t lo = raw16[tok * D + dim];
    elem_to_td(IsV, lane, e0 + 2 * wg + 1, tok, dim);
    return lo | uint32_t(raw16[tok * D + dim]) << 16;
  } else if constexpr (K == Kind::LUT3 || K == Kind::LUT4) {
    // LUT4 code bytes are already (negative << 3 | magnitude), so that the zero byte of an
    // empty slot adds no bits to a partially filled page.
    if (K == Kind::LUT4 && wg == 3) {
TQ_UNROLL
      for (int q = 0; q < 4; ++q) {
        const int base = blk_base<IsV, RS, I8>(lane, b0 + q);
TQ_UNROLL
        for (int r = 0; r < 8; ++r) {
          const int ee = 8 * q + r;
          x |= ((uint32_t(codes[base + elem_off<IsV, RS, I8>(r)]) >> 3) & 1u)
               << ((15 - ee / 2) + 16 * (ee & 1));
        }
      }
      return x;
    }
    const int bm = blk_base<IsV, RS, I8>(lane, b0 + wg), bp = blk_base<IsV, RS, I8>(lane, b0 + 3);
TQ_UNROLL
    for (int pos = 0; pos < 8; ++pos) {
      x |= (uint32_t(codes[bm + elem_off<IsV, RS, I8>(pos)]) & 7u) << (4 * pos);
      x |= ((uint32_t(codes[bp + elem_off<IsV, RS, I8>(pos)]) >> wg) & 1u) << (4 * pos + 3);
    }
  } else if constexpr (K == Kind::LUT2) {
TQ_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int base = blk_base<IsV, RS, I8>(lane, b0 + 2 * wg + h);
TQ_UNROLL
      for (int pos = 0; pos < 8; ++pos)
        x |= (uint32_t(codes[base + elem_off<IsV, RS, I8>(pos)]) & 3u) << (4 * pos + 2 * h);
    }
  } else if constexpr (K == Kind::LUT1) {  // T3P signs: bit 7 of the code byte
TQ_UNROLL
    for (int kk = 0; kk < 4; ++kk) {
      const int base = blk_base<IsV, RS, I8>(lane, b0 + kk);
TQ_UNROLL
      for (int pos = 0; pos < 8; ++pos)
        x |= (uint32_t(codes[base + elem_off<IsV, RS, I8>(pos)]) >> 7) << (4 * pos + kk);
    }
  } else if constexpr (K == Kind::Q8 || K == Kind::FP8) {
TQ_UNROLL
    for (int b = 0; b < 4; ++b) x |= code_at<IsV, RS, I8>(codes, lane, e0 + 4 * wg + b) << (8 * b);
  } else if constexpr (K == Kind::Q4) {
    const int base = blk_base<IsV, RS, I8>(lane, b0 + wg);
TQ_UNROLL
    for (int ee = 0; ee < 8; ++ee)
      x |= uint32_t(codes[base + elem_off<IsV, RS, I8>(ee)]) << (4 * ((ee >> 1) + 4 * (ee & 1)));
  }
  return x;
}

template <Fmt F, int D, int P, bool IsV>
__device__ __forceinline__ void write_part(const uint8_t* codes, const uint16_t* raw16,
                                           uint8_t* gtile, bool full) {
  if constexpr (P < nparts(F)) {
    constexpr int W = part_words(F, P, D), U = unit_words(W);
    uint32_t* dst = reinterpret_cast<uint32_t*>(gtile + part_offset_bytes(F, P, D));
    // thread → (lane, unit of U words): a warp builds the same words of all 32 lanes (their
    // code-byte gathers fall in distinct banks with the padded rows) and stores 32 whole
    // units, coalesced
    for (int o = threadIdx.x; o < (W / U) * 32; o += blockDim.x) {
      const int lane = o % 32, u = o / 32;
      uint32_t x[U];
#pragma unroll
      for (int k = 0; k < U; ++k) x[k] = build_word<F, D, P, IsV>(codes, raw16, lane, U * u + k);
      uint32_t* d = dst + (u * 32 + lane) * U;
      if (!full) {
#pragma unroll
        for (int k = 0; k < U; ++k) x[k] |= d[k];
      }
      if constexpr (U == 4) {
        *reinterpret_cast<uint4*>(d) = make_uint4(x[0], x[1], x[2], x[3]);
      } else if constexpr (U == 2) {
        *reinterpret_cast<uint2*>(d) = make_uint2(x[0], x[1]);
      } else {
        d[0] = x[0];
      }
    }
  }
}

template <Fmt KF, Fmt VF, int D>
__global__ void __launch_bounds__(kWarps * 32) append_kernel(AppendParams p) {
  const int b = blockIdx.z, kvh = blockIdx.y;
  const int st = p.start[b];
  const int pg = st / kPageTokens + blockIdx.x;
  const int tok0 = max(st, pg * kPageTokens), tok1 = min(st + p.n_new, (pg + 1) * kPageTokens);
  if (tok0 >= tok1) return;
  const int s0 = tok0 - pg * kPageTokens, s1 = tok1 - pg * kPageTokens;
  constexpr int TK = tile_bytes(KF, D);
  constexpr int CBYTES = (KF == Fmt::kBF16 ? 2 : 1) * kPageTokens * code_row(KF, D);  // per tile
  extern __shared__ uint4 smem4[];
  uint8_t* ck = reinterpret_cast<uint8_t*>(smem4);
  uint8_t* cv = ck + CBYTES;
  float* stage = reinterpret_cast<float*>(cv + CBYTES);
  uint8_t* gk = p.pool + size_t(p.block_table[size_t(b) * p.max_pages + pg]) * p.page_bytes +
                size_t(kvh) * (TK + tile_bytes(VF, D));
  uint8_t* gv = gk + TK;
  for (int i = threadIdx.x; i < 2 * CBYTES / 16; i += blockDim.x) smem4[i] = make_uint4(0, 0, 0, 0);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int E = D / 32;
  const int nvec = 2 * (s1 - s0);
  // One vector ahead: the next input vector is loaded while this one is encoded.
  using Raw = std::conditional_t<E == 2, uint32_t, std::conditional_t<E == 4, uint2, uint4>>;
  auto src_of = [&](int vi) {
    const bool is_v = vi & 1;
    const int pos = pg * kPageTokens + s0 + vi / 2;
    return reinterpret_cast<const Raw*>(
        (is_v ? p.v : p.k) + ((size_t(b) * p.n_new + (pos - st)) * p.Hkv + kvh) * D + E * lane);
  };
  // quantizer cell tables of K and V (Hadamard turbo types)
  float2* cells = reinterpret_cast<float2*>(stage + kWarps * D);
  // turbo2/3/4 with the same K and V type: 4 vectors per warp, boundaries in registers
  constexpr bool kGroup = KF == VF && (KF == Fmt::kTurbo2 || KF == Fmt::kTurbo3 || KF == Fmt::kTurbo4);
  // (turbo4's 15 boundaries: the cell table is faster than the search)
  constexpr bool kSearch = kGroup && KF != Fmt::kTurbo4;
  if (!kSearch && p.kc.qcells)
    for (int i = threadIdx.x; i < kQCells; i += blockDim.x) cells[i] = p.kc.qcells[i];
  if (!kGroup && p.vc.qcells)
    for (int i = threadIdx.x; i < kQCells; i += blockDim.x) cells[kQCells + i] = p.vc.qcells[i];
  __syncthreads();
  if constexpr (kGroup) {
    // One Hadamard rotation, the same for K and V (same format and seed): 4 vectors per warp,
    // 8 lanes per vector, D/8 consecutive elements per lane. Per vector this takes 3 shuffle
    // stages and a 3-shuffle norm instead of 5 + 5 (shuffles ran at one warp-instruction per
    // clock per SM: the append's limit), and the per-vector scalar work is shared by 4.
    constexpr int LPV = 8, VPW = 32 / LPV, EL = D / LPV;
    const int sub = lane / LPV, sl = lane % LPV;
    float sg[EL];
#pragma unroll
    for (int k4 = 0; k4 < EL / 4; ++k4) {
      const float4 v = reinterpret_cast<const float4*>(p.kc.signs + EL * sl)[k4];
      sg[4 * k4] = v.x; sg[4 * k4 + 1] = v.y; sg[4 * k4 + 2] = v.z; sg[4 * k4 + 3] = v.w;
    }
    constexpr int NB = KF == Fmt::kTurbo2 ? 3 : 7;
    float bnd[NB];  // opaque moves: kept in registers, not re-read per use from the parameters
#pragma unroll
    for (int i = 0; i < NB; ++i) asm("mov.b32 %0, %1;" : "=f"(bnd[i]) : "f"(p.kc.bounds[0][i]));
    constexpr int NQ = EL / 8;  // 16-byte loads per lane
    auto load = [&](int vi, uint4 (&r)[NQ]) {
      if (vi < nvec) {
        const bool is_v = vi & 1;
        const int pos = pg * kPageTokens + s0 + vi / 2;
        const uint4* src = reinterpret_cast<const uint4*>(
            (is_v ? p.v : p.k) + ((size_t(b) * p.n_new + (pos - st)) * p.Hkv + kvh) * D +
            EL * sl);
#pragma unroll
        for (int q = 0; q < NQ; ++q) r[q] = src[q];
      } else {
#pragma unroll
        for (int q = 0; q < NQ; ++q) r[q] = make_uint4(0u, 0u, 0u, 0u);
      }
    };
    const float sc = 1.0f / sqrtf(float(D));
    uint4 nxt[NQ];
    load(warp * VPW + sub, nxt);
#pragma unroll 1
    for (int base = warp * VPW; base < nvec; base += kWarps * VPW) {
      const int vi = base + sub;
      uint4 cur[NQ];
#pragma unroll
      for (int q = 0; q < NQ; ++q) cur[q] = nxt[q];
      load(vi + kWarps * VPW, nxt);
      float x[EL];
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        const uint32_t w[4] = {cur[q].x, cur[q].y, cur[q].z, cur[q].w};
#pragma unroll
        for (int k = 0; k < 8; ++k)
          x[8 * q + k] = __uint_as_float(k & 1 ? w[k / 2] & 0xFFFF0000u : w[k / 2] << 16);
      }
      float ss = 0.f;
#pragma unroll
      for (int k = 0; k < EL; ++k) ss += x[k] * x[k];
#pragma unroll
      for (int o = 1; o < LPV; o <<= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      const float n = sqrtf(ss);
      const float inv = n > 0.f ? 1.0f / n : 0.f;
      float u[EL];
#pragma unroll
      for (int k = 0; k < EL; ++k) u[k] = x[k] * inv * sg[k];
      fwht_group<EL, LPV>(u, lane);
      uint32_t packed[EL / 4];
#pragma unroll
      for (int k4 = 0; k4 < EL / 4; ++k4) {
        uint32_t w = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float uu = u[4 * k4 + j] * sc;
          int idx;
          if constexpr (kSearch) {
            idx = count_below<NB>(uu, bnd);
          } else {  // turbo4: GPU code of index 0 for a zero vector
            idx = n > 0.f ? quantize_cells(uu, cells, p.kc.qinv, p.kc.qoff) : 0;
            idx = int(lut4_code(idx));
          }
          w |= uint32_t(idx) << (8 * j);
        }
        packed[k4] = (kSearch && !(n > 0.f)) ? 0u : w;  // a zero vector: index 0
      }
      if (vi < nvec) {
        const bool is_v = vi & 1;
        const int tok = s0 + vi / 2;
        uint8_t* codes = (is_v ? cv : ck) + tok * code_row(KF, D) + EL * sl;
#pragma unroll
        for (int q = 0; q < EL / 16; ++q)
          reinterpret_cast<uint4*>(codes)[q] =
              make_uint4(packed[4 * q], packed[4 * q + 1], packed[4 * q + 2], packed[4 * q + 3]);
        if constexpr (EL == 8)
          *reinterpret_cast<uint2*>(codes) = make_uint2(packed[0], packed[1]);
        if (sl == 0) store_scalar(is_v ? gv : gk, codes_bytes(KF, D), 0, tok, n);
      }
    }
  } else {
  Raw nxt{};
  if (warp < nvec) nxt = *src_of(warp);
  // this lane's rotation signs, for every vector it encodes
  float sgk[E], sgv[E];
#pragma unroll
  for (int k = 0; k < E; ++k) {
    sgk[k] = p.kc.signs ? p.kc.signs[E * lane + k] : 1.f;
    sgv[k] = p.vc.signs ? p.vc.signs[E * lane + k] : 1.f;
  }
#pragma unroll 1
  for (int vi = warp; vi < nvec; vi += kWarps) {
    const Raw cur = nxt;
    if (vi + kWarps < nvec) nxt = *src_of(vi + kWarps);
    const bool is_v = vi & 1;
    const int slot = s0 + vi / 2;
    uint16_t raw[E];
    if constexpr (E == 4) {
      const uint2 v = cur;
      raw[0] = v.x & 0xFFFF; raw[1] = v.x >> 16; raw[2] = v.y & 0xFFFF; raw[3] = v.y >> 16;
    } else if constexpr (E == 2) {
      const uint32_t v = cur;
      raw[0] = v & 0xFFFF; raw[1] = v >> 16;
    } else {
      const uint4 v = cur;
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 8; ++k) raw[k] = (w[k / 2] >> (16 * (k & 1))) & 0xFFFF;
    }
    float x[E];
#pragma unroll
    for (int k = 0; k < E; ++k) x[k] = __uint_as_float(uint32_t(raw[k]) << 16);
    if (is_v)
      encode_vector<VF, D>(x, cv, reinterpret_cast<uint16_t*>(cv), raw, gv, slot, p.vc, sgv,
                           stage + warp * D, cells + kQCells, lane);
    else
      encode_vector<KF, D>(x, ck, reinterpret_cast<uint16_t*>(ck), raw, gk, slot, p.kc, sgk,
                           stage + warp * D, cells, lane);
  }
  }
  __syncthreads();
  const bool full = s0 == 0 && s1 == kPageTokens;
  const uint16_t* rk = reinterpret_cast<const uint16_t*>(ck);
  const uint16_t* rw = reinterpret_cast<const uint16_t*>(cv);
  write_part<KF, D, 0, false>(ck, rk, gk, full);
  write_part<KF, D, 1, false>(ck, rk, gk, full);
  write_part<VF, D, 0, true>(cv, rw, gv, full);
  write_part<VF, D, 1, true>(cv, rw, gv, full);
}

// Dynamic shared memory of the append kernel.
__host__ __device__ constexpr int append_smem_bytes(Fmt kf, Fmt vf, int D) {
  return 2 * (kf == Fmt::kBF16 ? 2 : 1) * kPageTokens * code_row(kf, D) + kWarps * D * 4 +
         2 * kQCells * 8;
}

}  // namespace ak
}  // namespace tq::cuda
