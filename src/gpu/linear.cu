// turboquant GPU runtime — the small-batch linear layer (see linear.h; reference:
// ref::linear_small in ops_ref.h).
//
// Layout of the work. A block owns R = 16·MT output rows (MT m-tiles of 16) for all n ≤ 16
// input rows; its 8 warps split the inner dimension in chunks of 64 (warp w takes chunks
// w, w+8, …) and their partial tiles are summed in shared memory in warp order. In a chunk,
// lane (g = lane/4, t = lane%4) loads 16 contiguous weights k ∈ [64c + 16t, 64c + 16t + 16) of
// rows g and g+8 of each m-tile (two 16-byte loads per row), and the same 16 inputs of input
// rows g (n-tile 0) and g+8 (n-tile 1). An m16n8k16 MMA sums over 16 logical k; step s ∈ 0..3
// of the chunk feeds it the physical k 64c + 16t + 4s + {0,1,2,3} as the lane's logical
// {2t, 2t+1, 2t+8, 2t+9} — the same permutation for A (weights) and B (inputs), so the dot
// products are unchanged and every load is a contiguous 16 bytes.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "cuda/consts.cuh"
#include "gpu/linear.h"
#include "gpu/pdl.cuh"
#include "tq/error.h"

namespace tq::gpu {
namespace {

using tq::cuda::check_cuda;

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kChunk = 64;

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);  // .x = lo (low 16 bits)
  return *reinterpret_cast<const uint32_t*>(&p);
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 bf16 of one row as 8 words (word j = elements 2j, 2j+1)
struct Row16 {
  uint4 lo, hi;
  __device__ __forceinline__ uint32_t w(int j) const {
    const uint4& v = j < 4 ? lo : hi;
    switch (j & 3) {
      case 0:
        return v.x;
      case 1:
        return v.y;
      case 2:
        return v.z;
      default:
        return v.w;
    }
  }
};

template <int MT>
struct WeightChunk {
  Row16 r[MT][2];  // m-tile, row g / g+8
};

enum InMode { kInBf16, kInF32, kInF32Norm };

template <int MT, int IN, int EPI>
__global__ void __launch_bounds__(kThreads) linear_small_kernel(LinearArgs a) {
  constexpr int R = 16 * MT;
  __shared__ float red[kWarps][R][kLinearMaxRows];
  __shared__ float rscale[kLinearMaxRows];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int in = a.in, nchunks = in / kChunk;

  // weight rows of this lane: tile row g and g+8 of each m-tile
  const uint16_t* wrow[MT][2];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    const int tile = blockIdx.x * MT + m;
    int lo, hi;
    if (EPI == LinearArgs::kSwiglu) {  // tile = 8 gate rows and the same 8 up rows
      lo = tile * 8 + g;
      hi = a.out / 2 + tile * 8 + g;
    } else {
      lo = tile * 16 + g;
      hi = lo + 8;
    }
    wrow[m][0] = a.W + size_t(lo) * in + 16 * t;
    wrow[m][1] = a.W + size_t(hi) * in + 16 * t;
  }
  auto load_w = [&](WeightChunk<MT>& w, int c) {
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4* p = reinterpret_cast<const uint4*>(wrow[m][h] + size_t(c) * kChunk);
        w.r[m][h].lo = __ldcs(p);  // streamed: read once per step, keep L2 for activations
        w.r[m][h].hi = __ldcs(p + 1);
      }
  };

  // Weights do not depend on the previous kernel: start their loads before waiting for it.
  WeightChunk<MT> w0, w1;
  int c = warp;
  if (c < nchunks) load_w(w0, c);
  if (c + kWarps < nchunks) load_w(w1, c + kWarps);
  pdl_wait();
  pdl_trigger();

  const int n = a.n;
  if (IN == kInF32Norm) {
    // Σx² of row b = Σ over the partial sums in block order; 16 lanes per row
    const int b = threadIdx.x / 16, j = threadIdx.x % 16;
    float s = 0.f;
    if (b < n)
      for (int p = j; p < a.ss_blocks; p += 16) s += a.ss_parts[size_t(p) * kLinearMaxRows + b];
    for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o, 16);
    if (j == 0) rscale[b] = rsqrtf(s / float(in) + a.eps);
    __syncthreads();
  }

  // input rows g and g+8 for chunk c as 8 words each (zero beyond n)
  auto load_x = [&](int b, int c_, uint32_t(&x)[8]) {
    if (b >= n) {
#pragma unroll
      for (int j = 0; j < 8; ++j) x[j] = 0u;
      return;
    }
    const size_t off = size_t(b) * in + size_t(c_) * kChunk + 16 * t;
    if (IN == kInBf16) {
      const uint4* p = reinterpret_cast<const uint4*>(a.x_bf16 + off);
      const Row16 r{__ldg(p), __ldg(p + 1)};
#pragma unroll
      for (int j = 0; j < 8; ++j) x[j] = r.w(j);
    } else {
      const float4* p = reinterpret_cast<const float4*>(a.x_f32 + off);
      float v[16];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 f = __ldg(p + q);
        v[4 * q] = f.x;
        v[4 * q + 1] = f.y;
        v[4 * q + 2] = f.z;
        v[4 * q + 3] = f.w;
      }
      if (IN == kInF32Norm) {
        const float r = rscale[b];
        const float4* wn = reinterpret_cast<const float4*>(a.norm_w + size_t(c_) * kChunk + 16 * t);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const float4 f = __ldg(wn + q);
          v[4 * q] = v[4 * q] * r * f.x;
          v[4 * q + 1] = v[4 * q + 1] * r * f.y;
          v[4 * q + 2] = v[4 * q + 2] * r * f.z;
          v[4 * q + 3] = v[4 * q + 3] * r * f.w;
        }
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) x[j] = pack_bf16(v[2 * j], v[2 * j + 1]);
    }
  };

  float acc[MT][2][4];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int q = 0; q < 2; ++q)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][q][e] = 0.f;

  auto compute = [&](const WeightChunk<MT>& w, int c_) {
    uint32_t x0[8], x1[8];
    load_x(g, c_, x0);
    load_x(g + 8, c_, x1);
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const uint32_t a0 = w.r[m][0].w(2 * s), a1 = w.r[m][1].w(2 * s);
        const uint32_t a2 = w.r[m][0].w(2 * s + 1), a3 = w.r[m][1].w(2 * s + 1);
        mma_bf16(acc[m][0], a0, a1, a2, a3, x0[2 * s], x0[2 * s + 1]);
        mma_bf16(acc[m][1], a0, a1, a2, a3, x1[2 * s], x1[2 * s + 1]);
      }
  };

  // two chunks in flight per warp: compute one while the other's loads are outstanding
  for (; c < nchunks; c += 2 * kWarps) {
    compute(w0, c);
    if (c + 2 * kWarps < nchunks) load_w(w0, c + 2 * kWarps);
    if (c + kWarps < nchunks) {
      compute(w1, c + kWarps);
      if (c + 3 * kWarps < nchunks) load_w(w1, c + 3 * kWarps);
    }
  }

  // C fragment: acc[m][q][0..1] = tile row g, input rows 8q + 2t + {0,1}; [2..3] = row g+8
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      red[warp][16 * m + g][8 * q + 2 * t] = acc[m][q][0];
      red[warp][16 * m + g][8 * q + 2 * t + 1] = acc[m][q][1];
      red[warp][16 * m + g + 8][8 * q + 2 * t] = acc[m][q][2];
      red[warp][16 * m + g + 8][8 * q + 2 * t + 1] = acc[m][q][3];
    }
  __syncthreads();

  // sum over warps in warp order; element e = (tile row r, input row b)
  for (int e = threadIdx.x; e < R * kLinearMaxRows; e += kThreads) {
    const int r = e / kLinearMaxRows, b = e % kLinearMaxRows;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[w][r][b];
    red[0][r][b] = s;
  }
  __syncthreads();

  if (EPI == LinearArgs::kSwiglu) {
    const int F = a.out / 2;
    for (int e = threadIdx.x; e < MT * 8 * kLinearMaxRows; e += kThreads) {
      const int m = e / (8 * kLinearMaxRows), i = (e / kLinearMaxRows) % 8, b = e % kLinearMaxRows;
      if (b >= n) continue;
      const float gt = red[0][16 * m + i][b], up = red[0][16 * m + 8 + i][b];
      const int j = (blockIdx.x * MT + m) * 8 + i;
      a.h[size_t(b) * F + j] =
          __bfloat16_as_ushort(__float2bfloat16_rn(gt / (1.f + expf(-gt)) * up));
    }
    return;
  }
  const int o0 = blockIdx.x * R;
  for (int e = threadIdx.x; e < R * kLinearMaxRows; e += kThreads) {
    const int r = e % R, b = e / R;  // consecutive threads: consecutive outputs of a row
    float v = red[0][r][b];
    if (b < n) {
      float& y = a.y[size_t(b) * a.out + o0 + r];
      if (EPI == LinearArgs::kResidual) v += y;
      y = v;
    }
    if (EPI == LinearArgs::kResidual) red[1][r][b] = b < n ? v * v : 0.f;
  }
  if (EPI == LinearArgs::kResidual && a.ss_out) {
    __syncthreads();
    if (threadIdx.x < kLinearMaxRows) {
      const int b = threadIdx.x;
      float s = 0.f;
      for (int r = 0; r < R; ++r) s += red[1][r][b];
      a.ss_out[size_t(blockIdx.x) * kLinearMaxRows + b] = s;
    }
  }
}

