// Append: rotate, quantize and pack new tokens into their pages (the GPU layout of formats.cuh).
// One CTA of 8 warps per (sequence, page, KV head): the page's K and V tiles are built in
// shared memory (bitwise OR of each code into its lane word) and written back with 16-byte
// stores. One warp per vector; lane l holds elements l, l+32, ...; the randomised Hadamard
// transform runs across the warp (5 shuffle stages + in-register stages), dense rotations
// (split types, the QJL sketch) read a transposed matrix so that lanes read consecutive floats.
// Quantization matches the CPU codecs: turbo = count of Lloyd-Max boundaries below u_j; q8_0 /
// q4_0 as ggml quantize_row_q8_0 / q4_0_ref.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/consts.cuh"
#include "cuda/formats.cuh"

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

template <Fmt F, int D>
__device__ __forceinline__ void place(uint8_t* tile, bool is_v, int tok, int dim, uint32_t code,
                                      int part) {
  int lane, i;
  td_to_elem(is_v, tok, dim, lane, i);
  const Kind kind = part_kind(F, part);
  const int W = part_words(F, part, D);
  uint8_t* base = tile + part_offset_bytes(F, part, D);
  const int e = i - part_first(F, part, D);
  Slot sl[3];
  uint32_t c = code;
  if (kind == Kind::LUT4) {  // GPU code: sign (1 = negative) and magnitude index
    const bool neg = code < 8;
    c = neg ? 7 - code : code - 8;
    const Slot ss = lut4_sign_slot(e);
    if (neg) atomicOr(reinterpret_cast<unsigned*>(base + word_byte_offset(W, ss.word, lane)),
                      1u << ss.bit);
  }
  const int n = code_slot(kind, e, sl);
  for (int s = 0; s < n; ++s) {
    const uint32_t v = ((c >> sl[s].shift) & ((1u << sl[s].nbits) - 1u)) << sl[s].bit;
    if (v) atomicOr(reinterpret_cast<unsigned*>(base + word_byte_offset(W, sl[s].word, lane)), v);
  }
}

template <int E>
__device__ __forceinline__ void fwht_warp(float (&u)[E], int lane) {
#pragma unroll
  for (int hb = 1; hb < 32; hb <<= 1)
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const float o = __shfl_xor_sync(0xffffffffu, u[k], hb);
      u[k] = (lane & hb) ? (o - u[k]) : (u[k] + o);
    }
#pragma unroll
  for (int h = 1; h < E; h <<= 1)
#pragma unroll
    for (int k = 0; k < E; ++k)
      if (!(k & h)) {
        const float a = u[k], b = u[k + h];
        u[k] = a + b;
        u[k + h] = a - b;
      }
}

__device__ __forceinline__ int quantize(float u, const float* bounds, int nb) {
  int idx = 0;
  for (int i = 0; i < nb; ++i) idx += bounds[i] < u ? 1 : 0;
  return idx;
}

__device__ __forceinline__ void set_scalar(uint8_t* tile, int codes_b, int a, int tok, float v) {
  reinterpret_cast<__half*>(tile + codes_b + a * 64)[tok] = __float2half_rn(v);
}

// Encode one vector (lane holds x[k] = element 32k + lane) into the shared tile.
template <Fmt F, int D>
__device__ void encode_vector(const float (&x)[D / 32], const uint16_t (&raw)[D / 32],
                              uint8_t* tile, bool is_v, int tok, const FormatConsts& c,
                              float* stage, int lane) {
  constexpr int E = D / 32;
  constexpr int CB = codes_bytes(F, D);
  if constexpr (F == Fmt::BF16) {
#pragma unroll
    for (int k = 0; k < E; ++k) place<F, D>(tile, is_v, tok, 32 * k + lane, raw[k], 0);
  } else if constexpr (F == Fmt::Q8_0) {
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const float amax = warp_max(fabsf(x[k]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const int q = int(roundf(x[k] * id));
      place<F, D>(tile, is_v, tok, 32 * k + lane, uint32_t(q) & 0xFFu, 0);
      if (lane == 0) set_scalar(tile, CB, k, tok, d);
    }
  } else if constexpr (F == Fmt::Q4_0) {
#pragma unroll
    for (int k = 0; k < E; ++k) {
      // the first element of largest magnitude, with its sign (ggml: max / -8)
      float a = fabsf(x[k]);
      int who = lane;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float a2 = __shfl_xor_sync(0xffffffffu, a, o);
        const int w2 = __shfl_xor_sync(0xffffffffu, who, o);
        if (a2 > a || (a2 == a && w2 < who)) { a = a2; who = w2; }
      }
      const float mx = __shfl_sync(0xffffffffu, x[k], who);
      const float d = mx / -8.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const int q = min(15, int(x[k] * id + 8.5f));
      place<F, D>(tile, is_v, tok, 32 * k + lane, uint32_t(q), 0);
      if (lane == 0) set_scalar(tile, CB, k, tok, d);
    }
  } else if constexpr (is_split(F)) {
    constexpr int EH = E / 4;  // elements of the outlier part per lane
    float s_hi = 0.f, s_lo = 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k) (k < EH ? s_hi : s_lo) += x[k] * x[k];
    const float n_hi = sqrtf(warp_sum(s_hi)), n_lo = sqrtf(warp_sum(s_lo));
    const float i_hi = n_hi > 0.f ? 1.0f / n_hi : 0.f, i_lo = n_lo > 0.f ? 1.0f / n_lo : 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k) stage[32 * k + lane] = x[k] * (k < EH ? i_hi : i_lo);
    __syncwarp();
    constexpr int NH = D / 4, NL = D - D / 4;
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const int j = 32 * k + lane;
      float u = 0.f;
      if (k < EH) {
        for (int i = 0; i < NH; ++i) u += c.rot_t[0][i * NH + j] * stage[i];
      } else {
        const int o = j - NH;
        for (int i = 0; i < NL; ++i) u += c.rot_t[1][i * NL + o] * stage[NH + i];
      }
      const int part = k < EH ? 0 : 1;
      const bool zero = part == 0 ? n_hi == 0.f : n_lo == 0.f;
      const int idx = zero ? 0 : quantize(u, c.bounds[part], c.nbounds[part]);
      place<F, D>(tile, is_v, tok, j, uint32_t(idx), part);
    }
    __syncwarp();
    if (lane == 0) {
      set_scalar(tile, CB, 0, tok, n_hi);
      set_scalar(tile, CB, 1, tok, n_lo);
    }
  } else {  // T2, T3, T4, T3P: one randomised Hadamard rotation of the whole vector
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < E; ++k) ss += x[k] * x[k];
    const float n = sqrtf(warp_sum(ss));
    const float inv = n > 0.f ? 1.0f / n : 0.f;
    float u[E];
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] = x[k] * inv * c.signs[32 * k + lane];
    fwht_warp<E>(u, lane);
    const float sc = 1.0f / sqrtf(float(D));
    int idx[E];
