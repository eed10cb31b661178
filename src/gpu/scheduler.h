// turboquant GPU runtime — continuous batching over a GpuRuntime (DESIGN.md §9).
//
// Policy: requests are admitted first come, first served, whenever a sequence slot is free and
// the pool holds pages for the request's whole budget (prompt + max_new tokens); the pages are
// reserved at admission, so a running sequence never meets a full pool, and a request waits
// (never fails) while others hold the pages. A request that could not fit even in an empty
// pool, or in the context, is a tq::Error before anything runs. Each iteration: admit and
// prefill (chunked) what fits, then one decode step over every running sequence (different
// lengths in one batch), then retire the finished ones, freeing their pages for the next
// admissions.
#pragma once
#include <cstdint>
#include <vector>

#include "gpu/runtime.h"

namespace tq::gpu {

struct Request {
  std::vector<int32_t> prompt;
  int max_new = 16;  // tokens generated (greedy)
};

struct SchedulerStats {
  int steps = 0;          // decode steps
  int max_running = 0;    // largest batch seen
  long tokens_out = 0;    // generated tokens
  int waits = 0;          // iterations where a request waited for pages or a slot
};

// Runs every request to completion; result[i] = the generated tokens of request i.
// margins (optional, costs a logits copy per step): margins[i][j] = the gap between the best
// and the second-best logit where token j of request i was picked (how close a tie it was).
std::vector<std::vector<int32_t>> run_batched(GpuRuntime& rt, const std::vector<Request>& reqs,
                                              SchedulerStats* stats = nullptr,
                                              std::vector<std::vector<float>>* margins = nullptr);

}  // namespace tq::gpu
