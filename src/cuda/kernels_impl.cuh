// Instantiates the decode and append kernels of one head dimension for the supported (K, V)
// format pairs: the same format for K and V, and turbo3p keys with turbo3 values. The split
// types need D >= 128 (their outlier part is D/4 lane elements, a whole number of 32-groups).
#pragma once
#include "cuda/dispatch.h"

namespace tq::cuda {

template <Fmt KF, Fmt VF, int D, int NW, int ST, int MINB, int NPG = 1, bool LAZY = true,
          int DIAG = 0, bool VPAGE = true>
static bool run_decode(const DecodeParams* dp, dim3 grid, cudaStream_t st, int* occ) {
  auto kern = dk::decode_kernel<KF, VF, D, NW, ST, MINB, NPG, LAZY, DIAG, VPAGE>;
  constexpr int smem = dk::decode_smem_bytes(KF, VF, D, NW, ST, VF == Fmt::T3 && !VPAGE);
  static bool attr = false;  // once per instantiation
  if (!attr) {
    cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    attr = true;
  }
  if (occ) {
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(occ, kern, NW * 32, smem) != cudaSuccess)
      *occ = 1;
    return true;
  }
  kern<<<grid, NW * 32, smem, st>>>(*dp);
  return true;
}

template <int D, Fmt KF, Fmt VF>
static bool run_pair(const DecodeParams* dp, const AppendParams* ap, dim3 grid, cudaStream_t st,
                     int* occ) {
  if (dp || occ) {
    if constexpr (KF == Fmt::T3 && VF == Fmt::T3 && D == 128) {
      // variants (bench only): 1 value sums kept over pages (converted when their scale
      // changes, o in shared memory, ≤ 168 registers), 2-5 timing diagnostics (no V / K / any lookup, streaming only), 6 (host side)
      // the split merge in its own kernel
      switch (decode_variant()) {
        case 1: return run_decode<KF, VF, D, 4, 3, 3, 1, true, 0, false>(dp, grid, st, occ);
        // timing diagnostics (wrong results)
        case 2: return run_decode<KF, VF, D, 4, 3, 1, 1, true, 1>(dp, grid, st, occ);
        case 3: return run_decode<KF, VF, D, 4, 3, 1, 1, true, 2>(dp, grid, st, occ);
        case 4: return run_decode<KF, VF, D, 4, 3, 1, 1, true, 3>(dp, grid, st, occ);
        case 5: return run_decode<KF, VF, D, 4, 3, 1, 1, true, 4>(dp, grid, st, occ);
        default: break;
      }
    }
    return run_decode<KF, VF, D, kDecodeWarps, 3, 1>(dp, grid, st, occ);
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
