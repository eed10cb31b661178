// turboquant — the cache formats the CUDA backend stores, as one definition shared by the
// CPU registry (each type's traits name its GPU format) and src/cuda (which indexes its
// format tables by it). The CPU codec and the GPU format of one name hold the same numbers
// (same rotation seed tags, centroids, scales); the cross-backend test compares them.
#pragma once

namespace tq {

// Values are indices into src/cuda's format tables: keep them dense and in this order.
enum class GpuFormat : int {
  kNone = -1,  // the type has no CUDA implementation
  kBF16 = 0,
  kQ8_0,
  kQ4_0,
  kTurbo2,
  kTurbo3,
  kTurbo4,
  kTurbo2_5,
  kTurbo3_5,
  kTurbo3p,  // keys only
  kFp8E4M3,  // OCP E4M3FN values, one fp16 scale per token (and head)
  kCount
};

}  // namespace tq
