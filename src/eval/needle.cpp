// turboquant — passkey retrieval (see needle.h).
#include "eval/needle.h"

#include <time.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/rng.h"
#include "eval/perplexity.h"
#include "model/memcheck.h"
#include "model/tokenizer.h"
#include "tq/codec.h"
#include "tq/error.h"

namespace tq {
namespace {

constexpr const char* kInstruction =
    "There is a pass key hidden inside a lot of irrelevant text. Find it and remember it; "
    "I will ask you for it at the end.\n\n";
constexpr const char* kQuestion = "\n\nWhat is the pass key?";
constexpr const char* kAnswerPrefix = "The pass key is";
constexpr int kMinFiller = 16;   // a prompt needs at least this much filler
constexpr int kSnapTokens = 32;  // how far an insertion point or offset moves to a word start
// derive_seed tags of the two seeded choices.
constexpr uint64_t kTagNumber = 0x4e45'4544'4c45'0001ull, kTagOffset = 0x4e45'4544'4c45'0002ull;

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

bool starts_word(const Tokenizer& tok, int32_t id) {
  const std::string p = tok.token_to_piece(id);
  return !p.empty() && (p[0] == ' ' || p[0] == '\n' || p[0] == '\t');
}

// SentencePiece-style tokenizers put a space in front of every encoded text themselves.
bool adds_space(const Tokenizer& tok) { return tok.model() == "llama"; }

std::string fmt_depth(double d) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", d);
  return b;
}

}  // namespace

NeedleParts make_needle_parts(const Tokenizer& tok, bool chat) {
  NeedleParts p;
  p.chat = chat;
  std::string head = kInstruction, tail = std::string(kQuestion);
  if (chat) {
    // The template rendered around a marker, cut at the marker: what comes before the user's
    // text and what comes after it (up to and including the assistant's turn header).
    const std::string marker = "\x01";
    const std::string t = tok.apply_chat_template({{"user", marker}}, true);
    const auto at = t.find(marker);
    TQ_ASSERT(at != std::string::npos);
    head = t.substr(0, at) + head;
    tail += t.substr(at + marker.size());
  } else {
    tail += "\n";
  }
  tail += kAnswerPrefix;
  p.head = tok.encode(head, true);
  p.tail = tok.encode(tail, false);
  return p;
}

std::vector<int32_t> needle_tokens(const Tokenizer& tok, const std::string& number) {
  const std::string s = "The pass key is " + number + ". Remember it.";
  return tok.encode(adds_space(tok) ? s : " " + s, false);
}

std::string needle_number(uint64_t seed, int length, int depth_index, int trial, int attempt) {
  Rng rng(derive_seed(seed ^ kTagNumber ^ (uint64_t(attempt) << 40), uint64_t(length),
                      uint64_t(depth_index), uint64_t(trial)));
  const int digits = 5 + int(rng.next() % 3);
  std::string s(1, char('1' + rng.next() % 9));
  while (int(s.size()) < digits) s += char('0' + rng.next() % 10);
  return s;
}

int needle_min_length(const Tokenizer& tok, const NeedleParts& parts) {
  return int(parts.head.size() + parts.tail.size() + needle_tokens(tok, "9999999").size()) +
         kMinFiller;
}

size_t needle_filler_offset(const Tokenizer& tok, const std::vector<int32_t>& filler, uint64_t seed,
                            int length, int trial, int need) {
  TQ_ASSERT(need >= 0 && size_t(need) <= filler.size());
  const size_t room = filler.size() - size_t(need);
  if (room == 0) return 0;
  Rng rng(derive_seed(seed ^ kTagOffset, uint64_t(length), uint64_t(trial)));
  size_t off = size_t(rng.next() % (room + 1));
  for (size_t k = 0; k < kSnapTokens && off + k <= room; ++k)
    if (starts_word(tok, filler[off + k])) return off + k;
  return off;
}

