// `tq needle`: passkey retrieval over lengths × depths × cache types (DESIGN.md §11.2): an
// accuracy table, --json, --csv and a heat map (gnuplot).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "command.h"
#include "core/numeric_flag.h"
#include "core/progress.h"
#include "eval/needle.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/paths.h"
#include "model/tokenizer.h"
#include "numeric_options.h"
#include "runtime_flags.h"

namespace {

std::vector<std::string> split_list(const std::string& s, const char* flag) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) throw tq::Error(std::string(flag) + ": empty entry in '" + s + "'");
    out.push_back(item.substr(a, b - a + 1));
  }
  if (out.empty() || (!s.empty() && s.back() == ','))
    throw tq::Error(std::string(flag) + ": empty entry in '" + s + "'");
  return out;
}

// compare's row parser names itself in its messages; here the rows are needle's.
std::vector<tq::CompareEntry> parse_rows(const std::string& types) {
  try {
    return tq::parse_type_list(types);
  } catch (const tq::Error& e) {
    std::string m = e.what();
    if (m.rfind("compare: ", 0) == 0) m = "needle: " + m.substr(9);
    throw tq::Error(m);
  }
}

nlohmann::json result_json(const tq::NeedleResult& r) {
  nlohmann::json rows = nlohmann::json::array();
  const size_t nd = r.depths.size();
  for (const auto& row : r.rows) {
    nlohmann::json cells = nlohmann::json::array(), means = nlohmann::json::array();
    for (size_t li = 0; li < r.lengths.size(); ++li) {
      means.push_back({{"length", r.lengths[li]},
                       {"accuracy", r.mean(row, li)},
                       {"bpv", row.bpv[li]},
                       {"kv_bytes", row.kv_bytes[li]}});
      for (size_t di = 0; di < nd; ++di) {
        const auto& c = row.cells[li * nd + di];
        nlohmann::json trials = nlohmann::json::array();
        for (const auto& t : c.trials)
          trials.push_back({{"number", t.number},
                            {"answer", t.answer},
                            {"correct", t.correct},
                            {"needle_pos", t.needle_pos}});
        cells.push_back({{"length", c.length},
                         {"depth", c.depth},
                         {"correct", c.correct},
                         {"trials", c.trials.size()},
                         {"accuracy", c.accuracy()},
                         {"runs", trials}});
      }
    }
    rows.push_back(
        {{"label", row.label},
         {"ctk", row.ctk},
         {"ctv", row.ctv},
         {"reference", row.reference},
         {"by_length", means},
         {"cells", cells},
         {"seconds", row.seconds},
         {"cpu_seconds", row.cpu_seconds},
         {"from_log", row.from_log},
         {"prefill_tps",
          row.prefill_seconds > 0 ? double(row.prefill_tokens) / row.prefill_seconds : 0.0}});
  }
  return rows;
}

void write_csv(const tq::NeedleResult& r, const std::string& path) {
  std::ofstream c(path);
  if (!c) throw tq::Error("cannot write CSV file '" + path + "'");
  c << "label,ctk,ctv,reference,length,depth,bpv,trials,correct,accuracy\n";
  const size_t nd = r.depths.size();
  for (const auto& row : r.rows)
    for (size_t li = 0; li < r.lengths.size(); ++li)
      for (size_t di = 0; di < nd; ++di) {
        const auto& cell = row.cells[li * nd + di];
        c << "\"" << row.label << "\",\"" << row.ctk << "\",\"" << row.ctv << "\","
          << (row.reference ? "true" : "false") << "," << cell.length << "," << cell.depth << ","
          << row.bpv[li] << "," << cell.trials.size() << "," << cell.correct << ","
          << cell.accuracy() << "\n";
      }
  if (!c) throw tq::Error("writing CSV file '" + path + "' failed");
}

