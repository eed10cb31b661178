// Launching one decode-kernel instantiation (KF, VF, D, Mode), or reporting its occupancy and
// warps: the one place that knows a mode's block size and shared memory. Used by the
// production dispatch (kernels_impl.cuh) and by experiments (bench/gpu/decode_variants.cu).
#pragma once
#include <cuda_runtime.h>

#include "cuda/decode_kernel.cuh"
#include "cuda/decode_modes.cuh"

namespace tq::cuda {

// dp != null: launch on grid; info != null: fill it instead (nothing is launched).
template <Fmt KF, Fmt VF, int D, class Mode>
bool run_decode(const DecodeParams* dp, dim3 grid, cudaStream_t st, DecodeKernelInfo* info) {
  auto kern = dk::decode_kernel<KF, VF, D, Mode>;
  constexpr int kThreads = Mode::kWarps * 32;
  constexpr int smem = decode_smem_bytes<KF, VF, D, Mode>();
  static bool attr = false;  // once per instantiation
  if (!attr) {
    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    attr = true;
  }
  if (info) {
    info->warps = Mode::kWarps;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&info->ctas_per_sm, kern, kThreads, smem) !=
        cudaSuccess)
      info->ctas_per_sm = 1;
    return true;
  }
  kern<<<grid, kThreads, smem, st>>>(*dp);
  return true;
}

}  // namespace tq::cuda
