// `tq calibrate`: learns the polar-vq codebooks (DESIGN.md §2.4) or the kvquant ranges and levels
// (--preset kvquant; DESIGN.md §2.5, codecs/kvquant.h) of a model from a calibration text and writes
// them to a codebook file (src/codecs/polarvq_file.h).
//
// Sampling: N windows of -c tokens from the text (distinct, non-overlapping, chosen by --seed),
// each run through the model with an f32 cache; the post-RoPE keys and values are taken from the
// cache's append hook, i.e. exactly what a compressed cache would receive. A subsample of the
// positions (--max-per-head per (layer, kv-head)) bounds the memory. Then k-means per head.
#include <xxhash.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "command.h"
#include "numeric_options.h"
#include "core/progress.h"
#include "eval/calibrate.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "tq/error.h"

namespace {

// One --preset item: a preset name, or "NAME+KEY=VALUE+..." (that preset with parameters
// changed; the file's preset is then "custom", used with -ctk/-ctv polar-vq:custom).
tq::PolarVqParams parse_preset(const std::string& spec) {
  std::stringstream ss(spec);
  std::string item;
  std::getline(ss, item, '+');
  if (item == tq::kKvqPreset) {  // the kvquant3/kvquant4 data (one file serves both)
    if (item != spec) throw tq::Error("--preset kvquant takes no parameters");
    tq::PolarVqParams p;
    p.preset = tq::kKvqPreset;
    return p;
  }
  tq::PolarVqParams p = tq::polarvq_preset(item);
  bool changed = false;
  while (std::getline(ss, item, '+')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos)
      throw tq::Error("--preset: expected KEY=VALUE, got '" + item + "'");
    const std::string k = item.substr(0, eq);
    // The whole value must be an integer (stoi took "64abc" as 64); ranges are checked below.
    const int v = int(tq::parse_int_flag("--preset " + k, item.substr(eq + 1), INT32_MIN,
                                         INT32_MAX));
    if (k == "mag_bits") p.mag_bits = v;
    else if (k == "angle_bits") p.angle_bits = v;
    else if (k == "group_size") p.group_size = v;
    else if (k == "key_block_tokens") p.key_block_tokens = v;
    else if (k == "value_bits") p.value_bits = v;
    else if (k == "value_group") p.value_group = v;
    else if (k == "vq_size") p.vq_size = v;
    else if (k == "vq_dim") p.vq_dim = v;
    else if (k == "subspaces") p.subspaces = v;
    else if (k == "key_vq_dim") p.key_vq_dim = v;
    else if (k == "vq_keys") p.vq_keys = v != 0;
    else if (k == "vq_values") p.vq_values = v != 0;
    else throw tq::Error("--preset: unknown parameter '" + k + "'");
    changed = true;
  }
  if (changed) p.preset = "custom";
  tq::validate_polarvq_params(p, "--preset " + spec);
  return p;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec) &&
         std::filesystem::equivalent(a, b, ec);
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Learn polar-vq codebooks (or kvquant data) from a calibration text and write a codebook "
      "file");
  struct Opts {
    std::string model, text, out, preset = "balanced";
    int samples = 128, ctx = 512, threads = 0;
    size_t max_per_head = 4096, vq_points = 4096;
    uint64_t seed = 1;
    bool json = false;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-f,--file", o.text, "Calibration text (default: data/calib.txt)");
  using tq::cli::add_int_option;
  add_int_option(cmd, "--samples", o.samples, 1, 1 << 20,
                 "Number of sequences (windows of -c tokens)");
  add_int_option(cmd, "-c,--ctx-size", o.ctx, 2, 1 << 24, "Tokens per sequence");
  cmd->add_option("--preset", o.preset,
                  "polar-vq preset(s), comma-separated: quality, balanced, max, gqa, stage1, or "
                  "kvquant (the data of kvquant3/kvquant4); "
                  "PRESET+KEY=VALUE+... changes parameters (mag_bits, angle_bits, group_size, "
                  "key_block_tokens, value_bits, value_group, vq_size, vq_dim, subspaces, "
                  "key_vq_dim, vq_keys, vq_values) and makes a 'custom' file "
                  "(-ctk polar-vq:custom)")
      ->capture_default_str();
  cmd->add_option("-o,--output", o.out,
                  "Codebook file to write; with several presets, '{}' in it is replaced by the "
                  "item's number (0, 1, ...)")
      ->required();
  cmd->add_option("--seed", o.seed, "Seed of the window choice and of k-means")
      ->capture_default_str();
  add_int_option(cmd, "--max-per-head", o.max_per_head, 16, 1 << 24,
                 "Keys/values kept per (layer, kv-head) (bounds the memory)");
  add_int_option(cmd, "--vq-points", o.vq_points, 1, 1 << 24,
                 "Sub-vectors per stage-2 codebook fed to k-means (bounds the k-means time)");
  add_int_option(cmd, "-t,--threads", o.threads, 0, tq::max_thread_flag(),
                 "Threads (default 0 = auto)");
  cmd->add_flag("--json", o.json, "Print one JSON document on stdout");
  cmd->callback([] {
    using clk = std::chrono::steady_clock;
    const auto t0 = clk::now();
    tq::set_threads(o.threads);
    std::vector<tq::PolarVqParams> presets;
    {
      std::stringstream ss(o.preset);
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) presets.push_back(parse_preset(item));
    }
    if (presets.empty()) throw tq::Error("--preset: no preset given");
    if (presets.size() > 1 && o.out.find("{}") == std::string::npos)
      throw tq::Error("-o: with several presets the file name needs '{}'");
    if (o.samples <= 0) throw tq::Error("--samples must be positive");
    if (o.ctx < 2) throw tq::Error("-c must be at least 2");
    if (o.max_per_head < 16) throw tq::Error("--max-per-head must be at least 16");
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    const std::string tpath = o.text.empty() ? tq::default_calib_path() : o.text;
    if (same_file(tpath, tq::default_text_path()))
      std::fprintf(stderr,
                   "warning: the calibration text '%s' is the evaluation text; numbers measured "
                   "on it with these codebooks are not honest\n",
                   tpath.c_str());
    const std::string text = tq::cli::read_file(tpath, "calibration text");
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    auto tok = tq::Tokenizer::from_gguf(*f);
    const std::vector<int32_t> tokens = tok->encode(text, false);
    const tq::LlamaHparams& hp = model->hparams();

    tq::SampleOptions so;
    so.n_seq = o.samples;
    so.ctx = o.ctx;
    so.seed = o.seed;
    so.max_per_head = o.max_per_head;
    // polar-vq keys are centred by default in the cache: learn on centred keys; kvquant (a
    // baseline, pre-RoPE keys) keeps the raw ones. One sample set serves all presets, so a
    // mixed list is refused.
    const auto centred = [](const tq::PolarVqParams& p) { return p.preset != tq::kKvqPreset; };
    so.center_keys = centred(presets[0]);
    for (const auto& p : presets)
      if (centred(p) != so.center_keys)
        throw tq::Error(
            "--preset: kvquant and polar-vq presets need different key samples "
            "(polar-vq keys are mean-centred); calibrate them in two runs");
    tq::Progress bar_s("sampling", size_t(o.samples));
    so.progress = [&](size_t d, size_t n) { bar_s.update(d, std::to_string(n) + " sequences"); };
    const auto ts = clk::now();
    std::vector<tq::HeadSamples> heads = tq::collect_kv_samples(*model, tokens, so);
    bar_s.done();
    const double sample_s = std::chrono::duration<double>(clk::now() - ts).count();

    const size_t per_head = heads.empty() ? 0 : heads[0].n;
    nlohmann::json files = nlohmann::json::array();
    std::vector<tq::CodebookFile> made;  // reused by later presets where they agree
    made.reserve(presets.size());
    for (size_t i = 0; i < presets.size(); ++i) {
      const tq::PolarVqParams& p = presets[i];
      std::string out = o.out;
      if (const auto at = out.find("{}"); at != std::string::npos)
        out.replace(at, 2, std::to_string(i));
      tq::CalibrateOptions co;
      co.seed = o.seed;
      co.max_vq_points = o.vq_points;
      for (const auto& m : made) co.earlier.push_back(&m);
      const bool kvq = p.preset == tq::kKvqPreset;  // kvquant reports layers, polar-vq heads
      tq::Progress bar_k("k-means " + p.preset, kvq ? size_t(hp.n_layer) : heads.size());
      co.progress = [&](size_t d, size_t) { bar_k.update(d, kvq ? "layers" : "heads"); };
      const auto tk = clk::now();
      tq::CodebookFile cb =
          p.preset == tq::kKvqPreset
              ? tq::calibrate_kvquant(model->kv_shape(), heads, co)
              : tq::calibrate_polarvq(p, hp.n_layer, hp.n_kv_head, hp.head_dim, hp.rope, heads,
                                      co);
      bar_k.done();
      const double kmeans_s = std::chrono::duration<double>(clk::now() - tk).count();
      cb.model_fingerprint = tq::codebook_fingerprint(*f, hp.n_layer);
      cb.corpus_hash = XXH64(text.data(), text.size(), 0);
      cb.samples = uint64_t(o.samples);
      cb.ctx = uint32_t(o.ctx);
      tq::write_codebook_file(out, cb);
      made.push_back(std::move(cb));
      files.push_back({{"output", out}, {"preset", p.preset}, {"kmeans_seconds", kmeans_s}});
      if (!o.json)
        std::printf("wrote %s: preset %s (%s), k-means %.1f s\n", out.c_str(), p.preset.c_str(),
                    o.preset.c_str(), kmeans_s);
    }
    const double total_s = std::chrono::duration<double>(clk::now() - t0).count();
    char fp[32], ch[32];
    std::snprintf(fp, sizeof fp, "%016llx",
                  (unsigned long long)tq::codebook_fingerprint(*f, hp.n_layer));
    std::snprintf(ch, sizeof ch, "%016llx",
                  (unsigned long long)XXH64(text.data(), text.size(), 0));
    if (o.json) {
      tq::cli::print_json({{"model", mpath},
                           {"text", tpath},
                           {"files", files},
                           {"samples", o.samples},
                           {"ctx", o.ctx},
                           {"seed", o.seed},
                           {"text_tokens", tokens.size()},
                           {"vectors_per_head", per_head},
                           {"model_fingerprint", fp},
                           {"corpus_hash", ch},
                           {"sampling_seconds", sample_s},
                           {"seconds", total_s}});
      return;
    }
    std::printf("%d samples x %d tokens from %s (%zu tokens), %zu vectors per head, %d layers x "
                "%d KV heads; sampling %.1f s, total %.1f s\n",
                o.samples, o.ctx, tpath.c_str(), tokens.size(), per_head, hp.n_layer,
                hp.n_kv_head, sample_s, total_s);
  });
}
TQ_COMMAND(setup, 45);

}  // namespace