NeedlePrompt build_needle_prompt(const Tokenizer& tok, const NeedleParts& parts,
                                 const std::vector<int32_t>& filler, int length, double depth,
                                 const std::string& number, size_t filler_offset) {
  if (!(depth >= 0.0 && depth <= 1.0))
    throw Error("needle: depth " + fmt_depth(depth) + " is outside [0, 1]");
  const std::vector<int32_t> needle = needle_tokens(tok, number);
  const long fixed = long(parts.head.size() + parts.tail.size() + needle.size());
  const long n = long(length) - fixed;
  if (n < kMinFiller)
    throw Error("needle: length " + std::to_string(length) + " cannot hold the prompt's " +
                std::to_string(fixed) + " fixed tokens and " + std::to_string(kMinFiller) +
                " filler tokens (use at least " + std::to_string(fixed + kMinFiller) + ")");
  if (filler_offset > filler.size() || filler.size() - filler_offset < size_t(n))
    throw Error("needle: the filler text has " + std::to_string(filler.size()) +
                " tokens; length " + std::to_string(length) + " needs " + std::to_string(n) +
                (filler_offset ? " from token " + std::to_string(filler_offset) : "") +
                " (give a longer file with -f)");
  const int32_t* f = filler.data() + filler_offset;
  long at = std::lround(depth * double(n));
  if (at > 0 && at < n) {
    for (long k = 0; k < kSnapTokens && at + k < n; ++k)
      if (starts_word(tok, f[at + k])) {
        at += k;
        break;
      }
  }
  NeedlePrompt p;
  p.tokens.reserve(size_t(length));
  p.tokens.insert(p.tokens.end(), parts.head.begin(), parts.head.end());
  p.tokens.insert(p.tokens.end(), f, f + at);
  p.needle_pos = int(p.tokens.size());
  p.needle_len = int(needle.size());
  p.tokens.insert(p.tokens.end(), needle.begin(), needle.end());
  p.tokens.insert(p.tokens.end(), f + at, f + n);
  p.tokens.insert(p.tokens.end(), parts.tail.begin(), parts.tail.end());
  TQ_ASSERT(p.tokens.size() == size_t(length));
  p.filler_tokens = int(n);
  p.filler_before = int(at);
  p.filler_offset = filler_offset;
  return p;
}

int count_number(const Tokenizer& tok, const std::vector<int32_t>& tokens,
                 const std::string& number) {
  const std::string text = tok.decode(tokens);
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  int n = 0;
  for (size_t p = text.find(number); p != std::string::npos; p = text.find(number, p + 1))
    n += (p == 0 || !digit(text[p - 1])) &&
         (p + number.size() == text.size() || !digit(text[p + number.size()]));
  return n;
}

std::string first_digit_run(const std::string& text) {
  size_t a = 0;
  while (a < text.size() && !(text[a] >= '0' && text[a] <= '9')) ++a;
  size_t b = a;
  while (b < text.size() && text[b] >= '0' && text[b] <= '9') ++b;
  return text.substr(a, b - a);
}

double NeedleResult::mean(const NeedleRow& r, size_t li) const {
  double s = 0;
  for (size_t di = 0; di < depths.size(); ++di) s += r.cells[li * depths.size() + di].accuracy();
  return depths.empty() ? 0.0 : s / double(depths.size());
}

std::string needle_cache_tag(const KvCacheOptions& o) {
  std::string t = "k=" + o.type_k + ";v=" + o.type_v;
  for (const auto& [l, ty] : o.layer_type_k) t += ";k" + std::to_string(l) + "=" + ty;
  for (const auto& [l, ty] : o.layer_type_v) t += ";v" + std::to_string(l) + "=" + ty;
  t += ";boundary=" + std::to_string(o.boundary_layers) + ":" + o.boundary_type_k + "/" +
       o.boundary_type_v;
  t += ";R=" + std::to_string(o.residual_window) + ";S=" + std::to_string(o.sink_tokens);
  t += std::string(";C=") + key_centring_name(o.key_centring);
  t += std::string(";means=") + (o.key_means_per_page ? "page" : "first");
  t += std::string(";scales=") + (o.key_scales ? "on" : "off");
  t += ";seed=" + std::to_string(o.seed);
  t += std::string(";codebooks=") + (o.codebooks ? "yes" : "no");
  return t;
}