void print_table(const tq::NeedleResult& r, const std::string& mpath, const std::string& fpath) {
  std::printf("tq needle: %s, filler %s (%zu tokens), %d trial(s) per cell, %s prompt\n",
              mpath.c_str(), fpath.c_str(), r.filler_tokens, r.trials,
              r.chat ? "chat-template" : "plain-text");
  std::printf("%-24s %7s %7s", "cache", "bpv", "length");
  for (double d : r.depths) std::printf("  d=%-4.2f", d);
  std::printf(" %7s %8s\n", "mean", "vs f16");
  const size_t nd = r.depths.size();
  const tq::NeedleRow* ref = r.rows.empty() || !r.rows[0].reference ? nullptr : &r.rows[0];
  for (const auto& row : r.rows)
    for (size_t li = 0; li < r.lengths.size(); ++li) {
      std::printf("%-24s %7.3f %7d", row.label.c_str(), row.bpv[li], r.lengths[li]);
      for (size_t di = 0; di < nd; ++di) {
        const auto& c = row.cells[li * nd + di];
        std::printf("  %6.0f%%", 100.0 * c.accuracy());
      }
      const double m = r.mean(row, li);
      std::printf(" %6.1f%%", 100 * m);
      if (ref && !row.reference)
        std::printf(" %+7.1f\n", 100 * (m - r.mean(*ref, li)));
      else
        std::printf(" %8s\n", "");
    }
  std::printf(
      "accuracy: exact match of the greedy answer's first number with the hidden one, "
      "%d trial(s) per cell; mean over depths; vs f16: points against the f16 cache on "
      "the same prompts; bpv all-in from the cache's bytes after the first prompt of "
      "each length.\n",
      r.trials);
  for (const auto& row : r.rows)
    std::printf(
        "time %-24s %8.1f s wall, %8.1f s CPU, prefill %.1f tok/s%s\n", row.label.c_str(),
        row.seconds, row.cpu_seconds,
        row.prefill_seconds > 0 ? double(row.prefill_tokens) / row.prefill_seconds : 0.0,
        row.from_log ? (" (" + std::to_string(row.from_log) + " prompts from --log)").c_str() : "");
}