#pragma unroll
    for (int k = 0; k < E; ++k) {
      u[k] *= sc;
      idx[k] = n > 0.f ? quantize(u[k], c.bounds[0], c.nbounds[0]) : 0;
      place<F, D>(tile, is_v, tok, 32 * k + lane, uint32_t(idx[k]), 0);
    }
    if constexpr (F == Fmt::T3P) {
      const float n16 = __half2float(__float2half_rn(n));
      float g2 = 0.f;
#pragma unroll
      for (int k = 0; k < E; ++k) {
        const float r = n * u[k] - n16 * c.cent[0][idx[k]];
        stage[32 * k + lane] = r;
        g2 += r * r;
      }
      const float gamma = sqrtf(warp_sum(g2));
      __syncwarp();
#pragma unroll
      for (int k = 0; k < E; ++k) {
        const int i = 32 * k + lane;
        float acc = 0.f;
        for (int j = 0; j < D; ++j) acc += c.St[j * D + i] * stage[j];
        place<F, D>(tile, is_v, tok, i, (n > 0.f && acc >= 0.f) ? 1u : 0u, 1);
      }
      __syncwarp();
      if (lane == 0) {
        set_scalar(tile, CB, 0, tok, n);
        set_scalar(tile, CB, 1, tok, n > 0.f ? gamma : 0.f);
      }
    } else {
      if (lane == 0) set_scalar(tile, CB, 0, tok, n);
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
  constexpr int TK = tile_bytes(KF, D), TV = tile_bytes(VF, D);
  extern __shared__ uint4 smem4[];
  uint8_t* sk = reinterpret_cast<uint8_t*>(smem4);
  uint8_t* sv = sk + TK;
  float* stage = reinterpret_cast<float*>(sv + TV);
  uint4* gt = reinterpret_cast<uint4*>(p.pool + size_t(p.block_table[size_t(b) * p.max_pages + pg]) *
                                                    p.page_bytes +
                                       size_t(kvh) * (TK + TV));
  const bool full = s0 == 0 && s1 == kPageTokens;
  for (int i = threadIdx.x; i < (TK + TV) / 16; i += blockDim.x)
    smem4[i] = full ? make_uint4(0, 0, 0, 0) : gt[i];
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nvec = 2 * (s1 - s0);
  for (int vi = warp; vi < nvec; vi += kWarps) {
    const bool is_v = vi & 1;
    const int slot = s0 + vi / 2;
    const int pos = pg * kPageTokens + slot;
    const uint16_t* src =
        (is_v ? p.v : p.k) + ((size_t(b) * p.n_new + (pos - st)) * p.Hkv + kvh) * D;
    float x[D / 32];
    uint16_t raw[D / 32];
#pragma unroll
    for (int k = 0; k < D / 32; ++k) {
      raw[k] = src[32 * k + lane];
      x[k] = __uint_as_float(uint32_t(raw[k]) << 16);
    }
    if (is_v)
      encode_vector<VF, D>(x, raw, sv, true, slot, p.vc, stage + warp * D, lane);
    else
      encode_vector<KF, D>(x, raw, sk, false, slot, p.kc, stage + warp * D, lane);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < (TK + TV) / 16; i += blockDim.x) gt[i] = smem4[i];
}

}  // namespace ak
}  // namespace tq::cuda