namespace {
// One finished prompt as the log holds it.
struct LogRecord {
  std::string answer;
  bool correct = false;
  int needle_pos = 0;
  size_t kv_bytes = 0;
  double seconds = 0, cpu_seconds = 0, prefill_seconds = 0;
};
// The prompt tokens' XXH64 as 16 hex digits (as the log stores it).
std::string prompt_hash(const std::vector<int32_t>& tokens) {
  char h[17];
  std::snprintf(h, sizeof h, "%016llx",
                static_cast<unsigned long long>(
                    XXH64(tokens.data(), tokens.size() * sizeof(int32_t), 0x6e65'6564'6c65ull)));
  return h;
}
std::string log_key(const std::string& tag, int length, double depth, int trial,
                    const std::string& number, const std::string& prompt_hash) {
  return tag + "|" + std::to_string(length) + "|" + fmt_depth(depth) + "|" + std::to_string(trial) +
         "|" + number + "|" + prompt_hash;
}
// Reads a needle log: key → record. A last line without its newline (a run killed while
// writing it) is cut off the file, so the records appended next start on a line of their own;
// any other line that is not a record is an error.
std::map<std::string, LogRecord> read_needle_log(const std::string& path) {
  std::map<std::string, LogRecord> m;
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return m;  // a new log
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (!text.empty() && text.back() != '\n') {
    const size_t keep = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    std::error_code ec;
    std::filesystem::resize_file(path, keep, ec);
    if (ec) throw Error("needle: cannot cut the unfinished last line of --log '" + path + "'");
    text.resize(keep);
  }
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  for (size_t i = 0; i < lines.size(); ++i) {
    try {
      const auto j = nlohmann::json::parse(lines[i]);
      LogRecord r;
      r.answer = j.at("answer").get<std::string>();
      r.correct = j.at("correct").get<bool>();
      r.needle_pos = j.at("needle_pos").get<int>();
      r.kv_bytes = j.at("kv_bytes").get<size_t>();
      r.seconds = j.at("seconds").get<double>();
      r.cpu_seconds = j.at("cpu_seconds").get<double>();
      r.prefill_seconds = j.at("prefill_seconds").get<double>();
      m[log_key(j.at("tag").get<std::string>(), j.at("length").get<int>(),
                j.at("depth").get<double>(), j.at("trial").get<int>(),
                j.at("number").get<std::string>(), j.at("prompt_hash").get<std::string>())] = r;
    } catch (const std::exception& e) {
      throw Error("needle: --log '" + path + "' line " + std::to_string(i + 1) +
                  " is not a needle log record (" + e.what() + ")");
    }
  }
  return m;
}
}  // namespace

