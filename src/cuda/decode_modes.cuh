// Decode modes: the compile-time choices of one decode-kernel instantiation, as named structs
// (instead of positional template literals), the runtime flags that select among them, and
// the shared-memory layouts they imply. The production modes are the only ones the library
// instantiates (kernels_impl.cuh); experiments define their own modes in bench/gpu.
#pragma once
#include "cuda/decode_primitives.cuh"
#include "cuda/formats.cuh"

namespace tq::cuda {

// turbo3's int8 codebook tables: one byte per centroid (c ≈ s·T, half the lookups; ~1e-3
// relative error in the attention output) or two exact bytes (c = α(256·K1 + K2)).
enum class T3Tables { kOneByte, kTwoByte };

// What the host asks of one decode launch (GpuCache::decode_impl → launch_decode).
struct DecodeFlags {
  bool stream = false;        // the persistent stream-mode grid, else the split grid
  bool exact_tables = false;  // turbo3: T3Tables::kTwoByte (CacheConfig::exact_codebook)
  bool g4 = false;            // ≤ 4 query heads per KV head (turbo3 values: spare mma columns)
};

// What a launcher reports about the kernel it would launch for some flags.
struct DecodeKernelInfo {
  int ctas_per_sm = 0;  // resident CTAs per multiprocessor (occupancy)
  int warps = 0;        // warps per CTA
};

// One decode-kernel instantiation's choices.
//   kStream:    persistent grid of the resident CTAs, one page range per warp (decode_stream.cuh);
//               else the split grid (split, KV head, sequence).
//   kTables:    turbo3 codebook tables (ignored by the other formats).
//   kPairCols:  G ≤ 4 with turbo3 values and one-byte tables: the mma's spare head columns carry
//               the low parts of P' (and, with turbo3 keys, of the query: "pair columns").
//   kWarps, kStages: warps per CTA; slots of each warp's cp.async page ring.
//   kMinBlocks: __launch_bounds__ minimum CTAs per SM (a register cap).
//   KLookup, VLookup: the turbo3 int8 lookup policies of keys and values (decode_primitives.cuh).
template <bool kStream_, T3Tables kTables_, bool kPairCols_, int kMinBlocks_,
          class KLookup_ = dk::TableLookup, class VLookup_ = dk::TableLookup, int kWarps_ = 4,
          int kStages_ = 3>
struct DecodeMode {
  static constexpr bool kStream = kStream_;
  static constexpr T3Tables kTables = kTables_;
  static constexpr bool kOneByte = kTables_ == T3Tables::kOneByte;
  static constexpr bool kPairCols = kPairCols_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kStages = kStages_;
  using KLookup = KLookup_;
  using VLookup = VLookup_;
};

__host__ __device__ constexpr int decode_stage_bytes(Fmt kf, Fmt vf, int D) {
  return (tile_bytes(kf, D) + tile_bytes(vf, D) + 15) / 16 * 16;
}
// Small pages (compressed types) go through the shared-memory ring; bf16/q8_0 pages are large
// enough that plain loads keep plenty of bytes in flight.
__host__ __device__ constexpr bool decode_uses_ring(Fmt kf, Fmt vf, int D) {
  return decode_stage_bytes(kf, vf, D) <= 5120;
}
// Types the stream mode serves: ring types whose output needs no dense rotation.
__host__ __device__ constexpr bool stream_eligible(Fmt kf, Fmt vf, int D) {
  return decode_uses_ring(kf, vf, D) && !is_split(kf) && !is_split(vf);
}
constexpr bool uses_t3_tables(Fmt kf, Fmt vf) { return kf == Fmt::kTurbo3 || vf == Fmt::kTurbo3; }

// The production modes: the flags normalised to the choices that matter for (KF, VF, D), so
// that flags a format ignores instantiate no second kernel. Measured on the H200 (B = 32,
// ctx = 32768, docs/gpu-notes.md): stream mode at ≤ 168 registers (3 CTAs/SM) and the split
// grid without a cap are the fastest of each grid.
template <Fmt KF, Fmt VF, int D, bool kStream, bool kExact, bool kG4>
struct ProductionModeOf {
  static constexpr bool kT3 = uses_t3_tables(KF, VF);
  static constexpr bool kS = kStream && stream_eligible(KF, VF, D);
  static constexpr T3Tables kTab = kT3 && !kExact ? T3Tables::kOneByte : T3Tables::kTwoByte;
  static constexpr bool kPair = kG4 && VF == Fmt::kTurbo3 && kTab == T3Tables::kOneByte;
  using type = DecodeMode<kS, kTab, kPair, kS ? 3 : 1>;
};
template <Fmt KF, Fmt VF, int D, bool kStream, bool kExact, bool kG4>
using ProductionMode = typename ProductionModeOf<KF, VF, D, kStream, kExact, kG4>::type;

// Shared memory of the split grid: [ring | CTA merge] [turbo3 keys: rotated queries,
// 8 heads × D floats].
template <Fmt KF, Fmt VF, int D, class Mode>
__host__ __device__ constexpr int split_qsm_offset() {
  constexpr int nw = Mode::kWarps;
  const int merge = nw * 8 * 2 * 4 + nw * 8 * D * 4;
  const int ring =
      decode_uses_ring(KF, VF, D) ? nw * Mode::kStages * decode_stage_bytes(KF, VF, D) : 0;
  return merge > ring ? merge : ring;
}
// Stream mode: [ring: NW × kStages × stage bytes][scratch: NW × 8 × D floats].
template <Fmt KF, Fmt VF, int D, class Mode>
__host__ __device__ constexpr int stream_scratch_offset() {
  return Mode::kWarps * Mode::kStages * decode_stage_bytes(KF, VF, D);
}
template <Fmt KF, Fmt VF, int D, class Mode>
__host__ __device__ constexpr int decode_smem_bytes() {
  if constexpr (Mode::kStream)
    return stream_scratch_offset<KF, VF, D, Mode>() + Mode::kWarps * 8 * D * 4;
  else
    return split_qsm_offset<KF, VF, D, Mode>() + (KF == Fmt::kTurbo3 ? 8 * D * 4 : 0);
}

}  // namespace tq::cuda