template <int MT, int IN>
void launch_epi(const LinearArgs& a, cudaLaunchConfig_t& cfg) {
  switch (a.epi) {
    case LinearArgs::kStore:
      check_cuda(int(cudaLaunchKernelEx(&cfg, linear_small_kernel<MT, IN, LinearArgs::kStore>, a)),
                 "linear_small");
      break;
    case LinearArgs::kResidual:
      check_cuda(
          int(cudaLaunchKernelEx(&cfg, linear_small_kernel<MT, IN, LinearArgs::kResidual>, a)),
          "linear_small");
      break;
    case LinearArgs::kSwiglu:
      check_cuda(int(cudaLaunchKernelEx(&cfg, linear_small_kernel<MT, IN, LinearArgs::kSwiglu>, a)),
                 "linear_small");
      break;
  }
}
template <int MT>
void launch_mt(const LinearArgs& a, cudaLaunchConfig_t& cfg) {
  if (a.x_bf16)
    launch_epi<MT, kInBf16>(a, cfg);
  else if (a.norm_w)
    launch_epi<MT, kInF32Norm>(a, cfg);
  else
    launch_epi<MT, kInF32>(a, cfg);
}

int rows_of(const LinearArgs& a) {
  return a.rows_per_block ? a.rows_per_block : linear_rows_per_block(a.out);
}

}  // namespace