void setup(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "needle",
      "Passkey retrieval: a random 5-7 digit number hidden at each depth of filler text of each "
      "length, the question at the end, a greedy answer, exact match; the f16 reference and "
      "every cache type of --types on the same prompts");
  struct Opts {
    std::string model, filler, types = "f16", lengths = "1024,4096", depths = "0,0.25,0.5,0.75,1";
    std::string csv, plot, log;
    int trials = 3, answer_tokens = 12;
    bool json = false, quiet = false, no_chat = false, no_reference = false;
    tq::cli::RuntimeFlags rt;
  };
  static Opts o;
  cmd->add_option("-m,--model", o.model,
                  std::string("GGUF model (default: ") + tq::kDefaultModelFile + ")");
  cmd->add_option("-f,--file", o.filler,
                  "Filler text (default: data/eval.txt; never the calibration text); the "
                  "filler of each trial starts at a seeded offset into its tokens");
  cmd->add_option("--lengths", o.lengths,
                  "Comma-separated prompt lengths in tokens (exact: the filler is cut to fit)")
      ->capture_default_str();
  cmd->add_option("--depths", o.depths,
                  "Comma-separated needle depths in [0, 1] (fraction of the filler before it)")
      ->capture_default_str();
  cmd->add_option("--types", o.types,
                  "Comma-separated rows as in `tq compare`: T (K = V = T), K/V, a vLLM preset, "
                  "plan:FILE (a plan from `tq plan`; --plan FILE adds the same row), suffix "
                  "@R=N / @S=N / @C=0|1; kivi2/kivi4 rows get KIVI's R=128 window unless "
                  "--residual or @R= is given. The f16 reference always runs first, plain (the "
                  "cache flags below, e.g. --center-keys, apply to the other rows only)")
      ->capture_default_str();
  tq::cli::add_int_option(cmd, "--trials", o.trials, 1, 1000,
                          "Prompts per (length, depth), each with its own number");
  tq::cli::add_int_option(cmd, "--answer-tokens", o.answer_tokens, 1, 64,
                          "Greedy tokens decoded for the answer (stops once the number ends)");
  cmd->add_flag("--no-chat", o.no_chat, "Plain-text prompt instead of the model's chat template");
  cmd->add_flag("--no-reference", o.no_reference,
                "Do not run the f16 reference (to split a long measurement over several runs: "
                "the prompts depend only on --seed, the lengths, depths and trials)");
  cmd->add_flag("--json", o.json,
                "Print {\"rows\":[{label,by_length:[{length,accuracy,bpv}],cells:[{length,depth,"
                "correct,trials,runs:[{number,answer,correct}]}]}]} on stdout");
  cmd->add_option("--csv", o.csv, "Also write one line per (row, length, depth) to FILE");
  cmd->add_option("--plot", o.plot, "Also draw the accuracy heat map into FILE.png (gnuplot)");
  cmd->add_option("--log", o.log,
                  "Append every finished prompt to FILE (one JSON line each, flushed) and take "
                  "the prompts FILE already holds from it: a long run that stops (killed, a "
                  "session's end) continues where it stopped when run again with the same "
                  "--log; a record is reused only for the same row options and the same prompt "
                  "(its tokens' hash)");
  cmd->add_flag("-q,--quiet", o.quiet, "No progress bar");
  o.rt.add(cmd);
  cmd->callback([cmd] {
    // Bad input first, before any work.
    if (cmd->get_option("--ctk")->count() || cmd->get_option("--ctv")->count())
      throw tq::Error(
          "needle: give the cache types with --types (e.g. --types f16,turbo3), not "
          "-ctk/-ctv");
    auto entries = parse_rows(o.types);
    // --plan FILE: one more row, as `--types ...,plan:FILE` would add (DESIGN.md §11.1); the
    // flags that set types or differ from the plan's cache options are refused (RuntimeFlags).
    if (const auto plan = o.rt.read_plan_file()) {
      tq::CompareEntry e;
      e.spec = "plan:" + o.rt.plan;
      e.plan_file = o.rt.plan;
      e.plan = plan;
      e.ctk = e.ctv = "f16";
      entries.push_back(e);
    }
    tq::NeedleOptions no;
    for (const auto& s : split_list(o.lengths, "--lengths"))
      no.lengths.push_back(int(tq::parse_int_flag("--lengths", s, 1, 1 << 24)));
    for (const auto& s : split_list(o.depths, "--depths"))
      no.depths.push_back(tq::parse_float_flag("--depths", s, 0.0, 1.0));
    no.trials = o.trials;
    no.max_new_tokens = o.answer_tokens;
    no.seed = o.rt.seed;
    no.chat = !o.no_chat;
    if (!o.plot.empty()) tq::require_gnuplot();
    if (o.rt.codebooks.find(',') != std::string::npos)
      throw tq::Error("needle: --codebooks takes one file here (run one preset per call)");
    o.rt.apply_threads();
    {
      // The other rows' options: the command line's, without the plan (its row has its own).
      tq::cli::RuntimeFlags base = o.rt;
      base.plan.clear();
      no.compare.cache = base.cache_options();
    }
    no.compare.residual_given = cmd->get_option("--residual")->count() > 0;
    no.compare.sinks_given = cmd->get_option("--sinks")->count() > 0;
    const std::string mpath = o.model.empty() ? tq::default_model_path() : o.model;
    const std::string fpath = o.filler.empty() ? tq::default_text_path() : o.filler;
    const std::string text = tq::cli::read_file(fpath, "filler file");
    auto f = tq::GgufFile::open(mpath);
    auto model = tq::LlamaModel::load(*f);
    std::vector<std::string> row_types;
    for (const auto& e : entries)
      for (const auto& t : tq::cli::RuntimeFlags::all_types(tq::row_cache_options(e, no.compare)))
        row_types.push_back(t);
    for (const auto& t : row_types) tq::check_calibration_given(t, !o.rt.codebooks.empty());
    if (!o.rt.codebooks.empty())
      no.compare.cache.codebooks = tq::load_codebooks(o.rt.codebooks, *f, *model, row_types);
    for (const auto& e : entries)
      if (e.plan) {  // another model's plan, or a cache flag that differs from the plan's
        tq::check_plan_model(*e.plan, e.plan_file, tq::plan_model_fingerprint(*f),
                             model->hparams());
        o.rt.check_plan_options(*e.plan, e.plan_file);
      }
    no.log_path = o.log;
    if (!o.log.empty()) no.log_model = tq::plan_model_fingerprint(*f);
    auto tok = tq::Tokenizer::from_gguf(*f);
    const std::vector<int32_t> filler = tok->encode(text, false);
    if (filler.empty()) throw tq::Error("needle: the filler file '" + fpath + "' is empty");

    std::unique_ptr<tq::Progress> bar;
    if (!o.quiet)
      no.progress = [&](size_t done, size_t total, const std::string& note) {
        if (!bar) bar = std::make_unique<tq::Progress>("needle", total);  // prompts of all rows
        bar->update(done, note);
      };
    tq::NeedleResult r = tq::run_needle(*model, *tok, filler, entries, no, !o.no_reference);
    if (bar) bar->done();
    if (!o.csv.empty()) write_csv(r, o.csv);
    if (!o.plot.empty()) {
      char title[256];
      std::snprintf(title, sizeof title, "passkey retrieval, %s, %d trial(s) per cell",
                    std::filesystem::path(mpath).filename().string().c_str(), r.trials);
      tq::plot_needle(r, o.plot, title);
    }
    if (o.json) {
      nlohmann::json lens = r.lengths, deps = r.depths;
      tq::cli::print_json({{"model", mpath},
                           {"filler", fpath},
                           {"filler_tokens", r.filler_tokens},
                           {"trials", r.trials},
                           {"seed", o.rt.seed},
                           {"chat", r.chat},
                           {"lengths", lens},
                           {"depths", deps},
                           {"rows", result_json(r)}});
      return;
    }
    print_table(r, mpath, fpath);
    if (!o.plot.empty()) std::printf("plot: %s\n", o.plot.c_str());
  });
}
TQ_COMMAND(setup, 47);

}  // namespace
