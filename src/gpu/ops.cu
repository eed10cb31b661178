// turboquant GPU runtime — the fused forward-pass kernels (see ops.h; references: ops_ref.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>

#include "cuda/consts.cuh"
#include "gpu/linear.h"
#include "gpu/ops.h"
#include "gpu/pdl.cuh"

namespace tq::gpu {
namespace {

using tq::cuda::check_cuda;

__device__ __forceinline__ uint64_t d_mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
__device__ __forceinline__ float d_hash_uniform(uint64_t seed, uint64_t i) {
  const uint64_t h = d_mix64(seed ^ d_mix64(i));
  return float(int64_t(h >> 40) - (int64_t(1) << 23)) * (1.0f / float(1 << 23));
}
__device__ __forceinline__ uint16_t bf16_bits(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ float bf16_float(uint16_t b) {
  return __bfloat162float(__ushort_as_bfloat16(b));
}

// offset + scale·u rounded twice, as the host computes it (no FMA contraction), so that the
// host reference regenerates every bit
__device__ __forceinline__ float init_value(uint64_t seed, size_t i, float scale, float off) {
  return __fadd_rn(off, __fmul_rn(scale, d_hash_uniform(seed, i)));
}

__global__ void init_bf16_kernel(uint16_t* w, size_t n, uint64_t seed, float scale, float off) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    w[i] = bf16_bits(init_value(seed, i, scale, off));
}
__global__ void init_f32_kernel(float* w, size_t n, uint64_t seed, float scale, float off) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    w[i] = bf16_float(bf16_bits(init_value(seed, i, scale, off)));
}

__global__ void embed_kernel(const uint16_t* embd, const int* tokens, float* x, int E) {
  const int t = blockIdx.x;
  const uint16_t* row = embd + size_t(tokens[t]) * E;
  for (int j = threadIdx.x; j < E; j += blockDim.x) x[size_t(t) * E + j] = bf16_float(row[j]);
}

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, ≤ 1024).
__device__ float block_sum(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  if (l == 0) sh[w] = v;
  __syncthreads();
  const int nw = blockDim.x / 32;
  v = l < nw ? sh[l] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  return v;
}

__global__ void rmsnorm_kernel(const float* x, const float* w, uint16_t* y, int E, float eps) {
  __shared__ float sh[32];
  const float* a = x + size_t(blockIdx.x) * E;
  float ss = 0.f;
  for (int j = threadIdx.x; j < E; j += blockDim.x) ss += a[j] * a[j];
  ss = block_sum(ss, sh);
  const float r = rsqrtf(ss / float(E) + eps);
  for (int j = threadIdx.x; j < E; j += blockDim.x)
    y[size_t(blockIdx.x) * E + j] = bf16_bits(a[j] * r * w[j]);
}

// grid (n, Hq + 2·Hkv), block D/2 threads: thread i owns pair i of one head of one token.
__global__ void qkv_rope_kernel(QkvArgs a) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x, D = a.D, P = D / 2;
  const int W = (a.Hq + 2 * a.Hkv) * D;
  const float* row = a.qkv + size_t(t) * W + size_t(h) * D;
  const float* b = a.bias ? a.bias + size_t(h) * D : nullptr;
  const int ia = a.neox ? i : 2 * i, ib = a.neox ? i + P : 2 * i + 1;
  float x0 = row[ia], x1 = row[ib];
  if (b) {
    x0 += b[ia];
    x1 += b[ib];
  }
  if (h < a.Hq + a.Hkv) {
    // the angle in double: positions reach 10^5 and fp32 would lose ~1e-2 rad there
    const double th = double(a.pos[t]) * double(a.freq_scale) * double(a.inv_freq[i]);
    double s, c;
    sincos(th, &s, &c);
    const float cs = float(c), sn = float(s);
    const float r0 = x0 * cs - x1 * sn, r1 = x0 * sn + x1 * cs;
    x0 = r0;
    x1 = r1;
  }
  if (h < a.Hq) {
    float* q = a.q + (size_t(t) * a.Hq + h) * D;
    q[ia] = x0;
    q[ib] = x1;
  } else {
    const bool is_v = h >= a.Hq + a.Hkv;
    const int kh = h - a.Hq - (is_v ? a.Hkv : 0);
    uint16_t* o = (is_v ? a.v : a.k) + (size_t(t) * a.Hkv + kh) * D;
    o[ia] = bf16_bits(x0);
    o[ib] = bf16_bits(x1);
  }
}

__global__ void swiglu_kernel(const float* gu, uint16_t* out, int F) {
  const int t = blockIdx.y;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < F; j += gridDim.x * blockDim.x) {
    const float g = gu[size_t(t) * 2 * F + j], u = gu[size_t(t) * 2 * F + F + j];
    out[size_t(t) * F + j] = bf16_bits(g / (1.f + expf(-g)) * u);
  }
}

__global__ void f32_to_bf16_kernel(const float* a, uint16_t* b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    b[i] = bf16_bits(a[i]);
}

