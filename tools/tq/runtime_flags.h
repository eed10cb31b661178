// Flags shared by the commands that run the model (`generate`, `perplexity`, `compare`): the
// cache types and options (DESIGN.md §3), a plan file (§11) and the thread count.
//
// --plan FILE sets every layer's K and V types and the cache options the plan was measured
// with (key centring and key means, --sinks, --residual, --seed). It cannot be combined with flags
// that set types (-ctk, -ctv, --layer-k, --layer-v, --boundary, --boundary-type): refused, since
// one of them would silently lose. --sinks / --residual / --center-keys / --no-center-keys /
// --key-means / --seed are refused too when they differ from the plan's (the plan's KLDs hold only
// for the options it was measured with).
#pragma once
#include <CLI/CLI.hpp>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "cache/kv_cache.h"
#include "codecs/kvquant.h"
#include "eval/calibrate.h"
#include "eval/plan.h"
#include "model/llama.h"
#include "numeric_options.h"
#include "tq/error.h"

namespace tq::cli {

// --no-key-scales (KvCacheOptions::key_scales), shared with `tq plan`.
inline void add_key_scales_flag(CLI::App* cmd, bool& no_key_scales) {
  cmd->add_flag("--no-key-scales", no_key_scales,
                "Do not scale centred keys per channel (an ablation). By default the keys that "
                "are centred also get per-channel scales s = (σk/σq)^0.35 from the first "
                "append and its queries (d f16 per layer and KV head, counted in bpv): keys "
                "are stored as k/s and queries multiplied by s, the same scores, less error");
}

struct RuntimeFlags {
  std::string ctk = "f16", ctv = "f16";
  std::string layer_k, layer_v;  // "L=TYPE,L=TYPE"
  int boundary = 0;
  std::string boundary_type = "f16";
  int residual = 0, sinks = 0;
  bool center_keys = false, no_center_keys = false;
  std::string key_means = "page";  // "page" | "first" (KvCacheOptions::key_means_per_page)
  bool no_key_scales = false;      // KvCacheOptions::key_scales off
  uint64_t seed = 0x5451'0001;
  int threads = 0;
  std::string codebooks;  // polar-vq codebook file (`tq calibrate`)
  std::string plan;       // plan file (`tq plan`)
  // The options as given on the command line (for --plan's conflicts); set by add().
  std::map<std::string, CLI::Option*> given;

  void add(CLI::App* cmd) {
    cmd->add_option("--ctk,--cache-type-k", ctk,
                    "KV cache type of keys, also -ctk (see `tq types`)")
        ->capture_default_str();
    cmd->add_option("--ctv,--cache-type-v", ctv, "KV cache type of values, also -ctv")
        ->capture_default_str();
    cmd->add_option("--layer-k", layer_k, "Per-layer key types, e.g. \"0=f16,29=turbo4\"");
    cmd->add_option("--layer-v", layer_v, "Per-layer value types, e.g. \"0=f16\"");
    add_int_option(cmd, "--boundary", boundary, 0, 1 << 16,
                   "First and last N layers use --boundary-type");
    cmd->add_option("--boundary-type", boundary_type, "Cache type of the boundary layers (K and V)")
        ->capture_default_str();
    add_int_option(cmd, "--residual", residual, 0, 1 << 24, "Keep the newest R tokens in f16");
    add_int_option(cmd, "--sinks", sinks, 0, 1 << 24,
                   "Keep the first S tokens in f16 (attention sinks)");
    cmd->add_flag(
        "--center-keys", center_keys,
        "Mean-centre the keys of every layer, whatever the type (baselines included). By "
        "default the project's own key types (turbo*, polar, polar-vq:*) are centred and the "
        "baselines are not: a per-channel key mean from the first append is subtracted before "
        "quantizing and stored in f32 (counted in bpv)");
    cmd->add_flag("--no-center-keys", no_center_keys,
                  "Centre no keys, not even those of turbo*/polar/polar-vq "
                  "(an ablation: Qwen2 collapses without it)");
    cmd->add_option("--key-means", key_means,
                    "With centred keys: 'page' (default) also stores each page's offset from "
                    "the first mean (d f16 per 256 tokens; tracks offsets that drift with "
                    "position, as RoPE'd key biases do), 'first' only the first append's mean")
        ->check(CLI::IsMember({"page", "first"}))
        ->capture_default_str();
    add_key_scales_flag(cmd, no_key_scales);
    cmd->add_option("--seed", seed, "Seed of the cache's rotations/sketches (and sampling)");
    cmd->add_option("--codebooks", codebooks,
                    "codebook file from `tq calibrate` (needed by polar-vq:balanced/max; "
                    "kvquant3/4 need one from `tq calibrate --preset kvquant`; compare takes "
                    "FILE,FILE,... with one file per preset)");
    add_int_option(cmd, "-t,--threads", threads, 0, tq::max_thread_flag(),
                   "Threads (default 0 = all cores, or 1 if the machine is busy)");
    cmd->add_option("--plan", plan,
                    "Plan file from `tq plan`: every layer's K and V types and the options it "
                    "was measured with (not with -ctk/-ctv/--layer-k/--layer-v/--boundary)");
    for (const char* n : {"--ctk", "--ctv", "--layer-k", "--layer-v", "--boundary",
                          "--boundary-type", "--residual", "--sinks", "--center-keys",
                          "--no-center-keys", "--key-means", "--no-key-scales", "--seed"})
      given[n] = cmd->get_option(n);
  }

