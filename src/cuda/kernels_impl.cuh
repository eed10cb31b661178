// Instantiates the decode and append kernels of one head dimension for the supported (K, V)
// format pairs: the same format for K and V, and turbo3p keys with turbo3 values. The split
// types need D >= 128 (their outlier part is D/4 lane elements, a whole number of 32-groups).
#pragma once
#include "cuda/dispatch.h"

namespace tq::cuda {

template <int D, Fmt KF, Fmt VF>
static bool run_pair(const DecodeParams* dp, const AppendParams* ap, dim3 grid, cudaStream_t st,
                     int* occ) {
  if (dp || occ) {
    auto kern = dk::decode_kernel<KF, VF, D, kDecodeWarps>;
    constexpr int smem = dk::decode_smem_bytes(KF, VF, D, kDecodeWarps);
    static bool attr = false;  // once per instantiation
    if (!attr) {
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      attr = true;
    }
    if (occ) {
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(occ, kern, kDecodeWarps * 32, smem) !=
          cudaSuccess)
        *occ = 1;
      return true;
    }
    kern<<<grid, kDecodeWarps * 32, smem, st>>>(*dp);
  } else {
    constexpr int smem = ak::append_smem_bytes(KF, VF, D);
    ak::append_kernel<KF, VF, D><<<grid, ak::kWarps * 32, smem, st>>>(*ap);
  }
  return true;
}

template <int D>
static bool run_any(Fmt kf, Fmt vf, const DecodeParams* dp, const AppendParams* ap, dim3 grid,
                    cudaStream_t st, int* occ = nullptr) {
#define TQ_PAIR(K, V) \
  if (kf == Fmt::K && vf == Fmt::V) return run_pair<D, Fmt::K, Fmt::V>(dp, ap, grid, st, occ);
  TQ_PAIR(BF16, BF16)
  TQ_PAIR(Q8_0, Q8_0)
  TQ_PAIR(Q4_0, Q4_0)
  TQ_PAIR(T2, T2)
  TQ_PAIR(T3, T3)
  TQ_PAIR(T4, T4)
  TQ_PAIR(T3P, T3)
  if constexpr (D >= 128) {
    TQ_PAIR(T25, T25)
    TQ_PAIR(T35, T35)
  }
#undef TQ_PAIR
  return false;
}

template <>
bool launch_decode_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf, const DecodeParams& p, dim3 grid,
                                  cudaStream_t st) {
  return run_any<TQ_HEAD_DIM>(kf, vf, &p, nullptr, grid, st);
}
template <>
int decode_occupancy_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf) {
  int occ = 0;
  if (!run_any<TQ_HEAD_DIM>(kf, vf, nullptr, nullptr, dim3(), nullptr, &occ)) return 0;
  return occ;
}
template <>
bool launch_append_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf, const AppendParams& p, dim3 grid,
                                  cudaStream_t st) {
  return run_any<TQ_HEAD_DIM>(kf, vf, nullptr, &p, grid, st);
}

}  // namespace tq::cuda
