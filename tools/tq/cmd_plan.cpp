// `tq plan`: measures, on calibration text, what each part of the KV cache (layer, K or V) costs
// in KL divergence under each candidate type, and chooses the per-layer types of least predicted
// KLD under an all-in bpv budget (DESIGN.md §11, src/eval/plan.h). `--from PLAN` re-solves an
// earlier plan's measurements for another budget without measuring again.
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "command.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "eval/plan.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "numeric_options.h"
#include "runtime_flags.h"

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// A one-line summary of the per-layer types: "K: turbo3 x20, turbo4 x10; V: ...".
std::string summary(const std::vector<std::string>& types) {
  std::map<std::string, int> n;
  for (const auto& t : types) ++n[t];
  std::string s;
  for (const auto& [t, c] : n) s += (s.empty() ? "" : ", ") + t + " x" + std::to_string(c);
  return s;
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "plan",
      "Choose a cache type per layer (K and V apart) of least predicted KL divergence under an "
      "all-in bpv budget, from measurements on calibration text; writes a plan file for --plan");
  cmd->footer(
      "How it works: the f16-cache run of each calibration chunk is made once; then, for every "
      "layer L, K and V apart, and every candidate type, the chunk runs with only that part "
      "quantized (all else f16; the run starts at layer L from the kept f16 activations) and "
      "the mean KL(P_f16 || P) over the scored second half of the chunk is recorded: "
      "n_layer x 2 x (candidates - 1) runs per chunk. The choice assumes the parts' KLDs add up "
      "and solves the multiple-choice knapsack exactly (dynamic programming over a 1/1024-bit "
      "grid) under the budget, where a part's bits are its type's all-in bpv at the model's "
      "head_dim and -c (codec bytes per block, key means, sinks, window). Then the chosen plan "
      "is run on the calibration chunks (--no-verify skips it) and its measured KLD and bpv are "
      "recorded beside the prediction. Calibrate on data/calib.txt, evaluate on data/eval.txt "
      "(`tq compare --types plan:FILE`). Keys are centred as everywhere else (turbo*, polar "
      "by default, baselines not; DESIGN.md §3.1); --center-keys / --no-center-keys / "
      "--key-means / --sinks / --residual / --seed are measured with and kept in the plan "
      "(applied with it).");
  struct Opts {
    std::string model, text, out, from, candidates;
    int ctx = 512, chunks = 2;
    double bpv = 3.0;
    bool json = false, quiet = false, no_verify = false, verify = false;
    tq::cli::RuntimeFlags rt;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-f,--file", o.text, "Calibration text (default: data/calib.txt)");
  tq::cli::add_float_option(cmd, "--bpv", o.bpv, 0.0, 64.0,
                            "Budget: all-in bits per value averaged over the cache")
      ->capture_default_str();
  cmd->add_option("-o,--output", o.out, "Plan file to write (JSON)");
  cmd->add_option("--from", o.from,
                  "Re-solve this plan file's measurements for --bpv without measuring again "
                  "(add --verify to run the new plan on the calibration text)");
  cmd->add_option("--candidates", o.candidates,
                  "Comma-separated candidate types (default "
                  "turbo2,turbo2.5,turbo3,turbo3.5,turbo4,q8_0,f16)");
  tq::cli::add_int_option(cmd, "-c,--ctx-size", o.ctx, 4, 1 << 20,
                          "Tokens per calibration chunk (the measuring context)");
  tq::cli::add_int_option(cmd, "--chunks", o.chunks, 1, 1 << 20, "Calibration chunks");
  cmd->add_flag("--no-verify", o.no_verify,
                "Do not run the chosen plan on the calibration chunks (with --from: the "
                "default, since it needs the model and text)");
  auto* verify = cmd->add_flag("--verify", o.verify,
                               "With --from: run the re-solved plan on the "
                               "calibration text (-m, -f) and record its KLD");
  cmd->add_flag("--json", o.json, "Print the plan (the file's JSON) on stdout");
  cmd->add_flag("-q,--quiet", o.quiet, "No progress bar");
  // The cache options the parts are measured with (kept in the plan) and the threads.
  cmd->add_flag("--center-keys", o.rt.center_keys,
                "Mean-centre the keys of every candidate, baselines included (default: the "
                "types' own, turbo*/polar centred; kept in the plan)");
  cmd->add_flag("--no-center-keys", o.rt.no_center_keys,
                "Centre no keys, not even turbo*'s (an ablation; kept in the plan)");
  cmd->add_option("--key-means", o.rt.key_means,
                  "With centred keys: 'page' (default) per-page offsets too, 'first' the first "
                  "mean only (kept in the plan)")
      ->check(CLI::IsMember({"page", "first"}));
  tq::cli::add_key_scales_flag(cmd, o.rt.no_key_scales);
  tq::cli::add_int_option(cmd, "--sinks", o.rt.sinks, 0, 1 << 24,
                          "Keep the first S tokens in f16 (kept in the plan)");
  tq::cli::add_int_option(cmd, "--residual", o.rt.residual, 0, 1 << 24,
                          "Keep the newest R tokens in f16 (kept in the plan)");
  cmd->add_option("--seed", o.rt.seed, "Seed of the cache's rotations (kept in the plan)");
  tq::cli::add_int_option(cmd, "-t,--threads", o.rt.threads, 0, tq::max_thread_flag(),
                          "Threads (default 0 = all cores, or 1 if the machine is busy)");
  cmd->callback([cmd, verify] {
    if (o.out.empty() && !o.json) throw tq::Error("plan: give -o FILE (or --json)");
    o.rt.apply_threads();
    const bool from = !o.from.empty();
    if (from &&
        (cmd->get_option("--candidates")->count() || cmd->get_option("-c")->count() ||
         cmd->get_option("--chunks")->count() || cmd->get_option("--sinks")->count() ||
         cmd->get_option("--residual")->count() || cmd->get_option("--center-keys")->count() ||
         cmd->get_option("--no-center-keys")->count() || cmd->get_option("--key-means")->count() ||
         cmd->get_option("--no-key-scales")->count() || cmd->get_option("--seed")->count()))
      throw tq::Error(
          "plan --from: the measurement options come from the plan file (drop "
          "--candidates, -c, --chunks, --sinks, --residual, --center-keys, --no-center-keys, "
          "--key-means, --no-key-scales, --seed)");
    const tq::KeyCentring centring = o.rt.key_centring();  // refuses both flags at once
    const bool do_verify = from ? verify->count() > 0 : !o.no_verify;
    if (from && verify->count() && o.no_verify)
      throw tq::Error("plan: --verify and --no-verify contradict each other");
    tq::Plan plan;
    if (from) {
      plan = tq::read_plan(o.from);
      tq::solve_plan(plan, o.bpv);  // refuses a budget below the least before any model work
    }
    std::unique_ptr<tq::GgufFile> f;
    std::unique_ptr<tq::LlamaModel> model;
    std::unique_ptr<tq::Tokenizer> tok;
    std::vector<int32_t> tokens;
    std::string mpath, tpath;
    if (!from || do_verify) {
      mpath = o.model.empty() ? tq::default_model_path() : o.model;
      tpath = o.text.empty() ? tq::default_calib_path() : o.text;
      const std::string eval = tq::default_text_path();
      std::error_code ec;
      if (std::filesystem::exists(eval) && std::filesystem::equivalent(tpath, eval, ec))
        std::fprintf(stderr,
                     "warning: plan: '%s' is the evaluation text; plans are made on "
                     "calibration text (data/calib.txt)\n",
                     tpath.c_str());
      f = tq::GgufFile::open(mpath);
      model = tq::LlamaModel::load(*f);
      const std::string text = tq::cli::read_file(tpath, "calibration text");
      const uint64_t h = XXH64(text.data(), text.size(), 0);
      const uint64_t fp = tq::plan_model_fingerprint(*f);
      if (from) {
        tq::check_plan_model(plan, o.from, fp, model->hparams());
        if (h != plan.calib_hash)
          throw tq::Error("plan --verify: '" + tpath +
                          "' is not the calibration text the plan "
                          "was measured on (hash mismatch)");
      } else {
        plan.model_fingerprint = fp;
        plan.calib_hash = h;
      }
      tok = tq::Tokenizer::from_gguf(*f);
      tokens = tok->encode(text, true);
    }
    if (!from) {
      tq::PlanMeasureOptions mo;
      mo.n_ctx = o.ctx;
      mo.n_chunks = o.chunks;
      if (!o.candidates.empty()) mo.candidates = split_list(o.candidates);
      mo.cache.key_centring = centring;
      mo.cache.key_means_per_page = o.rt.key_means == "page";
      mo.cache.key_scales = !o.rt.no_key_scales;
      mo.cache.sink_tokens = o.rt.sinks;
      mo.cache.residual_window = o.rt.residual;
      mo.cache.seed = o.rt.seed;
      // Bad candidates and a budget below the least are refused before measuring.
      {
        std::vector<double> bk, bv;
        tq::candidate_bits(mo.candidates, model->kv_shape(), mo.cache, o.ctx, bk, bv);
        tq::Plan probe;
        probe.n_layer = model->hparams().n_layer;
        probe.candidates = mo.candidates;
        probe.bits_k = bk;
        probe.bits_v = bv;
        probe.kld_k.assign(size_t(probe.n_layer), std::vector<double>(bk.size(), 0.0));
        probe.kld_v = probe.kld_k;
        tq::solve_plan(probe, o.bpv);
      }
      std::unique_ptr<tq::Progress> bar;
      if (!o.quiet)
        mo.progress = [&](size_t done, size_t total, const std::string& note) {
          if (!bar) bar = std::make_unique<tq::Progress>("plan", total);
          bar->update(done, note);
        };
      const uint64_t fp = plan.model_fingerprint, ch = plan.calib_hash;
      plan = tq::measure_plan(*model, tokens, tok->wants_bos(), tok->bos(), mo);
      if (bar) bar->done();
      plan.model_fingerprint = fp;
      plan.calib_hash = ch;
      plan.model_file = std::filesystem::path(mpath).filename().string();
      plan.calib_file = tpath;
      tq::solve_plan(plan, o.bpv);
    }
    if (do_verify) {
      // The chosen plan on the calibration chunks, through run_perplexity against the f16
      // reference (the same KLD as `tq perplexity --kld-base` and `tq compare`).
      const std::filesystem::path dir =
          std::filesystem::temp_directory_path() / ("tq-plan-" + std::to_string(::getpid()));
      std::filesystem::create_directories(dir);
      struct Rm {
        std::filesystem::path p;
        ~Rm() {
          std::error_code ec;
          std::filesystem::remove_all(p, ec);
        }
      } rm{dir};
      tq::PerplexityOptions po;
      po.n_ctx = plan.ctx;
      po.n_chunks = plan.chunks;
      po.kld_base = (dir / "base.bin").string();
      po.progress = false;
      po.model_fingerprint = plan.model_fingerprint;
      tq::KvCacheOptions ref;
      ref.seed = plan.seed;
      po.cache = ref;
      tq::run_perplexity(*model, tokens, tok->wants_bos(), tok->bos(), po);
      tq::KvCacheOptions base;
      base.seed = plan.seed;
      po.cache = tq::plan_cache_options(plan, base);
      const tq::PerplexityResult r =
          tq::run_perplexity(*model, tokens, tok->wants_bos(), tok->bos(), po);
      plan.verified_kld = r.kld_mean;
      plan.verified_bpv = 0.5 * (r.bpv_k + r.bpv_v);
    }
    if (!o.out.empty()) tq::write_plan(o.out, plan);
    if (o.json) {
      const std::string tmp = (std::filesystem::temp_directory_path() /
                               ("tq-plan-" + std::to_string(::getpid()) + ".json"))
                                  .string();
      tq::write_plan(tmp, plan);
      const std::string s = tq::cli::read_file(tmp, "plan file");
      std::filesystem::remove(tmp);
      std::fputs(s.c_str(), stdout);
      return;
    }
    std::printf(
        "plan %s: budget %.4g bpv, achieved %.4f bpv (predicted), predicted KLD %.6f "
        "(sum of %d parts)",
        o.out.c_str(), plan.budget_bpv, plan.achieved_bpv, plan.predicted_kld, 2 * plan.n_layer);
    if (plan.verified_kld)
      std::printf("; verified on calibration: KLD %.6f at %.4f bpv", *plan.verified_kld,
                  *plan.verified_bpv);
    std::printf("\n  K: %s\n  V: %s\n", summary(plan.layer_k).c_str(),
                summary(plan.layer_v).c_str());
    std::printf("  layer  K          V\n");
    for (int l = 0; l < plan.n_layer; ++l)
      std::printf("  %5d  %-10s %-10s\n", l, plan.layer_k[size_t(l)].c_str(),
                  plan.layer_v[size_t(l)].c_str());
  });
}
TQ_COMMAND(setup, 47);

}  // namespace
