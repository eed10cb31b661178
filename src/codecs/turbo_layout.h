// The numbers the turbo codecs (turbo.cpp) and the CUDA cache (src/cuda/format_tables.cu) must
// agree on to store the same codes: the seed tags of their random draws and the outlier split
// of turbo2.5/turbo3.5 (DESIGN.md §3). One definition, included by both.
#pragma once
#include <cstdint>

namespace tq::turbo_layout {

// derive_seed(seed, tag): the rotation Π of every turbo type, the QJL sketch S of turboNp, and
// the rotations of the two parts of the split types.
constexpr uint64_t kRotationTag = 1, kSketchTag = 2, kSplitHiTag = 3, kSplitLoTag = 4;

// Split types: the outlier part is dim/4 channels (by default the first dim/4), coded with
// `hi` bits; the other channels with `lo` bits.
constexpr int split_outlier_dims(int dim) { return dim / 4; }
struct SplitBits {
  int hi, lo;
};
constexpr SplitBits kTurbo2_5Bits{3, 2}, kTurbo3_5Bits{4, 3};

}  // namespace tq::turbo_layout
