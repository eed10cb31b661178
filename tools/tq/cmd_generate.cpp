// `tq generate`: text generation with a compressed KV cache, streamed to stdout; prefill and
// decode speed on stderr.
#include <cstdio>

#include "command.h"
#include "device_flag.h"
#include "eval/generate.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "numeric_options.h"
#include "runtime_flags.h"

namespace {

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text with a compressed KV cache");
  struct Opts {
    std::string model, prompt = "The capital of France is", file;
    int n = 64, ctx = 0, prefill_threads = 0;
    float temp = 0.f, top_p = 0.95f;
    bool chat = false, json = false;
    tq::cli::RuntimeFlags rt;
    tq::cli::DeviceFlag dev;
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
  add_int_option(cmd, "--prefill-threads", o.prefill_threads, 0, tq::max_thread_flag(),
                 "Threads of the prompt's prefill only (default 0: -t); for long-context speed "
                 "runs that prefill once and time the decode");
  o.rt.add(cmd);
  o.dev.add(cmd);
  cmd->callback([] {
    o.dev.default_types(o.rt);
    o.rt.apply_threads();
    tq::GenerateOptions go;
    go.cache = o.rt.cache_options();  // refuses missing codebooks early
    go.n_predict = o.n;
    go.temp = o.temp;
    go.top_p = o.top_p;
    go.ctx = o.ctx;
    go.seed = o.rt.seed;
    go.prefill_threads = o.prefill_threads;
    go.decode_threads = o.rt.threads;
    if (o.n < 0) throw tq::Error("-n must be ≥ 0");
    if (!(o.top_p > 0.f && o.top_p <= 1.f)) throw tq::Error("--top-p must be in (0, 1]");
    if (!o.file.empty()) o.prompt = tq::cli::read_file(o.file, "prompt file");
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    auto tok = tq::Tokenizer::from_gguf(*f);
    const std::string text =
        o.chat ? tok->apply_chat_template({{"user", o.prompt}}, true) : o.prompt;
    const std::vector<int32_t> prompt = tok->encode(text, true);
    o.rt.attach_codebooks(go.cache, *f, *model);
    if (!o.json) {
      go.on_token = [&](int32_t id) {
        const std::string piece = tok->token_to_piece(id);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      };
      if (o.file.empty())
        go.after_prefill = [&] {
          std::fputs(o.prompt.c_str(), stdout);
          if (o.chat) std::fputc('\n', stdout);  // the reply is a new turn
          std::fflush(stdout);
        };
    }
    const int ctx = tq::generate_context(model->hparams(), prompt.size(), go);
    const auto runner = o.dev.runner(o.rt, go.cache, *f, *model, ctx);
    const tq::GenerateResult r = tq::run_generate(*runner, *tok, prompt, go);
    if (!o.json) {
      std::fputc('\n', stdout);
      std::fflush(stdout);
    }
    std::fprintf(stderr,
                 "prompt %zu tokens, prefill %.1f tok/s; generated %zu tokens, decode %.1f tok/s;"
                 " cache %s %zu bytes (bpv %.3f/%.3f); device %s\n",
                 r.prompt_tokens, r.prefill_tps, r.tokens.size(), r.decode_tps,
                 o.rt.label().c_str(), r.kv_bytes, r.bpv_k, r.bpv_v, runner->device().c_str());
    if (o.json)
      tq::cli::print_json(
          {{"prompt", o.file.empty() ? o.prompt : o.file},
           {"text", tok->decode(r.tokens)},
           {"tokens", r.tokens},
           {"prompt_tokens", r.prompt_tokens},
           {"prefill_tps", r.prefill_tps},
           {"prefill_cpu_tps",
            r.prefill_cpu_s > 0 ? double(r.prompt_tokens) / r.prefill_cpu_s : 0.0},
           {"prefill_s", r.prefill_s},
           {"prefill_cpu_s", r.prefill_cpu_s},
           {"decode_tps", r.decode_tps},
           {"decoded", r.decoded},
           {"decode_s", r.decode_s},
           {"decode_cpu_s", r.decode_cpu_s},
           {"decode_token_s", r.decode_token_s},
           {"decode_token_cpu_s", r.decode_token_cpu_s},
           {"decode_cpu_tps", r.decode_cpu_tps},
           {"ctk", o.rt.ctk},
           {"ctv", o.rt.ctv},
           {"device", runner->device()},
           {"plan", o.rt.plan.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.rt.plan)},
           {"kv_bytes", r.kv_bytes},
           {"bpv_k", r.bpv_k},
           {"bpv_v", r.bpv_v}});
  });
}
TQ_COMMAND(setup, 30);

}  // namespace