// One block per row: the best (value, lowest index) over the row.
__global__ void sample_kernel(const float* logits, int V, float temp, uint64_t seed,
                              const int* step, int* out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const int r = blockIdx.x;
  const float* row = logits + size_t(r) * V;
  const uint64_t base = seed ^ d_mix64((uint64_t(step ? *step : 0) << 32) | uint32_t(r));
  float best = -FLT_MAX;
  int bi = 0x7fffffff;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float s = row[j];
    if (temp > 0.f) {
      // Gumbel noise −log(−log(u)), u ∈ (0, 1)
      const float u = 0.5f * (d_hash_uniform(base, uint64_t(j)) + 1.f) + 0.5f / 16777216.f;
      s = s / temp - logf(-logf(u));
    }
    if (s > best) {  // j increases per thread: the first maximum is kept
      best = s;
      bi = j;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) {
      best = ov;
      bi = oi;
    }
  }
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  if (l == 0) {
    sv[w] = best;
    si[w] = bi;
  }
  __syncthreads();
  if (w == 0) {
    const int nw = blockDim.x / 32;
    best = l < nw ? sv[l] : -FLT_MAX;
    bi = l < nw ? si[l] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) {
        best = ov;
        bi = oi;
      }
    }
    // a row of NaN logits picks nothing: report −1 rather than an out-of-range id
    if (l == 0) out[r] = bi == 0x7fffffff ? -1 : bi;
  }
}

__global__ void advance_kernel(const int* sampled, int* tokens, int* pos, int* lens, int* step,
                               int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    tokens[i] = sampled[i];
    pos[i] += 1;
    lens[i] += 1;
  }
  if (i == 0 && step) *step += 1;
}

__global__ void zero_pages_kernel(uint8_t* pool, const int* ids, size_t page_words) {
  uint4* p = reinterpret_cast<uint4*>(pool) + size_t(ids[blockIdx.y]) * page_words;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < page_words;
       i += size_t(gridDim.x) * blockDim.x)
    p[i] = make_uint4(0, 0, 0, 0);
}

int grid_for(size_t n, int block) {
  const size_t g = (n + block - 1) / block;
  return int(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

}  // namespace

#define TQ_LAUNCHED() check_cuda(int(cudaGetLastError()), __func__)

void launch_init_bf16(uint16_t* w, size_t n, uint64_t seed, float scale, float offset,
                      void* stream) {
  init_bf16_kernel<<<grid_for(n, 256), 256, 0, cudaStream_t(stream)>>>(w, n, seed, scale,
                                                                       offset);
  TQ_LAUNCHED();
}

void launch_init_f32(float* w, size_t n, uint64_t seed, float scale, float offset,
                     void* stream) {
  init_f32_kernel<<<grid_for(n, 256), 256, 0, cudaStream_t(stream)>>>(w, n, seed, scale,
                                                                      offset);
  TQ_LAUNCHED();
}

void launch_embed(const uint16_t* embd, const int* tokens, float* x, int n, int E,
                  void* stream) {
  if (n <= 0) return;
  embed_kernel<<<n, 256, 0, cudaStream_t(stream)>>>(embd, tokens, x, E);
  TQ_LAUNCHED();
}

void launch_rmsnorm_bf16(const float* x, const float* w, uint16_t* y, int n, int E, float eps,
                         void* stream) {
  if (n <= 0) return;
  const int threads = E >= 1024 ? 1024 : ((E + 31) / 32) * 32;
  rmsnorm_kernel<<<n, threads, 0, cudaStream_t(stream)>>>(x, w, y, E, eps);
  TQ_LAUNCHED();
}

void launch_qkv_rope(const QkvArgs& a, void* stream, bool pdl) {
  if (a.n <= 0) return;
  PdlLaunch L(dim3(a.n, a.Hq + 2 * a.Hkv), dim3(a.D / 2), stream, pdl && pdl_supported());
  check_cuda(int(cudaLaunchKernelEx(&L.cfg, qkv_rope_kernel, a)), "qkv_rope");
}

void launch_swiglu_bf16(const float* gu, uint16_t* out, int n, int F, void* stream) {
  if (n <= 0) return;
  swiglu_kernel<<<dim3((F + 255) / 256, n), 256, 0, cudaStream_t(stream)>>>(gu, out, F);
  TQ_LAUNCHED();
}

void launch_f32_to_bf16(const float* a, uint16_t* b, size_t n, void* stream) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<grid_for(n, 256), 256, 0, cudaStream_t(stream)>>>(a, b, n);
  TQ_LAUNCHED();
}

void launch_sample(const float* logits, int n, int V, float temperature, uint64_t seed,
                   const int* step, int* out, void* stream) {
  if (n <= 0) return;
  sample_kernel<<<n, 1024, 0, cudaStream_t(stream)>>>(logits, V, temperature, seed, step, out);
  TQ_LAUNCHED();
}

void launch_advance(const int* sampled, int* tokens, int* pos, int* lens, int* step, int n,
                    void* stream) {
  advance_kernel<<<(n + 255) / 256, 256, 0, cudaStream_t(stream)>>>(sampled, tokens, pos, lens,
                                                                    step, n);
  TQ_LAUNCHED();
}

void launch_zero_pages(uint8_t* pool, const int* ids, int n, size_t page_bytes, void* stream) {
  if (n <= 0) return;
  // pages are multiples of 16 bytes (every tile is a whole number of 16-byte lane units)
  const size_t words = page_bytes / 16;
  zero_pages_kernel<<<dim3(unsigned(std::min<size_t>(8, (words + 255) / 256)), n), 256, 0,
                      cudaStream_t(stream)>>>(pool, ids, words);
  TQ_LAUNCHED();
}

}  // namespace tq::gpu
