// turboquant — `tq compare` library code (see compare.h).
#include "eval/compare.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "codecs/kvquant.h"
#include "codecs/polarvq_file.h"
#include "codecs/presets.h"
#include "eval/perplexity.h"
#include "eval/plan.h"
#include "tq/codec.h"
#include "tq/error.h"

namespace tq {
namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\n");
  if (a == std::string::npos) return "";
  const auto b = s.find_last_not_of(" \t\n");
  return s.substr(a, b - a + 1);
}

void check_type(const std::string& t, const std::string& entry) {
  const auto types = list_types();
  if (std::find(types.begin(), types.end(), t) == types.end())
    throw Error("compare: unknown cache type '" + t + "' in '" + entry +
                "' (run `tq types` for the list)");
}

int parse_count(const std::string& v, const std::string& entry) {
  size_t used = 0;
  int n = -1;
  try {
    n = std::stoi(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || n < 0)
    throw Error("compare: bad count '" + v + "' in '" + entry + "' (expected e.g. @R=128)");
  return n;
}

std::string fmt_label(const CompareRow& r) {
  std::string s = r.preset.empty() ? (r.ctk == r.ctv ? r.ctk : r.ctk + "/" + r.ctv) : r.preset;
  std::string extra;
  auto add = [&](const std::string& x) { extra += (extra.empty() ? "" : ",") + x; };
  if (r.residual > 0) add("R=" + std::to_string(r.residual));
  if (r.sinks > 0) add("S=" + std::to_string(r.sinks));
  if (r.preset.empty() && r.boundary_layers > 0) add("B=" + std::to_string(r.boundary_layers));
  if (r.key_centring == "on") add("C=1");  // centring forced, not the types' default
  if (r.key_centring == "off") add("C=0");
  if (!extra.empty()) s += " (" + extra + ")";
  return s;
}

// A folder removed with its contents when the run ends, however it ends.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& parent) {
    std::string base = parent.empty() ? std::filesystem::temp_directory_path().string() : parent;
    std::string tmpl = base + "/tq-compare.XXXXXX";
    if (!mkdtemp(tmpl.data())) throw Error("compare: cannot create a folder in '" + base + "'");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

bool CompareEntry::is_f16() const {
  return type_traits(ctk).reference && type_traits(ctv).reference && preset.empty() && !residual &&
         !sinks && !center.value_or(false) && plan_file.empty();
}

bool is_reference_entry(const CompareEntry& e, const CompareOptions& opts) {
  return e.is_f16() && opts.cache.layer_type_k.empty() && opts.cache.layer_type_v.empty() &&
         opts.cache.boundary_layers == 0 && opts.cache.key_centring != KeyCentring::kOn;
}

std::string row_label(const CompareRow& r) { return fmt_label(r); }

std::vector<CompareEntry> parse_type_list(const std::string& list) {
  std::vector<CompareEntry> out;
  if (trim(list).empty()) throw Error("compare: --types is empty");
  std::string item;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string raw = trim(list.substr(start, comma - start));
    start = comma + 1;
    if (raw.empty()) throw Error("compare: empty entry in the type list '" + list + "'");
    CompareEntry e;
    e.spec = raw;
    if (raw.rfind("plan:", 0) == 0) {
      e.plan_file = trim(raw.substr(5));
      if (e.plan_file.empty())
        throw Error("compare: missing file in '" + raw + "' (expected plan:FILE)");
      e.plan = std::make_shared<const Plan>(read_plan(e.plan_file));
      e.ctk = e.ctv = "f16";
      out.push_back(e);
      if (comma == list.size()) break;
      continue;
    }
    // Per-row options after '@'.
    std::string body = raw;
    const auto at = raw.find('@');
    if (at != std::string::npos) {
      body = raw.substr(0, at);
      size_t p = at;
      while (p != std::string::npos) {
        const size_t next = raw.find('@', p + 1);
        const std::string opt =
            raw.substr(p + 1, next == std::string::npos ? std::string::npos : next - p - 1);
        if (opt.size() > 2 && (opt[0] == 'R' || opt[0] == 'r') && opt[1] == '=')
          e.residual = parse_count(opt.substr(2), raw);
        else if (opt.size() > 2 && (opt[0] == 'S' || opt[0] == 's') && opt[1] == '=')
          e.sinks = parse_count(opt.substr(2), raw);
        else if (opt == "C=0" || opt == "c=0" || opt == "C=1" || opt == "c=1")
          e.center = opt[2] == '1';
        else
          throw Error("compare: bad row option '@" + opt + "' in '" + raw +
                      "' (expected @R=N, @S=N, @C=0 or @C=1)");
        p = next;
      }
    }
    if (body.empty()) throw Error("compare: missing type in '" + raw + "'");
    const auto slash = body.find('/');
    if (slash != std::string::npos) {
      if (body.find('/', slash + 1) != std::string::npos)
        throw Error("compare: malformed pair '" + raw + "' (expected K/V, e.g. q8_0/turbo3)");
      e.ctk = trim(body.substr(0, slash));
      e.ctv = trim(body.substr(slash + 1));
      if (e.ctk.empty() || e.ctv.empty())
        throw Error("compare: malformed pair '" + raw + "' (expected K/V, e.g. q8_0/turbo3)");
      if (preset_info(e.ctk) || preset_info(e.ctv))
        throw Error("compare: a preset cannot be half of a pair in '" + raw + "'");
      check_type(e.ctk, raw);
      check_type(e.ctv, raw);
    } else if (const auto p = preset_info(body)) {
      e.preset = p->name;
      e.ctk = p->ctk;
      e.ctv = p->ctv;
      e.boundary_layers = p->boundary_layers;
      e.boundary_type = p->boundary_type;
    } else {
      check_type(body, raw);
      e.ctk = e.ctv = body;
    }
    out.push_back(e);
    if (comma == list.size()) break;
  }
  return out;
}

