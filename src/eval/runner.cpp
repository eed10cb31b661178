// turboquant — the CPU runner (see runner.h).
#include "eval/runner.h"

#include <algorithm>

#include "model/memcheck.h"

namespace tq {

CpuRunner::CpuRunner(const LlamaModel& model, KvCacheOptions opts, int max_tokens) : model_(model) {
  opts.max_tokens = std::max(opts.max_tokens, max_tokens);
  opts.max_seqs = 1;
  check_memory(model, opts);  // refuses, before the cache allocates, a run that cannot fit
  cache_ = std::make_unique<KvCache>(model.kv_shape(), opts);
}

void CpuRunner::reset() {
  if (seq_ >= 0) cache_->free_seq(seq_);
  seq_ = cache_->new_seq();
  hidden_.clear();
}

void CpuRunner::forward(const int32_t* tokens, int n, std::vector<float>* last, int rows_from,
                        const LogitRowsFn& rows) {
  if (seq_ < 0) reset();
  const bool want_rows = rows && rows_from >= 0 && rows_from < n;
  model_.forward(*cache_, seq_, tokens, n, want_rows ? &hidden_ : nullptr, last);
  if (!want_rows) return;
  const int E = model_.hparams().n_embd, V = model_.hparams().n_vocab;
  const int kRows = 32;  // logits computed kRows positions at a time
  rows_buf_.resize(size_t(kRows) * V);
  for (int r0 = rows_from; r0 < n; r0 += kRows) {
    const int nr = std::min(kRows, n - r0);
    model_.logits(&hidden_[size_t(r0) * E], nr, rows_buf_.data());
    rows(r0, nr, rows_buf_.data());
  }
}

CacheFacts CpuRunner::facts() const {
  CacheFacts f;
  f.kv_bytes = cache_->kv_bytes();
  f.bpv_k = cache_->bpv_k();
  f.bpv_v = cache_->bpv_v();
  f.centred_layers = cache_->centred_layers();
  return f;
}

}  // namespace tq
