// Launching one decode-kernel instantiation (KF, VF, D, Mode), or reporting its occupancy and
// warps: the one place that knows a mode's block size and shared memory. Used by the
// production dispatch (kernels_impl.cuh) and by experiments (bench/gpu/decode_variants.cu).
#pragma once
#include <cuda_runtime.h>

#include "cuda/decode_kernel.cuh"
#include "cuda/decode_modes.cuh"

namespace tq::cuda {

// Dynamic shared memory of one instantiation. The stream mode runs a persistent grid of the
// resident CTAs and is tuned for Mode::kMinBlocks CTAs per SM (the register cap of its
// __launch_bounds__). ptxas may need fewer registers than that cap allows (the turbo3 pair-column
// kernel: 128 of 168 after the split of decode_kernels.cuh), and 4 CTAs/SM then ran 8 % slower
// on the H200 (bench/results/gpu-house-before-after.txt). So the stream mode reserves enough
// shared memory that no more than kMinBlocks CTAs fit on a multiprocessor.
template <Fmt KF, Fmt VF, int D, class Mode>
int decode_launch_smem() {
  int smem = decode_smem_bytes<KF, VF, D, Mode>();
  if constexpr (Mode::kStream) {
    int dev = 0, per_sm = 0, reserved = 0, optin = 0;
    if (cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) ==
            cudaSuccess &&
        cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, dev) ==
            cudaSuccess &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) ==
            cudaSuccess) {
      // kMinBlocks + 1 CTAs of this size (plus the per-CTA reservation) exceed the SM
      const int cap = per_sm / (Mode::kMinBlocks + 1) - reserved + 1;
      if (cap > smem && cap <= optin) smem = cap;
    }
  }
  return smem;
}

// dp != null: launch on grid; info != null: fill it instead (nothing is launched).
template <Fmt KF, Fmt VF, int D, class Mode>
bool run_decode(const DecodeParams* dp, dim3 grid, cudaStream_t st, DecodeKernelInfo* info) {
  auto kern = dk::decode_kernel<KF, VF, D, Mode>;
  constexpr int kThreads = Mode::kWarps * 32;
  static const int smem = [&] {  // once per instantiation
    const int bytes = decode_launch_smem<KF, VF, D, Mode>();
    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    return bytes;
  }();
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