KvCacheOptions row_cache_options(const CompareEntry& e, const CompareOptions& opts) {
  if (e.plan) {
    KvCacheOptions c = plan_cache_options(*e.plan, opts.cache);
    c.codebooks = nullptr;
    return c;
  }
  KvCacheOptions c = opts.cache;
  c.type_k = e.ctk;
  c.type_v = e.ctv;
  if (e.boundary_layers >= 0) {
    c.boundary_layers = e.boundary_layers;
    c.boundary_type_k = c.boundary_type_v = e.boundary_type;
  }
  const TypeTraits &tk = type_traits(e.ctk), &tv = type_traits(e.ctv);
  if (e.center) c.key_centring = *e.center ? KeyCentring::kOn : KeyCentring::kOff;
  if (e.residual)
    c.residual_window = *e.residual;
  else if (!opts.residual_given && std::max(tk.default_window, tv.default_window) > 0)
    c.residual_window = std::max(tk.default_window, tv.default_window);
  if (e.sinks)
    c.sink_tokens = *e.sinks;
  else if (!opts.sinks_given && std::max(tk.default_sinks, tv.default_sinks) > 0)
    c.sink_tokens = std::max(tk.default_sinks, tv.default_sinks);
  if (!opts.codebook_set.empty()) {
    std::string preset;  // the preset of the row's codebook file ("kvquant" for kvquant types)
    std::vector<std::string> types = {c.type_k, c.type_v};
    if (c.boundary_layers > 0) types.insert(types.end(), {c.boundary_type_k, c.boundary_type_v});
    for (const auto& t : types) {
      const std::string p = codebook_preset_of(t);
      if (p.empty()) continue;
      if (!preset.empty() && preset != p)
        throw Error("compare: row '" + e.ctk + "/" + e.ctv + "' needs two codebook files ('" +
                    preset + "' and '" + p + "'; one file per row)");
      preset = p;
    }
    c.codebooks = nullptr;
    if (!preset.empty()) {
      for (const auto& cb : opts.codebook_set)
        if (cb->params.preset == preset) c.codebooks = cb;
      if (!c.codebooks)
        throw Error("compare: none of the --codebooks files is for " + preset_label(preset));
    }
  }
  return c;
}