bool linear_small_ok(int n, int in, int out) {
  return n >= 1 && n <= kLinearMaxRows && in >= kChunk && in % kChunk == 0 && out >= 16 &&
         out % 16 == 0;
}

int linear_rows_per_block(int out) {
  // 32 rows (half the input re-reads from L2) when that still leaves ≥ 160 blocks for the
  // 132 SMs of an H100/H200, else 16: the faster choice at n ≤ 8 for each llama3-8b shape on
  // the H200 (bench_gpu_linear, docs/gpu-runtime.md); 64 rows never measured faster there
  if (out % 32 == 0 && out / 32 >= 160) return 32;
  return 16;
}

int linear_ss_blocks(const LinearArgs& a) { return a.out / rows_of(a); }

bool pdl_supported() {
  static const bool ok = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      return false;
    return major >= 9;
  }();
  return ok;
}

void launch_linear_small(const LinearArgs& a, void* stream, bool pdl) {
  auto bad = [](const std::string& why) { throw Error("linear_small: " + why); };
  if (!linear_small_ok(a.n, a.in, a.out))
    bad("shape n " + std::to_string(a.n) + ", in " + std::to_string(a.in) + ", out " +
        std::to_string(a.out) + " is not served (n 1..16, in % 64, out % 16)");
  if (!a.W || (!a.x_bf16 == !a.x_f32)) bad("needs W and exactly one of x_bf16 / x_f32");
  if (a.norm_w && (!a.x_f32 || !a.ss_parts || a.ss_blocks <= 0))
    bad("a normalised input needs x_f32 and ss_parts");
  if (a.epi == LinearArgs::kSwiglu ? !a.h : !a.y) bad("no output buffer");
  const int R = rows_of(a);
  if (R != 16 && R != 32 && R != 64) bad("rows_per_block must be 16, 32 or 64");
  // (kSwiglu: a 16-row tile is 8 gate and the same 8 up rows, so out % 16 == 0 suffices)
  if (a.out % R != 0)
    bad("out " + std::to_string(a.out) + " is not a multiple of the block's rows");
  PdlLaunch L(dim3(unsigned(a.out / R)), dim3(kThreads), stream, pdl && pdl_supported());
  cudaLaunchConfig_t& cfg = L.cfg;
  switch (R) {
    case 16:
      launch_mt<1>(a, cfg);
      break;
    case 32:
      launch_mt<2>(a, cfg);
      break;
    default:
      launch_mt<4>(a, cfg);
      break;
  }
}

}  // namespace tq::gpu
