// turboquant GPU runtime — the small-batch linear layer of the decode step (DESIGN.md §9).
//
// At decode a linear layer multiplies a few rows (one per sequence, n ≤ 16) by a bf16 weight
// matrix that is read from HBM once per step: it is a bandwidth problem, and the element-wise
// steps around it (RMSNorm, fp32 → bf16, residual add, SwiGLU) cost a kernel launch each. This
// kernel streams the weights with tensor-core MMAs (m16n8k16 bf16, fp32 accumulate) and folds
// those steps into its input and output:
//
//   input   x_bf16 [n][in]                      used as is
//           x_f32  [n][in], norm_w == null      rounded to bf16 on load
//           x_f32  [n][in], norm_w [in]         bf16(x · rsqrt(Σx²/in + eps) · norm_w) on load,
//                                               Σx² of each row from ss_parts (below)
//   output  kStore     y fp32 [n][out] = x·Wᵀ
//           kResidual  y fp32 [n][out] += x·Wᵀ, and, when ss_out is set, the partial sums of
//                      squares of the new y: ss_out[block][row] over the block's columns
//                      (ss_blocks(out) blocks of kMaxRows floats), which the next normalised
//                      input sums in a fixed order (deterministic, no atomics)
//           kSwiglu    W rows [gate (F); up (F)], out = 2F: h bf16 [n][F] = silu(x·Wgᵀ)·(x·Wuᵀ)
//
// The same function as cuBLAS GEMM + the unfused kernels of ops.h up to rounding (sums in a
// different order; a normalised input's rsqrt from partial sums); reference: ref::linear_small
// in ops_ref.h, tested in tests/cuda/test_gpu_linear.cu.
//
// Launched with programmatic dependent launch when asked (sm_90): the kernel starts reading
// its weights before the previous kernel has finished (weights are never written during a
// forward pass) and waits for it (griddepcontrol.wait) before it reads activations or writes.
#pragma once
#include <cstdint>

namespace tq::gpu {

struct LinearArgs {
  enum Epilogue { kStore, kResidual, kSwiglu };
  const uint16_t* W = nullptr;  // bf16 [out][in], row-major
  int in = 0, out = 0, n = 0;
  const uint16_t* x_bf16 = nullptr;  // one of x_bf16 / x_f32
  const float* x_f32 = nullptr;
  const float* norm_w = nullptr;    // with x_f32: RMS-normalise on load
  const float* ss_parts = nullptr;  // [ss_blocks][kMaxRows], from a kResidual launch
  int ss_blocks = 0;
  float eps = 0.f;
  Epilogue epi = kStore;
  float* y = nullptr;       // kStore, kResidual
  uint16_t* h = nullptr;    // kSwiglu
  float* ss_out = nullptr;  // kResidual (optional)
  int rows_per_block = 0;   // 16, 32 or 64 output rows per block; 0: chosen by shape
};

constexpr int kLinearMaxRows = 16;

// Whether the kernel serves this shape: 1 ≤ n ≤ 16, in % 64 == 0, out % 16 == 0.
bool linear_small_ok(int n, int in, int out);
// Output rows per block for a shape when rows_per_block is 0.
int linear_rows_per_block(int out);
// Blocks (= partial sums per row) of a kResidual launch with this out and rows_per_block.
int linear_ss_blocks(const LinearArgs& a);
// tq::Error for a shape or argument combination the kernel does not serve.
void launch_linear_small(const LinearArgs& a, void* stream, bool pdl);

// Programmatic dependent launch available on the current device (compute capability ≥ 9).
bool pdl_supported();

}  // namespace tq::gpu
