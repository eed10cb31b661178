// turboquant — the seam between what the evaluation commands measure (perplexity, generation)
// and the backend that runs the model (DESIGN.md §9): one sequence at a time, token ids in,
// logits out, the K/V stored in that backend's cache. The CPU runner wraps LlamaModel and the
// CPU KvCache; the GPU runner (gpu/gpu_runner.h) wraps GpuRuntime. run_perplexity and
// run_generate are written once against this interface, so `--device cuda` measures the same
// thing the same way.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "model/llama.h"

namespace tq {

// What a runner's cache holds for the current sequence.
struct CacheFacts {
  size_t kv_bytes = 0;  // stored bytes (codes, scales, means, sinks: everything)
  double bpv_k = 0, bpv_v = 0;
  int centred_layers = 0;  // layers whose keys are mean-centred
};

// emit(r0, nr, logits): rows [r0, r0 + nr) of a forward, logits[nr][n_vocab].
using LogitRowsFn = std::function<void(int r0, int nr, const float* logits)>;

class SeqRunner {
 public:
  virtual ~SeqRunner() = default;
  virtual const LlamaHparams& hparams() const = 0;
  virtual std::string device() const = 0;  // "cpu", "cuda (NVIDIA H200)", ...
  // Frees the current sequence (if any) and starts an empty one.
  virtual void reset() = 0;
  // Runs n tokens at the sequence's next positions: their K/V are stored first, then their
  // queries attend to the stored cache. rows (optional): the logits of rows [rows_from, n) in
  // order, in blocks; last (optional): the logits of the last token.
  virtual void forward(const int32_t* tokens, int n, std::vector<float>* last, int rows_from = -1,
                       const LogitRowsFn& rows = nullptr) = 0;
  virtual CacheFacts facts() const = 0;
};

// The CPU backend: `max_tokens` tokens of one sequence in a KvCache of `opts` (checked against
// the machine's memory before it allocates; tq::Error when it does not fit).
class CpuRunner : public SeqRunner {
 public:
  CpuRunner(const LlamaModel& model, KvCacheOptions opts, int max_tokens);
  const LlamaHparams& hparams() const override { return model_.hparams(); }
  std::string device() const override { return "cpu"; }
  void reset() override;
  void forward(const int32_t* tokens, int n, std::vector<float>* last, int rows_from = -1,
               const LogitRowsFn& rows = nullptr) override;
  CacheFacts facts() const override;

  // `tq compare`'s hooks reach into the CPU state of the last forward.
  KvCache& cache() { return *cache_; }
  int seq() const { return seq_; }
  const std::vector<float>& last_hidden() const { return hidden_; }

 private:
  const LlamaModel& model_;
  std::unique_ptr<KvCache> cache_;
  int seq_ = -1;
  std::vector<float> hidden_, rows_buf_;
};

}  // namespace tq
