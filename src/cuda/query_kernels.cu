// Query preparation and split merge outside the decode kernel (the formats whose query is not
// rotated in the decode kernel's prologue, and the split types whose output needs a dense
// rotation), and the causal lengths of prefill.
#include "cuda/query_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/append_kernels.cuh"
#include "cuda/dispatch.h"

namespace tq::cuda {
namespace {

// q' = scale·R q (fp16 or bf16); T3P also qs = √(π/2)/D · S q'.
__global__ void qprep_kernel(const float* q, uint16_t* qo, uint16_t* qso, const float* R,
                             const float* S, int D, float scale, bool bf) {
  extern __shared__ float sh[];
  float* qin = sh;
  float* qr = sh + D;
  const size_t row = size_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int j = threadIdx.x;
  qin[j] = q[row * D + j];
  __syncthreads();
  float v = 0.f;
  if (R) {
    for (int i = 0; i < D; ++i) v += R[size_t(j) * D + i] * qin[i];
  } else {
    v = qin[j];
  }
  v *= scale;
  qr[j] = v;
  if (bf) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    qo[row * D + j] = *reinterpret_cast<uint16_t*>(&h);
  } else {
    __half h = __float2half_rn(v);
    qo[row * D + j] = *reinterpret_cast<uint16_t*>(&h);
  }
  if (S) {
    __syncthreads();
    float w = 0.f;
    for (int i = 0; i < D; ++i) w += S[size_t(j) * D + i] * qr[i];
    __half h = __float2half_rn(w * sqrtf(3.14159265358979f / 2.f) / float(D));
    qso[row * D + j] = *reinterpret_cast<uint16_t*>(&h);
  }
}

// Merge the splits of one query head and map back: out = Rᵀ (Σ w_s o_s / Σ w_s l_s).
__global__ void combine_kernel(const float* part_o, const float* part_ml, float* out,
                               const float* R, int D, int splits) {
  extern __shared__ float sh[];
  const size_t row = size_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int d = threadIdx.x;
  float M = -1e30f;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, part_ml[(row * splits + s) * 2]);
  float acc = 0.f, L = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f(part_ml[(row * splits + s) * 2] - M);
    L += w * part_ml[(row * splits + s) * 2 + 1];
    acc += w * part_o[(row * splits + s) * D + d];
  }
  const float v = L > 0.f ? acc / L : 0.f;
  if (!R) {
    out[row * D + d] = v;
    return;
  }
  sh[d] = v;
  __syncthreads();
  float o = 0.f;
  for (int i = 0; i < D; ++i) o += R[size_t(i) * D + d] * sh[i];
  out[row * D + d] = o;
}

// Warp-per-head versions for the randomised Hadamard formats: q' = H(signs ⊙ q)·scale/√D and
// out = signs ⊙ H(o')/√D, by the in-warp fast transform (no dense D×D matrix).
template <int D>
__global__ void qprep_fwht_kernel(const float* q, uint16_t* qo, const float* signs, int rows,
                                  float scale) {
  constexpr int E = D / 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;
  float u[E];
#pragma unroll
  for (int k = 0; k < E; ++k) u[k] = q[size_t(row) * D + E * lane + k] * signs[E * lane + k];
  ak::fwht_warp<E>(u, lane);
  const float sc = scale / sqrtf(float(D));
#pragma unroll
  for (int k = 0; k < E; ++k) {
    __half h = __float2half_rn(u[k] * sc);
    qo[size_t(row) * D + E * lane + k] = *reinterpret_cast<uint16_t*>(&h);
  }
}

template <int D>
__global__ void combine_fwht_kernel(const float* part_o, const float* part_ml, float* out,
                                    const float* signs, int rows, int splits) {
  constexpr int E = D / 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* ml = part_ml + size_t(row) * splits * 2;
  float M = -1e30f;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, ml[2 * s]);
  float u[E] = {}, L = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f(ml[2 * s] - M);
    L += w * ml[2 * s + 1];
    const float* o = part_o + (size_t(row) * splits + s) * D + E * lane;
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] += w * o[k];
  }
  ak::fwht_warp<E>(u, lane);
  const float sc = (L > 0.f ? 1.0f / L : 0.f) / sqrtf(float(D));
#pragma unroll
  for (int k = 0; k < E; ++k)
    out[size_t(row) * D + E * lane + k] = u[k] * sc * signs[E * lane + k];
}

__global__ void causal_lens_kernel(int* lens, int T, int pos0) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < T) lens[i] = pos0 + i + 1;
}

}  // namespace

void launch_qprep(const float* q, uint16_t* qo, uint16_t* qso, const float* R, const float* S,
                  int B, int Hq, int D, float scale, bool bf16, cudaStream_t st) {
  qprep_kernel<<<dim3(Hq, B), D, 2 * D * sizeof(float), st>>>(q, qo, qso, R, S, D, scale, bf16);
}

void launch_qprep_fwht(int D, const float* q, uint16_t* qo, const float* signs, int rows,
                       float scale, cudaStream_t st) {
  TQ_DISPATCH_HEAD_DIM(D, HD, {
    qprep_fwht_kernel<HD><<<(rows + 7) / 8, 256, 0, st>>>(q, qo, signs, rows, scale);
  })
}

void launch_combine(const float* part_o, const float* part_ml, float* out, const float* R, int B,
                    int Hq, int D, int splits, cudaStream_t st) {
  combine_kernel<<<dim3(Hq, B), D, D * sizeof(float), st>>>(part_o, part_ml, out, R, D, splits);
}

void launch_combine_fwht(int D, const float* part_o, const float* part_ml, float* out,
                         const float* signs, int rows, int splits, cudaStream_t st) {
  TQ_DISPATCH_HEAD_DIM(D, HD, {
    combine_fwht_kernel<HD><<<(rows + 7) / 8, 256, 0, st>>>(part_o, part_ml, out, signs, rows,
                                                             splits);
  })
}

void launch_causal_lens(int* lens, int T, int pos0, cudaStream_t st) {
  causal_lens_kernel<<<(T + 255) / 256, 256, 0, st>>>(lens, T, pos0);
}

}  // namespace tq::cuda
