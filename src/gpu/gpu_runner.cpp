// turboquant GPU runtime — GpuRunner (see gpu_runner.h).
#include "gpu/gpu_runner.h"

#include <algorithm>

namespace tq::gpu {

GpuRunner::GpuRunner(const GpuModel& model, const std::string& cache_type, int max_tokens,
                     int max_chunk, uint64_t cache_seed)
    : model_(model) {
  RuntimeConfig rc;
  rc.cache_seed = cache_seed;
  rc.cache_type = cache_type;
  rc.max_seqs = 1;
  rc.max_ctx = std::max(1, max_tokens);
  rc.max_chunk = std::max(1, std::min(max_chunk, rc.max_ctx));
  rt_ = std::make_unique<GpuRuntime>(model, rc);
}

std::string GpuRunner::device() const { return "cuda (" + gpu_name() + ")"; }

void GpuRunner::reset() {
  if (seq_ >= 0) rt_->free_seq(seq_);
  seq_ = rt_->new_seq();
}

void GpuRunner::forward(const int32_t* tokens, int n, std::vector<float>* last, int rows_from,
                        const LogitRowsFn& rows) {
  if (seq_ < 0) reset();
  if (n == 1 && rt_->seq_len(seq_) > 0 && !(rows && rows_from == 0)) {
    // a generated token: the decode step over the stored cache (graph replay)
    rt_->decode({seq_}, {tokens[0]}, nullptr, last);
    return;
  }
  rt_->prefill(seq_, tokens, n, last, rows ? rows_from : -1, rows);
}

CacheFacts GpuRunner::facts() const {
  CacheFacts f;
  const LlamaHparams& hp = model_.hparams();
  const size_t per_token = rt_->page_bytes_all_layers() / 32;  // K and V, every layer
  f.kv_bytes = per_token * size_t(seq_ >= 0 ? rt_->seq_len(seq_) : 0);
  // K and V have the same GPU format: half a token's bytes each, per stored value
  const double values = double(hp.n_layer) * hp.n_kv_head * hp.head_dim;
  f.bpv_k = f.bpv_v = 8.0 * double(per_token) / (2.0 * values);
  return f;
}

}  // namespace tq::gpu
