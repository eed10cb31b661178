// turboquant — text generation with a compressed KV cache (what `tq generate` and the Python
// Model.generate run): one prefill of the prompt, then one token per step, greedy or sampled.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "cache/kv_cache.h"
#include "eval/runner.h"
#include "model/llama.h"

namespace tq {

class Tokenizer;

struct GenerateOptions {
  int n_predict = 64;
  float temp = 0.f;             // ≤ 0: greedy
  float top_p = 0.95f;          // nucleus mass, (0, 1]
  int ctx = 0;                  // cache capacity in tokens; 0 = prompt + n_predict
  uint64_t seed = 0x5451'0001;  // sampling seed
  // Threads of the prompt's prefill only (0: as set); after such a prefill the decode runs
  // with decode_threads (0: automatic). Long-context speed runs prefill once on more threads
  // and time the decode.
  int prefill_threads = 0, decode_threads = 0;
  KvCacheOptions cache;  // types and options; max_tokens / max_seqs are set from ctx
  // Called once after the prompt's prefill (e.g. to echo the prompt once it is accepted).
  std::function<void()> after_prefill;
  // Called with every generated token as soon as it is chosen (e.g. to stream its text).
  std::function<void(int32_t)> on_token;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (end-of-generation token excluded)
  size_t prompt_tokens = 0;
  int decoded = 0;  // decode steps run (forward passes after the prefill)
  double prefill_tps = 0, decode_tps = 0, decode_cpu_tps = 0;
  double prefill_s = 0, prefill_cpu_s = 0, decode_s = 0, decode_cpu_s = 0;
  std::vector<double> decode_token_s, decode_token_cpu_s;  // per decode step (segment medians)
  size_t kv_bytes = 0;
  double bpv_k = 0, bpv_v = 0;
};

// Temperature + nucleus (top-p) sampling; greedy (the first maximum) at temp ≤ 0.
int32_t sample_token(const std::vector<float>& logits, float temp, float top_p,
                     std::mt19937_64& rng);

// Throws tq::Error for an empty prompt, n_predict < 0, top_p outside (0, 1], a context above
// the model's, a prompt + n_predict that does not fit ctx, or a run that does not fit in memory
// (checked before the cache allocates).
GenerateResult run_generate(const LlamaModel& model, const Tokenizer& tok,
                            const std::vector<int32_t>& prompt, const GenerateOptions& opts);
// The same on any backend (opts.cache and opts.ctx are the runner's, made with at least
// generate_context() tokens; the prefill/decode thread options apply to the CPU only).
GenerateResult run_generate(SeqRunner& runner, const Tokenizer& tok,
                            const std::vector<int32_t>& prompt, const GenerateOptions& opts);
// The cache capacity a run needs (opts.ctx, or prompt + n_predict), checked as above.
int generate_context(const LlamaHparams& hp, size_t prompt_tokens, const GenerateOptions& opts);

}  // namespace tq
