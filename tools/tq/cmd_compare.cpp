// `tq compare`: the f16 reference once, then every listed cache type over the same chunks, in
// one table (memory, quality, decode speed), with optional JSON, CSV and a gnuplot figure.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "codecs/kvquant.h"
#include "command.h"
#include "core/progress.h"
#include "eval/calibrate.h"
#include "eval/compare.h"
#include "eval/perplexity.h"
#include "eval/plan.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "numeric_options.h"
#include "runtime_flags.h"

namespace {

nlohmann::json row_json(const tq::CompareRow& r, bool on_frontier) {
  return {{"label", r.label},
          {"ctk", r.ctk},
          {"ctv", r.ctv},
          {"preset", r.preset},
          {"reference", r.reference},
          {"boundary_layers", r.boundary_layers},
          {"residual", r.residual},
          {"sinks", r.sinks},
          {"bpv", r.bpv},
          {"bpv_k", r.bpv_k},
          {"bpv_v", r.bpv_v},
          {"compression", r.compression},
          {"kv_bytes", r.kv_bytes},
          {"kv_mib_8192", r.kv_mib_8192},
          {"ppl", r.ppl},
          {"ppl_stderr", r.ppl_stderr},
          {"dppl_pct", r.dppl_pct},
          {"kld_mean", r.kld_mean},
          {"kld_p99", r.kld_p99},
          {"top1", r.top1},
          {"decode_tps", r.decode_tps},
          {"prefill_tps", r.prefill_tps},
          {"seconds", r.seconds},
          {"pareto", on_frontier},
          {"key_centring", r.key_centring},
          {"centred_layers", r.centred_layers},
          {"key_means", r.key_means},
          {"key_scales", r.key_scales}};
}

// Reads the rows of a --csv file (quoted strings, no quotes inside them).
tq::CompareResult read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw tq::Error("cannot read CSV file '" + path + "'");
  auto split = [](const std::string& line) {
    std::vector<std::string> f;
    std::string cur;
    bool quoted = false;
    for (char ch : line) {
      if (ch == '"')
        quoted = !quoted;
      else if (ch == ',' && !quoted)
        f.push_back(cur), cur.clear();
      else
        cur += ch;
    }
    f.push_back(cur);
    return f;
  };
  std::string line;
  if (!std::getline(in, line)) throw tq::Error("CSV file '" + path + "' is empty");
  const auto head = split(line);
  auto col = [&](const char* k) {
    const auto it = std::find(head.begin(), head.end(), k);
    return it == head.end() ? -1 : int(it - head.begin());
  };
  for (const char* k : {"label", "ctk", "ctv", "bpv", "kld_mean"})
    if (col(k) < 0)
      throw tq::Error("CSV file '" + path + "' has no column '" + k + "' (not a tq compare CSV)");
  tq::CompareResult r;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto f = split(line);
    if (f.size() != head.size())
      throw tq::Error("CSV file '" + path + "': a row has " + std::to_string(f.size()) +
                      " fields, the header " + std::to_string(head.size()));
    auto str = [&](const char* k) { return col(k) < 0 ? std::string() : f[col(k)]; };
    auto num = [&](const char* k) {
      const std::string v = str(k);
      try {
        return v.empty() || v == "null" ? 0.0 : std::stod(v);
      } catch (const std::exception&) {
        throw tq::Error("CSV file '" + path + "': bad number '" + v + "' in column " + k);
      }
    };
    tq::CompareRow x;
    x.label = str("label");
    x.ctk = str("ctk");
    x.ctv = str("ctv");
    x.preset = str("preset");
    x.reference = str("reference") == "true" || x.label == "f16 (reference)";
    x.bpv = num("bpv");
    x.bpv_k = num("bpv_k");
    x.bpv_v = num("bpv_v");
    x.compression = num("compression");
    x.kv_bytes = size_t(num("kv_bytes"));
    x.kv_mib_8192 = num("kv_mib_8192");
    x.ppl = num("ppl");
    x.ppl_stderr = num("ppl_stderr");
    x.dppl_pct = num("dppl_pct");
    x.kld_mean = num("kld_mean");
    x.kld_p99 = num("kld_p99");
    x.top1 = num("top1");
    x.decode_tps = num("decode_tps");
    x.residual = int(num("residual"));
    x.sinks = int(num("sinks"));
    x.boundary_layers = int(num("boundary_layers"));
    if (col("key_centring") >= 0) x.key_centring = str("key_centring");
    x.centred_layers = int(num("centred_layers"));
    if (col("key_means") >= 0) x.key_means = str("key_means");
    x.key_scales = col("key_scales") >= 0 && str("key_scales") == "true";  // older: none
    if (col("tokens_scored") >= 0) r.tokens_scored = long(num("tokens_scored"));
    if (col("ctx") >= 0) r.n_ctx = int(num("ctx"));
    r.rows.push_back(x);
  }
  return r;
}

