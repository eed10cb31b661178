// turboquant GPU runtime — the GPU backend of the evaluation seam (eval/runner.h): one
// sequence of a GpuRuntime, so `tq perplexity` and `tq generate` run with `--device cuda`
// exactly as on the CPU (the same chunking, scoring and sampling code).
#pragma once
#include <memory>
#include <string>

#include "eval/runner.h"
#include "gpu/runtime.h"

namespace tq::gpu {

class GpuRunner : public SeqRunner {
 public:
  // A runtime of one sequence slot holding max_tokens tokens of cache_type (a GPU cache type;
  // tq::Error otherwise, or when the pool does not fit in GPU memory). Prompts run through
  // chunked prefill (chunks of up to max_chunk tokens); single tokens after a prefill through
  // the decode step (a CUDA graph).
  GpuRunner(const GpuModel& model, const std::string& cache_type, int max_tokens,
            int max_chunk = 512, uint64_t cache_seed = 0x5451'0001);
  const LlamaHparams& hparams() const override { return model_.hparams(); }
  std::string device() const override;
  void reset() override;
  void forward(const int32_t* tokens, int n, std::vector<float>* last, int rows_from = -1,
               const LogitRowsFn& rows = nullptr) override;
  CacheFacts facts() const override;
  GpuRuntime& runtime() { return *rt_; }

 private:
  const GpuModel& model_;
  std::unique_ptr<GpuRuntime> rt_;
  int seq_ = -1;
};

}  // namespace tq::gpu
