// `tq generate`: text generation with a compressed KV cache, streamed to stdout; prefill and
// decode speed on stderr.
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "command.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/memcheck.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "numeric_options.h"
#include "runtime_flags.h"

namespace {

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Temperature + nucleus (top-p) sampling; greedy at temp ≤ 0.
int32_t sample(const std::vector<float>& logits, float temp, float top_p, std::mt19937_64& rng) {
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

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text with a compressed KV cache");
  struct Opts {
    std::string model, prompt = "The capital of France is", file;
    int n = 64, ctx = 0, prefill_threads = 0;
    float temp = 0.f, top_p = 0.95f;
    bool chat = false, json = false;
    tq::cli::RuntimeFlags rt;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-p,--prompt", o.prompt, "Prompt")->capture_default_str();
  cmd->add_option("-f,--file", o.file, "Read the prompt from a file (instead of -p)");
  using tq::cli::add_float_option, tq::cli::add_int_option;
  // Bounds: a context beyond 2^24 tokens is beyond every supported model (and the checks
  // below compare it with the model's own context length).
  add_int_option(cmd, "-n,--n-predict", o.n, 0, 1 << 24, "Tokens to generate");
  add_int_option(cmd, "-c,--ctx-size", o.ctx, 0, 1 << 24,
                 "Cache capacity in tokens (default 0: prompt + n)");
  add_float_option(cmd, "--temp", o.temp, 0.0, 100.0, "Sampling temperature (0 = greedy)");
  add_float_option(cmd, "--top-p", o.top_p, 0.0, 1.0, "Nucleus sampling mass (0, 1]");
  cmd->add_flag("--chat", o.chat, "Wrap the prompt in the model's chat template");
  cmd->add_flag("--json", o.json, "Print one JSON summary on stdout (text included)");
  cmd->add_option("--prefill-threads", o.prefill_threads,
                  "Threads of the prompt's prefill only (default: -t); for long-context speed "
                  "runs that prefill once and time the decode");
  o.rt.add(cmd);
  cmd->callback([] {
    o.rt.apply_threads();
    if (o.n < 0) throw tq::Error("-n must be ≥ 0");
    if (!(o.top_p > 0.f && o.top_p <= 1.f)) throw tq::Error("--top-p must be in (0, 1]");
    tq::KvCacheOptions co = o.rt.cache_options();  // refuses missing codebooks early
    if (!o.file.empty()) {
      o.prompt = tq::cli::read_file(o.file, "prompt file");
    }
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    auto tok = tq::Tokenizer::from_gguf(*f);
    const std::string text =
        o.chat ? tok->apply_chat_template({{"user", o.prompt}}, true) : o.prompt;
    const std::vector<int32_t> prompt = tok->encode(text, true);
    if (prompt.empty()) throw tq::Error("empty prompt");
    // 64-bit: a long prompt plus -n must not wrap (it made "KV cache full" after 256 tokens).
    const int64_t need = int64_t(prompt.size()) + o.n;
    const int64_t ctx = o.ctx > 0 ? o.ctx : need;
    if (ctx > model->hparams().n_ctx_train)
      throw tq::Error("context " + std::to_string(ctx) + " exceeds the model's context length " +
                      std::to_string(model->hparams().n_ctx_train));
    if (need > ctx)
      throw tq::Error("prompt (" + std::to_string(prompt.size()) + " tokens) + -n " +
                      std::to_string(o.n) + " does not fit in -c " + std::to_string(ctx));
    o.rt.attach_codebooks(co, *f, *model);
    co.max_tokens = int(ctx);
    co.max_seqs = 1;
    tq::check_memory(*model, co);  // refuses, before the cache allocates, a run that cannot fit
    tq::KvCache cache(model->kv_shape(), co);
    const int seq = cache.new_seq();
    std::mt19937_64 rng(o.rt.seed);
    std::vector<float> logits;
    using clk = std::chrono::steady_clock;
    if (o.prefill_threads > 0) tq::set_threads(o.prefill_threads);
    const auto t0 = clk::now();
    const double cpu0 = process_cpu_seconds();
    model->forward(cache, seq, prompt.data(), int(prompt.size()), nullptr, &logits);
    const double t_prefill = std::chrono::duration<double>(clk::now() - t0).count();
    const double cpu_prefill = process_cpu_seconds() - cpu0;
    if (o.prefill_threads > 0) o.rt.apply_threads();
    std::vector<double> tok_s, tok_cpu_s;  // per decoded token, for segment medians
    if (!o.json && o.file.empty()) {
      std::fputs(o.prompt.c_str(), stdout);
      if (o.chat) std::fputc('\n', stdout);  // the reply is a new turn
      std::fflush(stdout);
    }
    std::vector<int32_t> out;
    const auto t1 = clk::now();
    const double cpu1 = process_cpu_seconds();
    int decoded = 0;
    for (int i = 0; i < o.n; ++i) {
      const int32_t id = sample(logits, o.temp, o.top_p, rng);
      if (tok->is_eog(id)) break;
      out.push_back(id);
      if (!o.json) {
        const std::string piece = tok->token_to_piece(id);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
      if (i + 1 == o.n) break;
      const auto ts = clk::now();
      const double cs = process_cpu_seconds();
      model->forward(cache, seq, &id, 1, nullptr, &logits);
      tok_s.push_back(std::chrono::duration<double>(clk::now() - ts).count());
      tok_cpu_s.push_back(process_cpu_seconds() - cs);
      ++decoded;
    }
    const double t_decode = std::chrono::duration<double>(clk::now() - t1).count();
    // CPU time of all threads: on a shared machine it is less disturbed than wall time.
    const double cpu_decode = process_cpu_seconds() - cpu1;
    const double pf_tps = double(prompt.size()) / t_prefill;
    const double dec_tps = decoded > 0 ? double(decoded) / t_decode : 0.0;
    if (!o.json) {
      std::fputc('\n', stdout);
      std::fflush(stdout);
    }
    std::fprintf(stderr,
                 "prompt %zu tokens, prefill %.1f tok/s; generated %zu tokens, decode %.1f tok/s;"
                 " cache %s/%s %zu bytes (bpv %.3f/%.3f)\n",
                 prompt.size(), pf_tps, out.size(), dec_tps, o.rt.ctk.c_str(), o.rt.ctv.c_str(),
                 cache.kv_bytes(), cache.bpv_k(), cache.bpv_v());
    if (o.json)
      tq::cli::print_json({{"prompt", o.file.empty() ? o.prompt : o.file},
                           {"text", tok->decode(out)},
                           {"tokens", out},
                           {"prompt_tokens", prompt.size()},
                           {"prefill_tps", pf_tps},
                           {"prefill_cpu_tps", cpu_prefill > 0 ? double(prompt.size()) / cpu_prefill
                                                               : 0.0},
                           {"prefill_s", t_prefill},
                           {"prefill_cpu_s", cpu_prefill},
                           {"decode_tps", dec_tps},
                           {"decoded", decoded},
                           {"decode_s", t_decode},
                           {"decode_cpu_s", cpu_decode},
                           {"decode_token_s", tok_s},
                           {"decode_token_cpu_s", tok_cpu_s},
                           {"decode_cpu_tps", decoded > 0 && cpu_decode > 0
                                                  ? double(decoded) / cpu_decode
                                                  : 0.0},
                           {"ctk", o.rt.ctk},
                           {"ctv", o.rt.ctv},
                           {"kv_bytes", cache.kv_bytes()},
                           {"bpv_k", cache.bpv_k()},
                           {"bpv_v", cache.bpv_v()}});
  });
}
TQ_COMMAND(setup, 30);

}  // namespace
