// `tq perplexity`: perplexity, KL divergence and top-1 agreement of a KV-cache type over a text
// (llama.cpp's method: non-overlapping chunks, the second half of each scored).
#include <cstdio>

#include "command.h"
#include "device_flag.h"
#include "eval/perplexity.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "numeric_options.h"
#include "runtime_flags.h"

namespace {

// A fingerprint over every tensor: a base file only matches the very same weights.
uint64_t model_fingerprint(const tq::GgufFile& f) {
  std::vector<std::string> names;
  for (const auto& t : f.tensors()) names.push_back(t.name);
  return f.fingerprint(names);
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity, KL divergence vs a reference run, and top-1 agreement of a cache "
      "type (chunks of -c tokens, second half of each scored)");
  struct Opts {
    std::string model, text, kld_base;
    int ctx = 512, chunks = -1;
    bool json = false, quiet = false, no_header = false;
    tq::cli::RuntimeFlags rt;
    tq::cli::DeviceFlag dev;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-f,--file", o.text, "Text file (default: data/eval.txt)");
  tq::cli::add_int_option(cmd, "-c,--ctx-size", o.ctx, 4, 1 << 24, "Tokens per chunk");
  // -1 (the default) = all the text holds; more than it holds is refused by run_perplexity.
  tq::cli::add_int_option(cmd, "--chunks", o.chunks, -1, INT32_MAX,
                          "Number of chunks (default -1: all the text holds)");
  cmd->add_option("--kld-base", o.kld_base,
                  "Reference log-probs: written if the file is missing, compared against if not");
  cmd->add_flag("--json", o.json, "Print one JSON document on stdout");
  cmd->add_flag("-q,--quiet", o.quiet, "No progress bar");
  cmd->add_flag("--no-header", o.no_header, "Table row only (to stack several runs)");
  o.rt.add(cmd);
  o.dev.add(cmd);
  cmd->callback([] {
    o.dev.default_types(o.rt);
    o.rt.apply_threads();
    tq::KvCacheOptions cache_opts = o.rt.cache_options();  // refuses missing codebooks early
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    const std::string tpath = o.text.empty() ? tq::default_text_path() : o.text;
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    tq::validate_cache_options(o.rt.cache_options(), model->hparams().n_layer);
    auto tok = tq::Tokenizer::from_gguf(*f);
    const std::vector<int32_t> tokens = tok->encode(tq::cli::read_file(tpath, "text file"), true);
    tq::PerplexityOptions po;
    po.n_ctx = o.ctx;
    if (o.chunks == 0) throw tq::Error("--chunks must be at least 1 (or -1: all)");
    po.n_chunks = o.chunks;
    o.rt.attach_codebooks(cache_opts, *f, *model);
    if (cache_opts.codebooks)
      tq::warn_if_past_calibration(*cache_opts.codebooks, o.rt.codebooks, o.ctx);
    po.cache = cache_opts;
    po.kld_base = o.kld_base;
    po.progress = !o.quiet;
    po.model_fingerprint = model_fingerprint(*f);
    tq::perplexity_chunks(model->hparams(), tokens.size(), po);  // refuse before loading more
    const auto runner =
        o.dev.runner(o.rt, cache_opts, *f, *model, o.ctx + std::max(0, po.extra_tokens));
    const tq::PerplexityResult r =
        tq::run_perplexity(*runner, tokens, tok->wants_bos(), tok->bos(), po);
    std::string types = o.rt.label();
    // The table says when keys were centred (a star; "n/L*" when only some layers were).
    const int n_layer = model->hparams().n_layer;
    if (r.centred_layers == n_layer)
      types += "*";
    else if (r.centred_layers > 0)
      types += " " + std::to_string(r.centred_layers) + "/" + std::to_string(n_layer) + "*";
    if (o.json) {
      nlohmann::json j = {
          {"model", mpath},
          {"text", tpath},
          {"ctk", o.rt.ctk},
          {"ctv", o.rt.ctv},
          {"device", runner->device()},
          {"plan", o.rt.plan.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.rt.plan)},
          {"ctx", r.n_ctx},
          {"chunks", r.chunks},
          {"ppl", r.ppl},
          {"ppl_stderr", r.ppl_stderr},
          {"kld_mean", r.has_kld ? nlohmann::json(r.kld_mean) : nullptr},
          {"kld_p99", r.has_kld ? nlohmann::json(r.kld_p99) : nullptr},
          {"top1", r.has_kld ? nlohmann::json(r.top1) : nullptr},
          {"bpv_k", r.bpv_k},
          {"bpv_v", r.bpv_v},
          {"kv_bytes", r.kv_bytes},
          {"key_centring", tq::key_centring_name(cache_opts.key_centring)},
          {"centred_layers", r.centred_layers},
          {"key_means", cache_opts.key_means_per_page ? "page" : "first"},
          {"key_scales", cache_opts.key_scales},
          {"tokens", r.tokens},
          {"prefill_tps", r.prefill_tps},
          {"seconds", r.seconds},
          {"wrote_kld_base", r.wrote_base}};
      tq::cli::print_json(j);
      return;
    }
    if (!o.no_header)
      std::printf("%-18s %6s %6s %10s %9s %10s %10s %7s %12s %7s %9s\n", "cache K/V", "bpv_k",
                  "bpv_v", "PPL", "±", "KLD mean", "KLD p99", "top-1", "KV bytes", "tokens",
                  "prefill");
    auto num = [&](double v, const char* fmt) {
      char b[32];
      std::snprintf(b, sizeof b, fmt, v);
      return std::string(b);
    };
    std::printf(
        "%-18s %6.3f %6.3f %10.4f %9.4f %10s %10s %7s %12zu %7ld %7.1f/s\n", types.c_str(), r.bpv_k,
        r.bpv_v, r.ppl, r.ppl_stderr, r.has_kld ? num(r.kld_mean, "%.6f").c_str() : "-",
        r.has_kld ? num(r.kld_p99, "%.5f").c_str() : "-",
        r.has_kld ? num(100 * r.top1, "%.2f%%").c_str() : "-", r.kv_bytes, r.tokens, r.prefill_tps);
    if (r.centred_layers > 0 && !o.no_header)
      std::fprintf(stderr,
                   "* keys mean-centred per channel (%d of %d layers; --no-center-keys "
                   "turns it off)%s\n",
                   r.centred_layers, n_layer,
                   cache_opts.key_scales ? " and scaled per channel (--no-key-scales)" : "");
    if (r.wrote_base) std::fprintf(stderr, "wrote KLD base %s\n", o.kld_base.c_str());
  });
}
TQ_COMMAND(setup, 40);

}  // namespace
