// Instantiates the decode and append kernels of one head dimension for the supported (K, V)
// format pairs: the same format for K and V, and turbo3p keys with turbo3 values. The split
// types need D >= 128 (their outlier part is D/4 lane elements, a whole number of 32-groups).
#pragma once
#include "cuda/dispatch.h"

namespace tq::cuda {

template <Fmt KF, Fmt VF, int D, int NW, int ST, int MINB, int DIAG = 0, bool STREAM = false,
          int TAB = 2, bool G4 = false>
static bool run_decode(const DecodeParams* dp, dim3 grid, cudaStream_t st, int* occ) {
  auto kern = dk::decode_kernel<KF, VF, D, NW, ST, MINB, DIAG, STREAM, TAB, G4>;
  constexpr int smem = STREAM ? dk::stream_smem_bytes(KF, VF, D, NW, ST)
                              : dk::decode_smem_bytes(KF, VF, D, NW, ST);
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
                     int* occ, int mode) {
  const bool stream = (mode & kDecodeStream) != 0, exact = (mode & kDecodeExact) != 0;
  const bool g4 = (mode & kDecodeG4) != 0;
  constexpr int NW = kDecodeWarps;
  if (dp || occ) {
    if constexpr (KF == Fmt::T3 && VF == Fmt::T3 && D == 128) {
      const int v = stream == decode_variant_streams(decode_variant()) ? decode_variant() : 0;
      // variants (bench; the host picks the split grid for 1 and 4, see decode_variant_streams):
      // 1 split grid with the exact two-byte tables (session 3's default), 2 an 8-bit query
      // (kTab 0), 3 exact tables (stream mode), 4 split grid with the default options,
      // 5 streaming only and 6 no lookups (timing diagnostics, wrong results), 7 the default
      // at ≤ 128 registers (4 CTAs/SM)
      switch (v) {
        case 1: return run_decode<KF, VF, D, NW, 3, 1>(dp, grid, st, occ);
        case 2: return run_decode<KF, VF, D, NW, 3, 3, 0, true, 0, true>(dp, grid, st, occ);
        case 3: return run_decode<KF, VF, D, NW, 3, 3, 0, true, 2>(dp, grid, st, occ);
        case 4: return run_decode<KF, VF, D, NW, 3, 1, 0, false, 1, true>(dp, grid, st, occ);
        case 5: return run_decode<KF, VF, D, NW, 3, 3, 4, true, 2>(dp, grid, st, occ);
        case 6: return run_decode<KF, VF, D, NW, 3, 3, 3, true, 1, true>(dp, grid, st, occ);
        case 7: return run_decode<KF, VF, D, NW, 3, 4, 0, true, 1, true>(dp, grid, st, occ);
        default: break;
      }
    }
    // turbo3 (keys or values): one-byte codebook tables (kTab 1) unless exact (two-byte)
    constexpr bool kT3 = KF == Fmt::T3 || VF == Fmt::T3;
    if constexpr (dk::stream_eligible(KF, VF, D)) {
      // ≤ 168 registers: 3 CTAs (12 warps) per SM
      if (stream) {
        if (kT3 && exact)
          return run_decode<KF, VF, D, NW, 3, 3, 0, true, 2>(dp, grid, st, occ);
        if (VF == Fmt::T3 && g4)
          return run_decode<KF, VF, D, NW, 3, 3, 0, true, 1, true>(dp, grid, st, occ);
        return run_decode<KF, VF, D, NW, 3, 3, 0, true, kT3 ? 1 : 2>(dp, grid, st, occ);
      }
    }
    if (kT3 && exact) return run_decode<KF, VF, D, NW, 3, 1, 0, false, 2>(dp, grid, st, occ);
    if (VF == Fmt::T3 && g4)
      return run_decode<KF, VF, D, NW, 3, 1, 0, false, 1, true>(dp, grid, st, occ);
    return run_decode<KF, VF, D, NW, 3, 1, 0, false, kT3 ? 1 : 2>(dp, grid, st, occ);
  } else {
    constexpr int smem = ak::append_smem_bytes(KF, VF, D);
    ak::append_kernel<KF, VF, D><<<grid, ak::kWarps * 32, smem, st>>>(*ap);
  }
  return true;
}

template <int D>
static bool run_any(Fmt kf, Fmt vf, const DecodeParams* dp, const AppendParams* ap, dim3 grid,
                    cudaStream_t st, int* occ = nullptr, int mode = 0) {
#define TQ_PAIR(K, V) \
  if (kf == Fmt::K && vf == Fmt::V)         \
    return run_pair<D, Fmt::K, Fmt::V>(dp, ap, grid, st, occ, mode);
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
                                  cudaStream_t st, int mode) {
  return run_any<TQ_HEAD_DIM>(kf, vf, &p, nullptr, grid, st, nullptr, mode);
}
template <>
int decode_occupancy_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf, int mode) {
  int occ = 0;
  if (!run_any<TQ_HEAD_DIM>(kf, vf, nullptr, nullptr, dim3(), nullptr, &occ, mode)) return 0;
  return occ;
}
template <>
bool launch_append_d<TQ_HEAD_DIM>(Fmt kf, Fmt vf, const AppendParams& p, dim3 grid,
                                  cudaStream_t st) {
  return run_any<TQ_HEAD_DIM>(kf, vf, nullptr, &p, grid, st);
}

}  // namespace tq::cuda