NeedleResult run_needle(const LlamaModel& model, const Tokenizer& tok,
                        const std::vector<int32_t>& filler,
                        const std::vector<CompareEntry>& entries, const NeedleOptions& opts,
                        bool with_reference) {
  const LlamaHparams& hp = model.hparams();
  if (opts.lengths.empty()) throw Error("needle: --lengths is empty");
  if (opts.depths.empty()) throw Error("needle: --depths is empty");
  if (opts.trials < 1) throw Error("needle: --trials must be at least 1");
  if (opts.max_new_tokens < 1) throw Error("needle: --answer-tokens must be at least 1");
  for (double d : opts.depths)
    if (!(d >= 0.0 && d <= 1.0))
      throw Error("needle: depth " + fmt_depth(d) + " is outside [0, 1]");
  const NeedleParts parts = make_needle_parts(tok, opts.chat);
  const int min_len = needle_min_length(tok, parts);
  int max_len = 0;
  for (int L : opts.lengths) {
    if (L < min_len)
      throw Error("needle: length " + std::to_string(L) + " is below the shortest prompt (" +
                  std::to_string(min_len) + " tokens: the fixed parts, a 7-digit needle and " +
                  std::to_string(kMinFiller) + " filler tokens)");
    if (int64_t(L) + opts.max_new_tokens > hp.n_ctx_train)
      throw Error(
          "needle: length " + std::to_string(L) + " + " + std::to_string(opts.max_new_tokens) +
          " answer tokens exceeds the model's context length " + std::to_string(hp.n_ctx_train));
    // The filler a prompt of length L can need at most (a needle takes at least one token).
    const size_t need = size_t(L) - parts.head.size() - parts.tail.size();
    if (filler.size() < need)
      throw Error("needle: the filler text has " + std::to_string(filler.size()) +
                  " tokens; length " + std::to_string(L) + " needs up to " + std::to_string(need) +
                  " (give a longer file with -f)");
    max_len = std::max(max_len, L);
  }

  // Rows: the plain f16 reference (no overrides, window or centring, as compare's), then every
  // entry that is not the reference itself.
  struct Row {
    NeedleRow out;
    KvCacheOptions cache;
  };
  std::vector<Row> rows;
  if (with_reference) {
    Row ref;
    ref.out.label = "f16 (reference)";
    ref.out.ctk = ref.out.ctv = "f16";
    ref.out.reference = true;
    ref.cache.seed = opts.compare.cache.seed;
    rows.push_back(ref);
  }
  validate_cache_options(opts.compare.cache, hp.n_layer);
  for (const auto& e : entries) {
    if (with_reference && is_reference_entry(e, opts.compare)) continue;
    Row r;
    r.cache = row_cache_options(e, opts.compare);
    validate_cache_options(r.cache, hp.n_layer);
    CompareRow cr;
    cr.ctk = e.ctk;
    cr.ctv = e.ctv;
    cr.preset = e.preset;
    cr.boundary_layers = r.cache.boundary_layers;
    cr.residual = r.cache.residual_window;
    cr.sinks = r.cache.sink_tokens;
    cr.key_centring = key_centring_name(r.cache.key_centring);  // @C=0|1 shows as in compare
    r.out.label = row_label(cr);
    r.out.ctk = e.ctk;
    r.out.ctv = e.ctv;
    if (e.plan) {  // as compare labels its plan rows
      r.out.label = "plan:" + e.plan_file;
      r.out.ctk = r.out.ctv = "(plan)";
    }
    r.out.reference = is_reference_entry(e, opts.compare);
    rows.push_back(r);
  }
  if (rows.empty())
    throw Error("needle: nothing to run (--no-reference and no other row in --types)");
  for (auto& r : rows) {
    r.cache.max_tokens = max_len + opts.max_new_tokens;
    r.cache.max_seqs = 1;
    check_memory(model, r.cache);  // every row before any work
  }

  // The prompts, shared by every row.
  struct Job {
    size_t li, di;
    int trial;
    std::string number;
    NeedlePrompt prompt;
  };
  std::vector<Job> jobs;
  for (size_t li = 0; li < opts.lengths.size(); ++li) {
    const int L = opts.lengths[li];
    const int need = L - int(parts.head.size() + parts.tail.size());
    for (int t = 0; t < opts.trials; ++t) {
      const size_t off = needle_filler_offset(tok, filler, opts.seed, L, t, need);
      for (size_t di = 0; di < opts.depths.size(); ++di) {
        // The number must occur once: a draw that the filler already contains is redrawn.
        Job j{li, di, t, {}, {}};
        for (int attempt = 0;; ++attempt) {
          j.number = needle_number(opts.seed, L, int(di), t, attempt);
          j.prompt = build_needle_prompt(tok, parts, filler, L, opts.depths[di], j.number, off);
          if (count_number(tok, j.prompt.tokens, j.number) == 1) break;
          if (attempt == 100)
            throw Error("needle: no number found that the filler at length " + std::to_string(L) +
                        " does not already contain");
        }
        jobs.push_back(std::move(j));
      }
    }
  }

  NeedleResult res;
  res.lengths = opts.lengths;
  res.depths = opts.depths;
  res.trials = opts.trials;
  res.chat = opts.chat;
  res.filler_tokens = filler.size();
  const size_t total = rows.size() * jobs.size();
  size_t done = 0;
  std::map<std::string, LogRecord> logged;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> log(nullptr, std::fclose);
  if (!opts.log_path.empty()) {
    logged = read_needle_log(opts.log_path);
    log.reset(std::fopen(opts.log_path.c_str(), "a"));
    if (!log) throw Error("needle: cannot open --log '" + opts.log_path + "' for appending");
  }
  const size_t nd = opts.depths.size();
  for (auto& row : rows) {
    NeedleRow& out = row.out;
    out.cells.resize(opts.lengths.size() * nd);
    out.bpv.assign(opts.lengths.size(), 0.0);
    out.kv_bytes.assign(opts.lengths.size(), 0);
    for (size_t li = 0; li < opts.lengths.size(); ++li)
      for (size_t di = 0; di < nd; ++di) {
        out.cells[li * nd + di].length = opts.lengths[li];
        out.cells[li * nd + di].depth = opts.depths[di];
      }
    const auto t_row = std::chrono::steady_clock::now();
    const double c_row = cpu_seconds();
    const std::string tag =
        "model=" + std::to_string(opts.log_model) + ";" + needle_cache_tag(row.cache);
    double logged_seconds = 0, logged_cpu = 0;
    // A finished prompt (run now or taken from the log) into the row: its cell, and the bytes
    // after prefill of the first prompt of each length.
    auto finish = [&](const Job& j, const NeedleTrial& tr, size_t kv_after_prefill) {
      if (j.trial == 0 && j.di == 0) {
        out.kv_bytes[j.li] = kv_after_prefill;
        out.bpv[j.li] =
            8.0 * double(kv_after_prefill) /
            (2.0 * hp.n_layer * hp.n_kv_head * hp.head_dim * double(j.prompt.tokens.size()));
      }
      out.prefill_tokens += long(j.prompt.tokens.size());
      NeedleCell& cell = out.cells[j.li * nd + j.di];
      cell.correct += tr.correct;
      cell.trials.push_back(tr);
      ++done;
    };
    for (const Job& j : jobs) {
      if (opts.progress)
        opts.progress(done, total,
                      out.label + " L=" + std::to_string(opts.lengths[j.li]) + " d=" +
                          fmt_depth(opts.depths[j.di]) + " #" + std::to_string(j.trial + 1));
      const std::string ph = prompt_hash(j.prompt.tokens);
      const std::string key =
          log_key(tag, opts.lengths[j.li], opts.depths[j.di], j.trial, j.number, ph);
      if (const auto it = logged.find(key); it != logged.end()) {  // finished by an earlier run
        const LogRecord& lr = it->second;
        NeedleTrial tr;
        tr.number = j.number;
        tr.answer = lr.answer;
        tr.correct = lr.correct;
        tr.needle_pos = lr.needle_pos;
        out.prefill_seconds += lr.prefill_seconds;
        logged_seconds += lr.seconds;
        logged_cpu += lr.cpu_seconds;
        ++out.from_log;
        finish(j, tr, lr.kv_bytes);
        continue;
      }
      const auto t_job = std::chrono::steady_clock::now();
      const double c_job = cpu_seconds();
      // A fresh cache per prompt: nothing a cache learns from its first append (key means,
      // outlier channels) carries over from one prompt to the next.
      KvCache cache(model.kv_shape(), row.cache);
      const int seq = cache.new_seq();
      std::vector<float> logits;
      const auto t0 = std::chrono::steady_clock::now();
      model.forward(cache, seq, j.prompt.tokens.data(), int(j.prompt.tokens.size()), nullptr,
                    &logits);
      const double prefill_job =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      out.prefill_seconds += prefill_job;
      const size_t kv_after_prefill = cache.kv_bytes();
      // Greedy answer; stops at an end-of-generation token or once a digit run has ended.
      std::vector<int32_t> answer;
      for (int s = 0; s < opts.max_new_tokens; ++s) {
        const int32_t id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (tok.is_eog(id)) break;
        answer.push_back(id);
        const std::string text = tok.decode(answer);
        const std::string run = first_digit_run(text);
        if (!run.empty() && text.find(run) + run.size() < text.size()) break;
        if (s + 1 < opts.max_new_tokens) model.forward(cache, seq, &id, 1, nullptr, &logits);
      }
      NeedleTrial tr;
      tr.number = j.number;
      std::string text = tok.decode(answer);
      if (const auto nl = text.find('\n', text.find_first_not_of(" \n")); nl != std::string::npos)
        text = text.substr(0, nl);
      const auto a = text.find_first_not_of(' ');
      tr.answer = a == std::string::npos ? "" : text.substr(a);
      tr.correct = first_digit_run(tr.answer) == j.number;
      tr.needle_pos = j.prompt.needle_pos;
      if (log) {
        const nlohmann::json rec = {
            {"row", out.label},
            {"tag", tag},
            {"length", opts.lengths[j.li]},
            {"depth", opts.depths[j.di]},
            {"trial", j.trial},
            {"number", j.number},
            {"prompt_hash", ph},
            {"answer", tr.answer},
            {"correct", tr.correct},
            {"needle_pos", tr.needle_pos},
            {"kv_bytes", kv_after_prefill},
            {"seconds",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t_job).count()},
            {"cpu_seconds", cpu_seconds() - c_job},
            {"prefill_seconds", prefill_job}};
        const std::string line = rec.dump() + "\n";
        if (std::fwrite(line.data(), 1, line.size(), log.get()) != line.size() ||
            std::fflush(log.get()) != 0)
          throw Error("needle: cannot write --log '" + opts.log_path + "'");
      }
      finish(j, tr, kv_after_prefill);
    }
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_row).count() +
                  logged_seconds;
    out.cpu_seconds = cpu_seconds() - c_row + logged_cpu;
    res.rows.push_back(out);
  }
  if (opts.progress) opts.progress(total, total, "done");
  return res;
}

