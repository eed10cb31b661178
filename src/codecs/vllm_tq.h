// vLLM TurboQuant component codecs (see vllm_tq.cpp for the layouts). Exposed for tests and
// for the SIMD/CUDA kernels, which need the same codebook.
#pragma once
#include <vector>

namespace tq {

// vLLM's Lloyd-Max codebook for N(0, 1/d) with 2^bits levels (ascending float32 centroids and
// the float32 midpoints between neighbours), solved once and cached (thread-safe).
struct VllmCodebook {
  std::vector<float> centroids, midpoints;
};
const VllmCodebook& vllm_codebook(int d, int bits);

}  // namespace tq
