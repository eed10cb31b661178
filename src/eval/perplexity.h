// turboquant — perplexity and KL divergence of a KV-cache type (DESIGN.md §4), llama.cpp style.
//
// The token stream is cut into non-overlapping chunks of n_ctx tokens (the first token of each
// chunk replaced by BOS when the model adds one). Each chunk runs through the model in one
// prefill with a fresh sequence of a compressed cache: every layer stores the chunk's K/V first,
// then the chunk's queries attend to the stored codes. The second half of each chunk is scored:
// positions j ∈ [n_ctx/2, n_ctx − 1) predict token j+1.
//
// KL divergence against a reference run: the reference's log-probabilities of every scored
// position (full vocabulary, fp16) are written to a "KLD base" file whose header records the
// model fingerprint, the hash of the scored token stream, n_ctx, the number of chunks and the
// vocabulary size; a later run compares against it: KL(P_ref ‖ P), mean and 99th percentile,
// and top-1 agreement (argmax equal).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "eval/runner.h"
#include "model/llama.h"

namespace tq {

struct PerplexityOptions {
  int n_ctx = 512;
  int n_chunks = -1;  // −1: as many as the text holds
  KvCacheOptions cache;
  std::string kld_base;  // "" = no KLD; missing file = write it; existing = compare
  bool progress = true;  // progress bar on stderr (drawn only when stderr is a terminal)
  uint64_t model_fingerprint = 0;
  // Hooks for `tq compare` (both optional):
  // after_first_chunk runs once, right after the first chunk's forward, while its sequence is
  // still in the cache (hidden: n_ctx × n_embd final-norm states); extra_tokens reserves room
  // for tokens it appends (e.g. a short greedy decode at this context).
  std::function<void(KvCache& cache, int seq, const std::vector<float>& hidden)> after_first_chunk;
  int extra_tokens = 0;
  std::function<void(int chunks_done)> on_chunk;  // after every chunk
};

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0;  // stderr of the mean NLL mapped through exp (delta method)
  bool has_kld = false;            // compared against an existing base file
  bool wrote_base = false;
  double kld_mean = 0, kld_p99 = 0, top1 = 0;
  double bpv_k = 0, bpv_v = 0;
  size_t kv_bytes = 0;     // stored bytes of one full chunk's cache (key means included)
  int centred_layers = 0;  // layers whose keys were mean-centred (KvCache::centred_layers)
  int chunks = 0, n_ctx = 0;
  long tokens = 0;         // scored positions
  double prefill_tps = 0;  // tokens through the model per second of forward time
  double seconds = 0;
};

// tokens: the whole tokenized text. Throws tq::Error if n_ctx exceeds the model's context or
// the text is shorter than one chunk, or for a mismatched / truncated base file.
// On the CPU (a CpuRunner over `model`, opts.cache):
PerplexityResult run_perplexity(const LlamaModel& model, const std::vector<int32_t>& tokens,
                                bool add_bos, int32_t bos, const PerplexityOptions& opts);
// On any backend (one chunk per runner.reset(); opts.cache is the runner's business and
// opts.after_first_chunk needs a CpuRunner):
PerplexityResult run_perplexity(SeqRunner& runner, const std::vector<int32_t>& tokens, bool add_bos,
                                int32_t bos, const PerplexityOptions& opts);
// The number of chunks a run takes (opts.n_chunks resolved against the text); tq::Error for a
// context the model does not have, a text shorter than one chunk, a --chunks it does not hold.
int perplexity_chunks(const LlamaHparams& hp, size_t n_tokens, const PerplexityOptions& opts);

// Checks cache options against a model before any work: a boundary layer count larger than the
// layer count, per-layer overrides outside [0, n_layer), negative windows. Throws tq::Error.
void validate_cache_options(const KvCacheOptions& o, int n_layer);

// Helpers shared with tests: log-softmax of n logits (double accumulation) into out.
void log_softmax(const float* logits, int n, float* out);

}  // namespace tq
