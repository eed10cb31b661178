// Runtime → compile-time dispatch of the CUDA kernels (head dim, format pair, mode flags), in the
// style of FlashInfer's DISPATCH_* macros: each macro turns a runtime value into a constexpr of
// the given name and runs the body (statements) with it. Each head dim's kernels are
// instantiated in their own translation unit (kernels_d{64,128,256}.cu).
#pragma once
#include <cuda_runtime.h>

#include "cuda/append_kernels.cuh"
#include "cuda/decode_modes.cuh"
#include "cuda/decode_params.cuh"

// D: 64, 128 or 256 (the head dims with kernels); any other value runs no body.
#define TQ_DISPATCH_HEAD_DIM(head_dim, D, ...) \
  switch (head_dim) {                          \
    case 64: {                                 \
      constexpr int D = 64;                    \
      __VA_ARGS__                              \
    } break;                                   \
    case 128: {                                \
      constexpr int D = 128;                   \
      __VA_ARGS__                              \
    } break;                                   \
    case 256: {                                \
      constexpr int D = 256;                   \
      __VA_ARGS__                              \
    } break;                                   \
    default: break;                            \
  }

#define TQ_DISPATCH_BOOL(cond, NAME, ...) \
  if (cond) {                             \
    constexpr bool NAME = true;           \
    __VA_ARGS__                           \
  } else {                                \
    constexpr bool NAME = false;          \
    __VA_ARGS__                           \
  }

// The (K, V) format pairs the cache stores (see pair_supported): the same format for K and V,
// or turbo3p keys with turbo3 values. The body sees KF and VF; pairs that are not
// instantiated at a head dim must be skipped with `if constexpr (pair_supported(KF, VF, D))`.
#define TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, K, V, ...)                    \
  if (kf == ::tq::cuda::Fmt::K && vf == ::tq::cuda::Fmt::V) {               \
    constexpr ::tq::cuda::Fmt KF = ::tq::cuda::Fmt::K, VF = ::tq::cuda::Fmt::V; \
    __VA_ARGS__                                                             \
  }
#define TQ_DISPATCH_FORMAT_PAIR(kf, vf, KF, VF, ...)                             \
  TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kBF16, kBF16, __VA_ARGS__)               \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kQ8_0, kQ8_0, __VA_ARGS__)          \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kQ4_0, kQ4_0, __VA_ARGS__)          \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kFp8E4M3, kFp8E4M3, __VA_ARGS__)    \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kTurbo2, kTurbo2, __VA_ARGS__)      \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kTurbo3, kTurbo3, __VA_ARGS__)      \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kTurbo4, kTurbo4, __VA_ARGS__)      \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kTurbo2_5, kTurbo2_5, __VA_ARGS__)  \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kTurbo3_5, kTurbo3_5, __VA_ARGS__)  \
  else TQ_DISPATCH_PAIR_CASE(kf, vf, KF, VF, kTurbo3p, kTurbo3, __VA_ARGS__)

namespace tq::cuda {

// A decode launcher: launches the kernel for (kf, vf, D, flags) on grid (dp != null), or fills
// info (dp == null). Returns false when no kernel is instantiated for them.
using DecodeLauncher = bool (*)(Fmt kf, Fmt vf, int D, const DecodeFlags& flags,
                                const DecodeParams* dp, dim3 grid, cudaStream_t st,
                                DecodeKernelInfo* info);

// The production kernels (kernels_d*.cu).
bool launch_decode_production(Fmt kf, Fmt vf, int D, const DecodeFlags& flags,
                              const DecodeParams* dp, dim3 grid, cudaStream_t st,
                              DecodeKernelInfo* info);
template <int D>
bool launch_decode_d(Fmt kf, Fmt vf, const DecodeFlags& flags, const DecodeParams* dp,
                     dim3 grid, cudaStream_t st, DecodeKernelInfo* info);

// Benchmarks only (bench/gpu/decode_variants.cu): route every decode launch of the process
// through another launcher, to run experimental kernels on a cache's data; nullptr (the
// default) restores the production kernels. The library itself instantiates no experiment.
void set_decode_launcher(DecodeLauncher launcher);
DecodeLauncher decode_launcher();

bool launch_append(Fmt kf, Fmt vf, int D, const AppendParams& p, dim3 grid, cudaStream_t st);
template <int D>
bool launch_append_d(Fmt kf, Fmt vf, const AppendParams& p, dim3 grid, cudaStream_t st);

}  // namespace tq::cuda