  bool was_given(const char* n) const {
    const auto it = given.find(n);
    return it != given.end() && it->second && it->second->count() > 0;
  }

  // The plan file (read and checked for conflicting flags), or null without --plan.
  std::shared_ptr<const Plan> read_plan_file() const {
    if (plan.empty()) return nullptr;
    for (const char* n :
         {"--ctk", "--ctv", "--layer-k", "--layer-v", "--boundary", "--boundary-type"})
      if (was_given(n))
        throw Error(std::string("--plan sets every layer's types: drop ") + n +
                    " (or drop --plan)");
    auto p = std::make_shared<const Plan>(tq::read_plan(plan));
    check_plan_options(*p, plan);
    return p;
  }

  // Refuses a cache option given on the command line that differs from the one the plan was
  // measured with (its KLDs hold only for those); `compare` and `needle` check their plan:FILE
  // rows with it too.
  void check_plan_options(const Plan& pl, const std::string& path) const {
    const Plan* p = &pl;
    auto differs = [&](const char* n, bool d) {
      if (was_given(n) && d)
        throw Error(std::string(n) + " differs from the plan's (plan '" + path +
                    "': key centring " + key_centring_name(p->key_centring) + ", --key-means " +
                    (p->key_means_per_page ? "page" : "first") + ", key scales " +
                    (p->key_scales ? "on" : "off") + ", --sinks " + std::to_string(p->sinks) +
                    ", --residual " + std::to_string(p->residual) + ", --seed " +
                    std::to_string(p->seed) + ")");
    };
    differs("--center-keys", p->key_centring != KeyCentring::kOn);
    differs("--no-center-keys", p->key_centring != KeyCentring::kOff);
    differs("--key-means", (key_means == "page") != p->key_means_per_page);
    differs("--no-key-scales", p->key_scales);
    differs("--sinks", sinks != p->sinks);
    differs("--residual", residual != p->residual);
    differs("--seed", seed != p->seed);
  }

  static std::map<int, std::string> parse_layers(const std::string& s, const char* flag) {
    std::map<int, std::string> m;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.empty()) continue;
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
        throw Error(std::string(flag) + ": expected LAYER=TYPE, got '" + item + "'");
      try {
        m[std::stoi(item.substr(0, eq))] = item.substr(eq + 1);
      } catch (const std::exception&) {
        throw Error(std::string(flag) + ": bad layer number in '" + item + "'");
      }
    }
    return m;
  }

  KvCacheOptions cache_options() const {
    KvCacheOptions o;
    o.type_k = ctk;
    o.type_v = ctv;
    o.layer_type_k = parse_layers(layer_k, "--layer-k");
    o.layer_type_v = parse_layers(layer_v, "--layer-v");
    o.boundary_layers = boundary;
    o.boundary_type_k = o.boundary_type_v = boundary_type;
    o.residual_window = residual;
    o.sink_tokens = sinks;
    o.key_centring = key_centring();
    o.key_means_per_page = key_means == "page";
    o.key_scales = !no_key_scales;
    o.seed = seed;
    if (const auto p = read_plan_file()) o = plan_cache_options(*p, o);
    // A type that cannot work without learned data fails here, before the model is loaded.
    for (const auto& t : all_types(o)) tq::check_calibration_given(t, !codebooks.empty());
    return o;
  }

  KeyCentring key_centring() const {
    if (center_keys && no_center_keys)
      throw Error("--center-keys and --no-center-keys exclude each other");
    return center_keys      ? KeyCentring::kOn
           : no_center_keys ? KeyCentring::kOff
                            : KeyCentring::kTypeDefault;
  }

  // Every cache type the options name.
  static std::vector<std::string> all_types(const KvCacheOptions& o) {
    std::vector<std::string> t = {o.type_k, o.type_v};
    if (o.boundary_layers > 0) t.insert(t.end(), {o.boundary_type_k, o.boundary_type_v});
    for (const auto* m : {&o.layer_type_k, &o.layer_type_v})
      for (const auto& [l, ty] : *m) t.push_back(ty);
    return t;
  }

  // Loads --codebooks (if given) into the options, checked against the model and the types.
  // and checks --plan's file against the model (fingerprint, shape).
  void attach_codebooks(KvCacheOptions& o, const GgufFile& f, const LlamaModel& model) const {
    if (!codebooks.empty()) o.codebooks = tq::load_codebooks(codebooks, f, model, all_types(o));
    if (const auto p = read_plan_file())
      check_plan_model(*p, plan, plan_model_fingerprint(f), model.hparams());
  }

  // How a run is labelled: "K/V", or "plan:FILE".
  std::string label() const { return plan.empty() ? ctk + "/" + ctv : "plan:" + plan; }

  void apply_threads() const { tq::set_threads(threads); }
};

}  // namespace tq::cli