void plot_needle(const NeedleResult& r, const std::string& png, const std::string& title) {
  require_gnuplot();
  auto q = [](std::string s) {  // a string inside gnuplot double quotes
    for (auto& c : s)
      if (c == '"' || c == '\\') c = '\'';
    return "\"" + s + "\"";
  };
  const size_t nd = r.depths.size(), nl = r.lengths.size();
  const size_t n_rows = r.rows.size() * nl;
  std::string s;
  s += "set terminal pngcairo size " + std::to_string(500 + 90 * int(nd)) + "," +
       std::to_string(160 + 34 * int(n_rows)) + " noenhanced font 'sans,10'\n";
  s += "set output " + q(png) + "\n";
  s += "set title " + q(title) + "\n";
  s += "set xlabel 'needle depth (fraction of the filler)'\n";
  s += "set cblabel 'retrieval accuracy (%)'\nset cbrange [0:100]\n";
  s += "set palette defined (0 '#b2182b', 50 '#fee08b', 100 '#1a9850')\n";
  s += "set xrange [-0.5:" + std::to_string(nd) + "-0.5]\n";
  s += "set yrange [" + std::to_string(n_rows) + "-0.5:-0.5]\n";  // first row on top
  s += "set xtics (";
  for (size_t di = 0; di < nd; ++di)
    s += (di ? ", " : "") + q(fmt_depth(r.depths[di])) + " " + std::to_string(di);
  s += ")\nset ytics (";
  size_t y = 0;
  for (const auto& row : r.rows)
    for (size_t li = 0; li < nl; ++li, ++y)
      s += (y ? ", " : "") + q(row.label + "  L=" + std::to_string(r.lengths[li])) + " " +
           std::to_string(y);
  s += ")\nset tics scale 0\nunset key\n$map << EOD\n";
  y = 0;
  for (const auto& row : r.rows)
    for (size_t li = 0; li < nl; ++li, ++y)
      for (size_t di = 0; di < nd; ++di) {
        const NeedleCell& c = row.cells[li * nd + di];
        char line[96];
        std::snprintf(line, sizeof line, "%zu %zu %.1f \"%d/%zu\"\n", di, y, 100.0 * c.accuracy(),
                      c.correct, c.trials.size());
        s += line;
      }
  s += "EOD\nplot $map using 1:2:3 with image, $map using 1:2:4 with labels font ',10'\n";
  FILE* g = popen("gnuplot 2>/dev/null", "w");
  if (!g) throw Error("cannot start gnuplot");
  const bool wrote = std::fwrite(s.data(), 1, s.size(), g) == s.size();
  const int st = pclose(g);
  if (!wrote || st != 0) throw Error("gnuplot failed writing '" + png + "'");
}

}  // namespace tq
