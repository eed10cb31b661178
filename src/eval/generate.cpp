#include "eval/generate.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "model/tokenizer.h"
#include "tq/error.h"

namespace tq {
namespace {

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

}  // namespace

int32_t sample_token(const std::vector<float>& logits, float temp, float top_p,
                     std::mt19937_64& rng) {
  const int n = int(logits.size());
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  if (temp <= 0.f) return best;
  std::vector<std::pair<float, int>> p(n);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const double e = std::exp(double(logits[i] - logits[best]) / temp);
    p[i] = {float(e), i};
    sum += e;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  double cum = 0;
  int keep = 0;
  while (keep < n) {
    cum += p[keep].first / sum;
    ++keep;
    if (cum >= top_p) break;
  }
  std::uniform_real_distribution<double> u(0.0, cum);
  double r = u(rng), acc = 0;
  for (int i = 0; i < keep; ++i) {
    acc += p[i].first / sum;
    if (r <= acc) return p[i].second;
  }
  return p[keep - 1].second;
}

int generate_context(const LlamaHparams& hp, size_t prompt_tokens, const GenerateOptions& o) {
  if (o.n_predict < 0) throw Error("-n must be ≥ 0");
  if (!(o.top_p > 0.f && o.top_p <= 1.f)) throw Error("--top-p must be in (0, 1]");
  if (prompt_tokens == 0) throw Error("empty prompt");
  // 64-bit: a long prompt plus n_predict must not wrap.
  const int64_t need = int64_t(prompt_tokens) + o.n_predict;
  const int64_t ctx = o.ctx > 0 ? o.ctx : need;
  if (ctx > hp.n_ctx_train)
    throw Error("context " + std::to_string(ctx) + " exceeds the model's context length " +
                std::to_string(hp.n_ctx_train));
  if (need > ctx)
    throw Error("prompt (" + std::to_string(prompt_tokens) + " tokens) + -n " +
                std::to_string(o.n_predict) + " does not fit in -c " + std::to_string(ctx));
  return int(ctx);
}

GenerateResult run_generate(const LlamaModel& model, const Tokenizer& tok,
                            const std::vector<int32_t>& prompt, const GenerateOptions& o) {
  const int ctx = generate_context(model.hparams(), prompt.size(), o);
  CpuRunner runner(model, o.cache, ctx);  // refuses, before it allocates, what cannot fit
  return run_generate(runner, tok, prompt, o);
}

GenerateResult run_generate(SeqRunner& runner, const Tokenizer& tok,
                            const std::vector<int32_t>& prompt, const GenerateOptions& o) {
  generate_context(runner.hparams(), prompt.size(), o);
  runner.reset();
  std::mt19937_64 rng(o.seed);
  std::vector<float> logits;
  using clk = std::chrono::steady_clock;
  GenerateResult r;
  r.prompt_tokens = prompt.size();
  if (o.prefill_threads > 0) set_threads(o.prefill_threads);
  const auto t0 = clk::now();
  const double cpu0 = process_cpu_seconds();
  runner.forward(prompt.data(), int(prompt.size()), &logits);
  const double t_prefill = std::chrono::duration<double>(clk::now() - t0).count();
  r.prefill_s = t_prefill;
  r.prefill_cpu_s = process_cpu_seconds() - cpu0;
  if (o.prefill_threads > 0) set_threads(o.decode_threads);  // back to the decode threads
  if (o.after_prefill) o.after_prefill();
  const auto t1 = clk::now();
  const double cpu1 = process_cpu_seconds();
  for (int i = 0; i < o.n_predict; ++i) {
    const int32_t id = sample_token(logits, o.temp, o.top_p, rng);
    if (tok.is_eog(id)) break;
    r.tokens.push_back(id);
    if (o.on_token) o.on_token(id);
    if (i + 1 == o.n_predict) break;
    const auto ts = clk::now();
    const double cs = process_cpu_seconds();
    runner.forward(&id, 1, &logits);
    r.decode_token_s.push_back(std::chrono::duration<double>(clk::now() - ts).count());
    r.decode_token_cpu_s.push_back(process_cpu_seconds() - cs);
    ++r.decoded;
  }
  const double t_decode = std::chrono::duration<double>(clk::now() - t1).count();
  // CPU time of all threads: on a shared machine it is less disturbed than wall time.
  const double cpu_decode = process_cpu_seconds() - cpu1;
  r.decode_s = t_decode;
  r.decode_cpu_s = cpu_decode;
  r.prefill_tps = double(prompt.size()) / t_prefill;
  r.decode_tps = r.decoded > 0 ? double(r.decoded) / t_decode : 0.0;
  r.decode_cpu_tps = r.decoded > 0 && cpu_decode > 0 ? double(r.decoded) / cpu_decode : 0.0;
  const CacheFacts f = runner.facts();
  r.kv_bytes = f.kv_bytes;
  r.bpv_k = f.bpv_k;
  r.bpv_v = f.bpv_v;
  return r;
}

}  // namespace tq
