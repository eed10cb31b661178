// Per-head-dim kernel dispatch (each head dim instantiated in its own .cu file).
#pragma once
#include <cuda_runtime.h>

#include "cuda/append_kernels.cuh"
#include "cuda/decode_kernels.cuh"

namespace tq::cuda {

constexpr int kDecodeWarps = 4;
// Decode kernel variant for tuning (turbo3, D = 128 only; see kernels_impl.cuh): 0 default.
int decode_variant();
// Whether the variant runs in stream mode (the host then launches the persistent grid).
inline bool decode_variant_streams(int v) { return v != 1 && v != 4; }
// Warps per decode CTA.
inline int decode_warps(Fmt, Fmt, int) { return kDecodeWarps; }

// Decode launch modes (bits): the persistent stream-mode kernel (dk::stream_eligible types; else
// the split grid), turbo3's exact two-byte codebook tables (else one-byte tables).
// G ≤ 4 query heads per KV head (turbo3 values use the mma's spare head columns).
constexpr int kDecodeStream = 1, kDecodeExact = 2, kDecodeG4 = 4;
// Return false when (kf, vf, D) is not instantiated.
bool launch_decode(Fmt kf, Fmt vf, int D, const DecodeParams& p, dim3 grid, cudaStream_t st,
                   int mode);
bool launch_append(Fmt kf, Fmt vf, int D, const AppendParams& p, dim3 grid, cudaStream_t st);

template <int D>
bool launch_decode_d(Fmt kf, Fmt vf, const DecodeParams& p, dim3 grid, cudaStream_t st,
                     int mode);
// Resident decode CTAs per SM for (kf, vf, D) (0: not instantiated).
int decode_occupancy(Fmt kf, Fmt vf, int D, int mode);
template <int D>
int decode_occupancy_d(Fmt kf, Fmt vf, int mode);
template <int D>
bool launch_append_d(Fmt kf, Fmt vf, const AppendParams& p, dim3 grid, cudaStream_t st);

}  // namespace tq::cuda