CompareResult run_compare(const LlamaModel& model, const std::vector<int32_t>& tokens, bool add_bos,
                          int32_t bos, const std::vector<CompareEntry>& entries,
                          const CompareOptions& opts) {
  const LlamaHparams& hp = model.hparams();
  // Every row's options are checked before any work.
  validate_cache_options(opts.cache, hp.n_layer);
  for (const auto& e : entries) validate_cache_options(row_cache_options(e, opts), hp.n_layer);
  if (opts.n_ctx > hp.n_ctx_train)
    throw Error("compare: context " + std::to_string(opts.n_ctx) + " exceeds the model's " +
                "context length " + std::to_string(hp.n_ctx_train));
  const int max_chunks = opts.n_ctx > 0 ? int(tokens.size() / size_t(opts.n_ctx)) : 0;
  if (opts.n_chunks == 0 || opts.n_chunks < -1)
    throw Error("compare: --chunks must be at least 1 (or -1: all the text holds)");
  if (opts.n_chunks > std::max(max_chunks, 1))
    throw Error("compare: --chunks " + std::to_string(opts.n_chunks) + ": the text holds " +
                std::to_string(max_chunks) + " chunks of " + std::to_string(opts.n_ctx) +
                " tokens");
  const int n_chunks = opts.n_chunks < 0 ? max_chunks : opts.n_chunks;
  // The decode steps run after a CTX-token prefill, so they must fit in the model's context
  // (they were clamped silently).
  if (opts.decode_tokens < 0 || opts.decode_tokens > hp.n_ctx_train - opts.n_ctx)
    throw Error("compare: --decode " + std::to_string(opts.decode_tokens) + " must be in [0, " +
                std::to_string(std::max(0, hp.n_ctx_train - opts.n_ctx)) +
                "] (the model's context length " + std::to_string(hp.n_ctx_train) + " - -c " +
                std::to_string(opts.n_ctx) + ")");
  const int n_decode = opts.decode_tokens;

  TempDir tmp(opts.work_dir);
  const std::string base = (tmp.path / "kld-base.bin").string();

  CompareResult res;
  res.n_ctx = opts.n_ctx;
  res.decode_tokens = n_decode;
  size_t done = 0;
  const size_t total = size_t(entries.size() + 1) * size_t(std::max(n_chunks, 1));

  // One row: run_perplexity against the base (the reference writes it), plus n_decode greedy
  // steps after the first chunk through forward(..., AttnPath::kAuto), which takes the SIMD
  // decode driver whenever the stored segments allow it.
  auto run_row = [&](const KvCacheOptions& cache, CompareRow& row) {
    PerplexityOptions po;
    po.n_ctx = opts.n_ctx;
    po.n_chunks = n_chunks;
    po.cache = cache;
    po.kld_base = base;
    po.progress = false;
    po.model_fingerprint = opts.model_fingerprint;
    po.extra_tokens = n_decode;
    po.after_first_chunk = [&](KvCache& kv, int seq, const std::vector<float>& hidden) {
      if (n_decode <= 0) return;
      std::vector<float> logits(hp.n_vocab);
      model.logits(&hidden[size_t(opts.n_ctx - 1) * hp.n_embd], 1, logits.data());
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n_decode; ++i) {
        const int32_t id = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
        model.forward(kv, seq, &id, 1, nullptr, &logits, AttnPath::kAuto);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      row.decode_tps = double(n_decode) / s;
    };
    const std::string label = row.label;
    po.on_chunk = [&](int) {
      ++done;
      if (opts.progress) opts.progress(done, total, label);
    };
    if (opts.progress) opts.progress(done, total, label);
    const PerplexityResult r = run_perplexity(model, tokens, add_bos, bos, po);
    row.ppl = r.ppl;
    row.ppl_stderr = r.ppl_stderr;
    row.kld_mean = r.kld_mean;
    row.kld_p99 = r.kld_p99;
    row.top1 = r.has_kld ? r.top1 : 1.0;
    row.bpv_k = r.bpv_k;
    row.bpv_v = r.bpv_v;
    row.kv_bytes = r.kv_bytes;
    row.key_centring = key_centring_name(cache.key_centring);
    row.centred_layers = r.centred_layers;
    row.key_means = cache.key_means_per_page ? "page" : "first";
    row.key_scales = cache.key_scales;
    row.bpv = 8.0 * double(r.kv_bytes) /
              (2.0 * hp.n_layer * hp.n_kv_head * hp.head_dim * double(opts.n_ctx));
    row.kv_mib_8192 = double(r.kv_bytes) / opts.n_ctx * 8192.0 / (1024.0 * 1024.0);
    row.prefill_tps = r.prefill_tps;
    row.seconds = r.seconds;
    res.chunks = r.chunks;
    res.tokens_scored = r.tokens;
    res.tokens_run = long(r.chunks) * opts.n_ctx;
    return r;
  };

  // The reference: plain f16 everywhere (no overrides, boundary, window or centring), so that
  // it is the same reference whatever flags the rows use.
  CompareRow ref;
  ref.reference = true;
  ref.ctk = ref.ctv = "f16";
  ref.label = "f16 (reference)";
  KvCacheOptions ref_cache;
  ref_cache.seed = opts.cache.seed;
  run_row(ref_cache, ref);
  ref.compression = 1.0;
  res.rows.push_back(ref);

  for (const auto& e : entries) {
    if (is_reference_entry(e, opts)) continue;  // the reference row is this row
    CompareRow row;
    const KvCacheOptions c = row_cache_options(e, opts);
    row.ctk = e.ctk;
    row.ctv = e.ctv;
    row.preset = e.preset;
    row.boundary_layers = c.boundary_layers;
    row.residual = c.residual_window;
    row.sinks = c.sink_tokens;
    row.key_centring = key_centring_name(c.key_centring);
    row.label = fmt_label(row);
    if (e.plan) {
      row.ctk = row.ctv = "(plan)";
      row.label = "plan:" + e.plan_file;
    }
    run_row(c, row);
    row.dppl_pct = 100.0 * (row.ppl / ref.ppl - 1.0);
    row.compression = double(ref.kv_bytes) / double(row.kv_bytes);
    res.rows.push_back(row);
  }
  if (opts.progress) opts.progress(total, total, "done");
  return res;
}

