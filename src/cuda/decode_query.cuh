// Query preparation inside the decode kernel (turbo3 keys): rotation, scaling and int8
// quantisation of the G query heads of one KV head into B fragments. The other formats get
// their query prepared by query_kernels.cu before the launch.
#pragma once
#include <cstdint>

#include "cuda/append_kernels.cuh"
#include "cuda/decode_params.cuh"

namespace tq::cuda::dk {

// turbo3 keys: the query of (sequence b, KV head kvh) rotated (FWHT of ksigns ⊙ q), scaled
// by softmax-scale·log2 e and quantised to int8 B fragments qf (see DecodeWarp::key_products),
// and the per-head score scales kscale (heads 2t, 2t+1). kWarp: one warp does all G heads
// (qsm: its own 8 × D floats); else the NW warps of the CTA share them (CTA barrier, qsm
// shared). kOneTab: the keys' one-byte table (else the two-byte one) sets the score scale.
template <int D, int NW, bool kWarp, bool kOneTab, bool kSplit>
__device__ __forceinline__ void t3_query_frags(const DecodeParams& p, int b, int kvh, float* qsm,
                                               uint32_t (&qf)[D / 16][2], float (&kscale)[2]) {
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
  // Q = round(q/β): β = max|q|/16256 (15 bits, = 128·Q1 + Q2). inv may be off by an ulp:
  // |q|·inv stays < 16256.5, and β·inv = 1 within 1e-7. (An 8-bit query, β = max|q|/127,
  // was 4 % faster but gave errors up to 1.2e-2 on a 4k-token test: dropped, docs/gpu-notes.md.)
  constexpr float kQmax = 16256.f;
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
        const int Q1 = (Q + 64) >> 7, Q2 = Q - 128 * Q1;
        w1 |= uint32_t(Q1 & 0xFF) << (8 * j);
        w2 |= uint32_t((2 * Q2) & 0xFF) << (8 * j);
      }
      qf[2 * kk][hh] = kSplit && (g & 1) ? w2 : w1;
      qf[2 * kk + 1][hh] = w2;
    }
  const float kmul = kOneTab ? p.k1mul : p.kalpha128;
#pragma unroll
  for (int c = 0; c < 2; ++c)
    kscale[c] = __shfl_sync(0xffffffffu, beta, 4 * (kSplit ? 2 * t : 2 * t + c)) * kmul;
}

}  // namespace tq::cuda::dk