// Prints the table (or JSON), writes the CSV and the plot.
void report(const tq::CompareResult& r, const std::string& mpath, const std::string& tpath,
            const std::string& model_name, const std::string& plot, const std::string& csv,
            bool json) {
  const auto frontier = tq::pareto_frontier(r.rows);
  auto on_front = [&](size_t i) {
    return std::find(frontier.begin(), frontier.end(), i) != frontier.end();
  };

  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < r.rows.size(); ++i) {
    rows.push_back(row_json(r.rows[i], on_front(i)));
    rows.back()["ctx"] = r.n_ctx;
    rows.back()["tokens_scored"] = r.tokens_scored;
  }
  if (!csv.empty()) {
    std::ofstream c(csv);
    if (!c) throw tq::Error("cannot write CSV file '" + csv + "'");
    const char* keys[] = {
        "label",           "ctk",         "ctv",        "bpv",           "compression",
        "kv_bytes",        "kv_mib_8192", "ppl",        "dppl_pct",      "kld_mean",
        "kld_p99",         "top1",        "decode_tps", "residual",      "sinks",
        "boundary_layers", "pareto",      "ctx",        "tokens_scored", "bpv_k",
        "bpv_v",           "ppl_stderr",  "preset",     "reference",     "key_centring",
        "centred_layers",  "key_means",   "key_scales"};
    for (size_t k = 0; k < std::size(keys); ++k) c << (k ? "," : "") << keys[k];
    c << "\n";
    for (const auto& j : rows) {
      for (size_t k = 0; k < std::size(keys); ++k) {
        const auto& v = j[keys[k]];
        c << (k ? "," : "");
        if (v.is_string())
          c << "\"" << v.get<std::string>() << "\"";
        else
          c << v.dump();
      }
      c << "\n";
    }
  }
  if (!plot.empty()) {
    char title[256];
    const std::string scored =
        r.tokens_scored > 0 ? ", " + std::to_string(r.tokens_scored) + " scored tokens" : "";
    std::snprintf(title, sizeof title, "KLD vs bpv, %s%s-c %d%s", model_name.c_str(),
                  model_name.empty() ? "" : ", ", r.n_ctx, scored.c_str());
    tq::plot_compare(r, plot, title);
  }
  if (json) {
    tq::cli::print_json({{"model", mpath},
                         {"text", tpath},
                         {"ctx", r.n_ctx},
                         {"chunks", r.chunks},
                         {"tokens_scored", r.tokens_scored},
                         {"tokens_run", r.tokens_run},
                         {"decode_tokens", r.decode_tokens},
                         {"rows", rows}});
    return;
  }
  if (tpath.empty())
    std::printf("tq compare: rows read from %s, -c %d\n", mpath.c_str(), r.n_ctx);
  else
    std::printf(
        "tq compare: %s, %s, -c %d, %d chunk(s): %ld tokens run per row, %ld scored; "
        "decode: %d greedy tokens after the first chunk\n",
        mpath.c_str(), tpath.c_str(), r.n_ctx, r.chunks, r.tokens_run, r.tokens_scored,
        r.decode_tokens);
  std::printf("%-26s %-10s %-10s %5s %6s %6s %8s %9s %8s %9s %8s %8s %6s %8s\n", "cache", "K", "V",
              "ctr", "bpv", "x f16", "MiB@8k", "PPL", "dPPL%", "KLD mean", "KLD p99", "top-1",
              "front", "dec t/s");
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const auto& x = r.rows[i];
    std::printf(
        "%-26s %-10s %-10s %5d %6.3f %6.2f %8.2f %9.4f %+8.2f %9.5f %8.4f %7.2f%% %6s "
        "%8.1f\n",
        x.label.c_str(), x.ctk.c_str(), x.ctv.c_str(), x.centred_layers, x.bpv, x.compression,
        x.kv_mib_8192, x.ppl, x.dppl_pct, x.kld_mean, x.kld_p99, 100 * x.top1,
        on_front(i) ? "*" : "", x.decode_tps);
  }
  std::printf(
      "bpv: all-in bits per stored value from the cache's measured bytes at -c %d "
      "(codes, scales, f16 windows/sinks/boundary layers); MiB@8k = bytes per token "
      "x 8192; front: on the Pareto frontier of (bpv, KLD mean); (R=N) newest N "
      "tokens f16 (KIVI default 128), (S=N) first N tokens f16 (kvquant default 1, KVarN "
      "128); ctr: layers whose keys were mean-centred (turbo*/polar/polar-vq by default, "
      "baselines not; (C=1)/(C=0) forced by flag or @C=), their f32 means counted in "
      "bpv; centred keys are also scaled per channel (f16 scales counted) unless "
      "--no-key-scales.\n",
      r.n_ctx);
  if (!plot.empty()) std::printf("plot: %s\n", plot.c_str());
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "compare",
      "f16 reference once, then every cache type of --types over the same chunks: bpv, "
      "compression, KV MiB at 8192 tokens, PPL, dPPL, KLD mean/p99, top-1, decode tok/s");
  struct Opts {
    std::string model, text, types, csv, plot, from_csv;
    int ctx = 512, chunks = -1, decode = 16;
    bool json = false, quiet = false;
    tq::cli::RuntimeFlags rt;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-f,--file", o.text, "Text file (default: data/eval.txt)");
  tq::cli::add_int_option(cmd, "-c,--ctx-size", o.ctx, 4, 1 << 24,
                          "Tokens per chunk (the run's context)");
  tq::cli::add_int_option(cmd, "--chunks", o.chunks, -1, INT32_MAX,
                          "Number of chunks (default -1: all the text holds)");
  cmd->add_option("--types", o.types,
                  "Comma-separated rows: T (K = V = T), K/V (e.g. q8_0/turbo3), a vLLM preset "
                  "(e.g. turboquant_k3v4_nc: its K/V types and f16 boundary layers) or `kvarn` "
                  "(KVarN's kvarn_k4v2_g128: K kvarn4, V kvarn2), plan:FILE (a plan from "
                  "`tq plan`: its per-layer types and options); suffix "
                  "@R=N / @S=N sets this row's f16 residual window / sinks, @C=1 / @C=0 centres "
                  "this row's keys in every / no layer (default: turbo*, polar and polar-vq "
                  "centred, baselines as their authors ship them). kivi2/kivi4 rows "
                  "get KIVI's R=128 window unless --residual or @R= is given; kvquant3/kvquant4 "
                  "rows keep S=1 sink token f16 unless --sinks or @S= is given; kvarn4/kvarn2 "
                  "rows (and `kvarn`) keep KVarN's S=128 first tokens f16 unless --sinks or @S= "
                  "is given");
  tq::cli::add_int_option(cmd, "--decode", o.decode, 0, 1 << 24,
                          "Greedy tokens timed for decode tok/s: after the first chunk's CTX-token "
                          "prefill, N steps of one token each through the model's generation "
                          "path (AttnPath::kAuto: the SIMD decode driver when every stored "
                          "segment is codes, "
                          "else the code-scoring path), at the run's thread count");
  cmd->add_flag("--json", o.json,
                "Print {\"rows\":[{ctk,ctv,bpv,ppl,dppl_pct,kld_mean,kld_p99,top1,kv_bytes,"
                "decode_tps,...}]} on stdout");
  cmd->add_option("--csv", o.csv, "Also write the rows as CSV to FILE");
  cmd->add_option("--plot", o.plot,
                  "Also draw mean KLD (log) vs bpv with the Pareto frontier into FILE.png "
                  "(needs gnuplot)");
  cmd->add_option("--from-csv", o.from_csv,
                  "Run nothing: read the rows of an earlier --csv file and print / plot them "
                  "(-c only labels the plot)");
  cmd->add_flag("-q,--quiet", o.quiet, "No progress bar");
  o.rt.add(cmd);
  cmd->callback([cmd] {
    // Bad input first, before any work.
    if (cmd->get_option("--ctk")->count() || cmd->get_option("--ctv")->count())
      throw tq::Error(
          "compare: give the cache types with --types (e.g. --types q8_0/turbo3), "
          "not -ctk/-ctv");
    if (!o.rt.plan.empty())
      throw tq::Error("compare: give a plan as a row, --types plan:FILE (not --plan)");
    if (!o.from_csv.empty()) {
      if (!o.plot.empty()) tq::require_gnuplot();
      tq::CompareResult r = read_csv(o.from_csv);
      if (r.n_ctx == 0) r.n_ctx = o.ctx;  // older CSVs have no ctx column
      report(r, o.from_csv, "", "", o.plot, o.csv, o.json);
      return;
    }
    if (o.types.empty()) throw tq::Error("compare: --types is required");
    const auto entries = tq::parse_type_list(o.types);
    if (!o.plot.empty()) tq::require_gnuplot();
    if (o.ctx < 4) throw tq::Error("compare: -c must be at least 4");
    if (o.chunks == 0 || o.chunks < -1) throw tq::Error("compare: --chunks must be at least 1");
    if (o.decode < 0) throw tq::Error("compare: --decode must be >= 0");
    o.rt.apply_threads();
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    const std::string tpath = o.text.empty() ? tq::default_text_path() : o.text;
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    tq::CompareOptions co;
    co.n_ctx = o.ctx;
    co.n_chunks = o.chunks;
    co.cache = o.rt.cache_options();
    co.residual_given = cmd->get_option("--residual")->count() > 0;
    co.sinks_given = cmd->get_option("--sinks")->count() > 0;
    co.decode_tokens = o.decode;
    // polar-vq rows need --codebooks (checked against the model and every row's types).
    std::vector<std::string> row_types;
    for (const auto& e : entries)
      for (const auto& t : tq::cli::RuntimeFlags::all_types(tq::row_cache_options(e, co)))
        row_types.push_back(t);
    for (const auto& t : row_types) tq::check_calibration_given(t, !o.rt.codebooks.empty());
    if (o.rt.codebooks.find(',') != std::string::npos) {
      // One file per preset (polar-vq presets, kvquant): each is checked against its rows.
      std::stringstream ss(o.rt.codebooks);
      std::string path;
      while (std::getline(ss, path, ',')) {
        if (path.empty()) continue;
        const std::string preset = tq::read_codebook_file(path).params.preset;
        for (const auto& cb : co.codebook_set)
          if (cb->params.preset == preset)
            throw tq::Error("--codebooks: two files for " + tq::preset_label(preset));
        std::vector<std::string> mine;
        for (const auto& t : row_types)
          if (tq::codebook_preset_of(t) == preset) mine.push_back(t);
        if (mine.empty())
          throw tq::Error("--codebooks '" + path + "' is for " + tq::preset_label(preset) +
                          ", which no row uses");
        co.codebook_set.push_back(tq::load_codebooks(path, *f, *model, mine));
        tq::warn_if_past_calibration(*co.codebook_set.back(), path, o.ctx);
      }
    } else if (!o.rt.codebooks.empty()) {
      co.cache.codebooks = tq::load_codebooks(o.rt.codebooks, *f, *model, row_types);
      tq::warn_if_past_calibration(*co.cache.codebooks, o.rt.codebooks, o.ctx);
    }
    for (const auto& e : entries) {
      if (e.plan) {
        tq::check_plan_model(*e.plan, e.plan_file, tq::plan_model_fingerprint(*f),
                             model->hparams());
        o.rt.check_plan_options(*e.plan, e.plan_file);  // e.g. --no-center-keys vs the plan's
      }
      tq::validate_cache_options(tq::row_cache_options(e, co), model->hparams().n_layer);
    }
    std::vector<std::string> names;
    for (const auto& t : f->tensors()) names.push_back(t.name);
    co.model_fingerprint = f->fingerprint(names);
    auto tok = tq::Tokenizer::from_gguf(*f);
    const std::vector<int32_t> tokens = tok->encode(tq::cli::read_file(tpath, "text file"), true);

    std::unique_ptr<tq::Progress> bar;
    if (!o.quiet)
      co.progress = [&](size_t done, size_t total, const std::string& note) {
        if (!bar) bar = std::make_unique<tq::Progress>("compare", total);  // chunks of all rows
        bar->update(done, note);
      };
    const tq::CompareResult r =
        tq::run_compare(*model, tokens, tok->wants_bos(), tok->bos(), entries, co);
    if (bar) bar->done();
    report(r, mpath, tpath, std::filesystem::path(mpath).filename().string(), o.plot, o.csv,
           o.json);
  });
}
TQ_COMMAND(setup, 45);

}  // namespace