std::vector<size_t> pareto_frontier(const std::vector<CompareRow>& rows) {
  std::vector<size_t> f;
  for (size_t i = 0; i < rows.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < rows.size() && !dominated; ++j) {
      if (j == i) continue;
      const bool le = rows[j].bpv <= rows[i].bpv && rows[j].kld_mean <= rows[i].kld_mean;
      const bool lt = rows[j].bpv < rows[i].bpv || rows[j].kld_mean < rows[i].kld_mean;
      dominated = le && lt;
    }
    if (!dominated) f.push_back(i);
  }
  std::sort(f.begin(), f.end(), [&](size_t a, size_t b) { return rows[a].bpv < rows[b].bpv; });
  return f;
}

void require_gnuplot() {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    throw Error(
        "--plot needs gnuplot, which was not found on PATH (Debian: apt-get install "
        "gnuplot-nox, or run scripts/setup.sh)");
}

void plot_compare(const CompareResult& r, const std::string& png, const std::string& title) {
  require_gnuplot();
  TempDir tmp("");
  const auto data = (tmp.path / "rows.dat").string(), front = (tmp.path / "front.dat").string();
  const auto script = (tmp.path / "plot.gp").string();
  const auto frontier = pareto_frontier(r.rows);
  auto q = [](std::string s) {  // a label inside gnuplot double quotes
    for (auto& c : s)
      if (c == '"') c = '\'';
    return "\"" + s + "\"";
  };
  // Frontier points (in ascending bpv, joined by a line) carry their labels in red; the other
  // points are grey with grey labels.
  const auto others = (tmp.path / "others.dat").string();
  int skipped = 0;
  {
    std::ofstream d(data), o(others), fr(front);
    for (size_t i = 0; i < r.rows.size(); ++i) {
      const auto& row = r.rows[i];
      if (!(row.kld_mean > 0)) {
        ++skipped;
        continue;
      }
      d << row.bpv << " " << row.kld_mean << " " << q(row.label) << "\n";
      if (std::find(frontier.begin(), frontier.end(), i) == frontier.end())
        o << row.bpv << " " << row.kld_mean << " " << q(row.label) << "\n";
    }
    for (size_t i : frontier)
      if (r.rows[i].kld_mean > 0)
        fr << r.rows[i].bpv << " " << r.rows[i].kld_mean << " " << q(r.rows[i].label) << "\n";
  }
  std::ofstream g(script);
  g << "set terminal pngcairo size 1400,900 noenhanced font 'sans,10'\n"
    << "set output " << q(png) << "\n"
    << "set title " << q(title + (skipped ? " (f16 reference, KLD 0, not drawn)" : "")) << "\n"
    << "set xlabel 'bits per value (all-in, measured kv bytes)'\n"
    << "set ylabel 'mean KL divergence vs f16 cache (log scale)'\n"
    << "set logscale y\nset format y '%.0e'\nset grid\nset key top right\n"
    << "set offsets 0, 1.2, 0, 0\n"
    << "set datafile separator whitespace\n"
    << "plot " << q(data) << " using 1:2 with points pt 7 ps 1.2 lc rgb '#7f7f7f' "
    << "title 'cache types', \\\n"
    << "     " << q(others) << " using 1:2:3 with labels offset 0.6,0.6 left font ',8' "
    << "tc rgb '#555555' notitle, \\\n"
    << "     " << q(front) << " using 1:2 with linespoints lw 2 pt 7 ps 1.6 lc rgb '#d62728' "
    << "title 'Pareto frontier', \\\n"
    << "     " << q(front) << " using 1:2:3 with labels offset 0.6,-0.9 left font ',9' "
    << "tc rgb '#d62728' notitle\n";
  g.close();
  const std::string cmd = "gnuplot " + script + " 2>" + (tmp.path / "err.txt").string();
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream e(tmp.path / "err.txt");
    std::string line, last;
    while (std::getline(e, line))
      if (!trim(line).empty()) last = trim(line);
    throw Error("gnuplot failed writing '" + png + "': " + last);
  }
}

}  // namespace tq
