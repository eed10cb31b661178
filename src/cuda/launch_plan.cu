// Decode launch planning (see launch_plan.h).
#include "cuda/launch_plan.h"

#include <algorithm>

#include "tq/error.h"

namespace tq::cuda {

DecodePlan plan_decode(const DecodePlanInput& in,
                       const std::function<DecodeKernelInfo(bool stream)>& kernel_info) {
  TQ_ASSERT(in.B > 0 && in.Hkv > 0 && in.Hq % in.Hkv == 0 && in.pages >= 1 && in.sms > 0);
  DecodePlan plan;
  const double work = double(in.B) * in.Hkv * in.pages;  // (sequence, KV head, page) units
  // Stream mode (persistent grid, decode_stream.cuh) for an automatic split count in decode
  // (not prefill: its causal lengths differ per row) and the types it serves.
  bool stream = in.splits <= 0 && !in.shared_table && in.stream_eligible &&
                in.grid != DecodeGrid::kSplit;
  DecodeKernelInfo sk{};
  if (stream) sk = kernel_info(true);
  // Stream mode pays off with ≥ 32 pages per warp (measured: B = 1 ran 1.3-2.6x slower in
  // stream mode, its many short pieces per segment merged by one warp each).
  if (stream && in.grid == DecodeGrid::kAuto)
    stream = work >= 32.0 * in.sms * std::max(1, sk.ctas_per_sm) * std::max(1, sk.warps);
  int splits = in.splits;
  if (stream) {
    if (work >= 2e9) throw Error("CUDA decode: too many pages for one call");
    plan.stream_ctas = in.grid == DecodeGrid::kStream && in.stream_ctas > 0
                           ? in.stream_ctas
                           : in.sms * std::max(1, sk.ctas_per_sm);
    splits = 1;
  } else if (splits <= 0) {
    // Fill whole waves: minimise waves × (pages per CTA + fixed per-CTA cost), counted in pages.
    const DecodeKernelInfo k = kernel_info(false);
    const long resident = long(in.sms) * std::max(1, k.ctas_per_sm);
    const long pairs = long(in.B) * in.Hkv;
    double best = 1e300;
    for (int s = 1; s <= std::min(in.pages, 512); ++s) {
      const long waves = (pairs * s + resident - 1) / resident;
      const double cost =
          double(waves) * (double((in.pages + s - 1) / s) + 6.0 * std::max(1, k.warps));
      if (cost < best - 1e-9) {
        best = cost;
        splits = s;
      }
    }
  }
  splits = std::clamp(splits, 1, in.pages);
  plan.pages_per_split = (in.pages + splits - 1) / splits;
  plan.splits = (in.pages + plan.pages_per_split - 1) / plan.pages_per_split;
  plan.stream = stream;
  const size_t rows = size_t(in.B) * in.Hq;
  if (stream) {
    // one partial (8 heads × D, 8 × (m, l)) per segment piece: at most B·Hkv + warps pieces
    const size_t pieces = size_t(in.B) * in.Hkv + size_t(plan.stream_ctas) * sk.warps;
    plan.part_o_floats = pieces * 8 * in.D;
    plan.part_ml_floats = pieces * 16;
  } else {
    plan.part_o_floats = rows * plan.splits * in.D;
    plan.part_ml_floats = rows * plan.splits * 2;
  }
  return plan;
}

}  // namespace tq::cuda
