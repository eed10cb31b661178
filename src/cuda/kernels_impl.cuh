// Instantiates the production decode and append kernels of one head dimension (TQ_HEAD_DIM) for
// the supported (K, V) format pairs (pair_supported, formats.cuh). Included once by each
// kernels_d{64,128,256}.cu, so the head dims compile in parallel.
#pragma once
#include "cuda/decode_launch.cuh"
#include "cuda/dispatch.h"

namespace tq::cuda {

// One format pair (a template, so that the unsupported pairs' bodies are discarded).
template <int D, Fmt KF, Fmt VF>
bool launch_decode_pair(const DecodeFlags& flags, const DecodeParams* dp, dim3 grid,
                        cudaStream_t st, DecodeKernelInfo* info) {
  if constexpr (!pair_supported(KF, VF, D)) {
    return false;
  } else {
    TQ_DISPATCH_BOOL(flags.stream, kStream, {
      TQ_DISPATCH_BOOL(flags.exact_tables, kExact, {
        TQ_DISPATCH_BOOL(flags.g4, kG4, {
          using Mode = ProductionMode<KF, VF, D, kStream, kExact, kG4>;
          return run_decode<KF, VF, D, Mode>(dp, grid, st, info);
        })
      })
    })
  }
}
template <int D, Fmt KF, Fmt VF>
bool launch_append_pair(const AppendParams& p, dim3 grid, cudaStream_t st) {
  if constexpr (!pair_supported(KF, VF, D)) {
    return false;
  } else {
    constexpr int smem = ak::append_smem_bytes(KF, VF, D);
    ak::append_kernel<KF, VF, D><<<grid, ak::kWarps * 32, smem, st>>>(p);
    return true;
  }
}

template <>
bool launch_decode_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf, const DecodeFlags& flags,
                                  const DecodeParams* dp, dim3 grid, cudaStream_t st,
                                  DecodeKernelInfo* info) {
  TQ_DISPATCH_FORMAT_PAIR(kf, vf, KF, VF, {
    return launch_decode_pair<TQ_HEAD_DIM, KF, VF>(flags, dp, grid, st, info);
  })
  return false;
}

template <>
bool launch_append_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf, const AppendParams& p, dim3 grid,
                                  cudaStream_t st) {
  TQ_DISPATCH_FORMAT_PAIR(kf, vf, KF, VF,
                          { return launch_append_pair<TQ_HEAD_DIM, KF, VF>(p, grid, st); })
  return false;
}

}  // namespace tq::cuda
