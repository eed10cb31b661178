// Per-head-dim kernel dispatch (each head dim instantiated in its own .cu file).
#pragma once
#include <cuda_runtime.h>

#include "cuda/append_kernels.cuh"
#include "cuda/decode_kernels.cuh"

namespace tq::cuda {

constexpr int kDecodeWarps = 4;
// Decode kernel variant for tuning (turbo3, D = 128 only; see kernels_impl.cuh): 0 default.
int decode_variant();
// Warps per decode CTA.
inline int decode_warps(Fmt, Fmt, int) { return kDecodeWarps; }

// Return false when (kf, vf, D) is not instantiated.
bool launch_decode(Fmt kf, Fmt vf, int D, const DecodeParams& p, dim3 grid, cudaStream_t st);
bool launch_append(Fmt kf, Fmt vf, int D, const AppendParams& p, dim3 grid, cudaStream_t st);

template <int D>
bool launch_decode_d(Fmt kf, Fmt vf, const DecodeParams& p, dim3 grid, cudaStream_t st);
// Resident decode CTAs per SM for (kf, vf, D) (0: not instantiated).
int decode_occupancy(Fmt kf, Fmt vf, int D);
template <int D>
int decode_occupancy_d(Fmt kf, Fmt vf);
template <int D>
bool launch_append_d(Fmt kf, Fmt vf, const AppendParams& p, dim3 grid, cudaStream_t st);

}  // namespace tq::cuda
