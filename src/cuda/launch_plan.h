// Launch planning of one decode call (host only, no CUDA calls): which grid, how many splits or
// stream-mode CTAs, and the workspace the partials need. Pure arithmetic over the shape and the
// kernel's occupancy, so it is tested without a GPU (tests/cuda/test_cuda_attention.cu).
#pragma once
#include <cstddef>
#include <functional>

#include "cuda/decode_modes.cuh"
#include "cuda/tq_cuda.h"

namespace tq::cuda {

struct DecodePlanInput {
  int B = 0, Hq = 0, Hkv = 0, D = 0;
  int pages = 1;               // pages of the longest sequence (≥ 1)
  int splits = 0;              // requested split count (≤ 0: automatic)
  bool shared_table = false;   // prefill: every row reads the same block-table row
  bool stream_eligible = false;
  int sms = 132;               // multiprocessors
  DecodeGrid grid = DecodeGrid::kAuto;
  int stream_ctas = 0;         // DecodeGrid::kStream: CTAs (≤ 0: one per resident slot)
};

struct DecodePlan {
  bool stream = false;
  int stream_ctas = 0;       // stream mode: the persistent grid
  int splits = 1, pages_per_split = 1;
  size_t part_o_floats = 0;  // workspace: partial outputs, then (m, l) pairs
  size_t part_ml_floats = 0;
};

// kernel_info(stream): the occupancy and warps of the kernel that would run in that grid.
// Throws tq::Error when the call is too large for one launch.
DecodePlan plan_decode(const DecodePlanInput& in,
                       const std::function<DecodeKernelInfo(bool stream)>& kernel_info);

}  // namespace tq::cuda
