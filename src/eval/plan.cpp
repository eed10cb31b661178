// turboquant — plans (see plan.h).
#include "eval/plan.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "eval/perplexity.h"
#include "model/gguf.h"
#include "model/memcheck.h"
#include "tq/codec.h"
#include "tq/error.h"

namespace tq {
namespace {

constexpr const char* kFormat = "turboquant-plan";

std::string hex64(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// The bits per value a K part of type `t` adds for key centring at n_ctx tokens (0 when its keys
// are not centred): the f32 mean μ, and with per-page means each page's f16 offset δ that the
// cache stores, found by replaying its encoding of the prompt appended in the model's batches
// (a page's δ is stored when its first encoded run holds at least min(64, page) keys;
// KvCache::append_part, DESIGN.md §3.1).
double key_centring_bits(const std::string& t, const KvCacheOptions& cache, int n_ctx, int s_end,
                         int bt) {
  const bool centred =
      cache.key_centring == KeyCentring::kOn ||
      (cache.key_centring == KeyCentring::kTypeDefault && type_traits(t).center_keys);
  if (!centred || n_ctx <= 0) return 0.0;
  double bits = 32.0;  // per channel: one f32 mean over the n_ctx tokens
  if (cache.key_means_per_page) {
    const int PT = cache.page_tokens;
    int n = 0, c = s_end, next_page = 0, stored = 0;
    while (n < n_ctx) {
      n += std::min(LlamaModel::max_batch(), n_ctx - n);
      const int avail = std::max(0, n - cache.residual_window - s_end);
      const int c_new = std::max(c, s_end + avail / bt * bt);
      for (int pos = c; pos < c_new;) {
        const int pi = pos / PT;
        const int run = std::min(c_new, (pi + 1) * PT) - pos;
        if (pi >= next_page) {
          next_page = pi + 1;
          if (run >= std::min(64, PT)) ++stored;
        }
        pos += run;
      }
      c = c_new;
    }
    bits += 16.0 * stored;  // per channel: one f16 δ per stored page
  }
  // Key scales: d f16 when the first append (the model's first batch) holds enough keys.
  if (cache.key_scales && type_takes_key_scales(type_traits(t)) &&
      std::min(LlamaModel::max_batch(), n_ctx) >= kKeyScaleMinTokens)
    bits += 16.0;
  return bits / double(n_ctx);
}

}  // namespace

uint64_t plan_model_fingerprint(const GgufFile& f) {
  std::vector<std::string> names;
  for (const auto& t : f.tensors()) names.push_back(t.name);
  return f.fingerprint(names);
}

std::vector<std::string> default_plan_candidates() {
  return {"turbo2", "turbo2.5", "turbo3", "turbo3.5", "turbo4", "q8_0", "f16"};
}

std::vector<int> solve_knapsack(const std::vector<std::vector<double>>& cost,
                                const std::vector<std::vector<double>>& bits, double budget,
                                double grid) {
  TQ_ASSERT(cost.size() == bits.size() && grid > 0);
  const size_t n = cost.size();
  if (n == 0) return {};
  // Integer weights, rounded up: a solution on the grid never exceeds the real budget.
  std::vector<std::vector<long>> w(n);
  long min_total = 0, max_total = 0;
  for (size_t i = 0; i < n; ++i) {
    TQ_ASSERT(!cost[i].empty() && cost[i].size() == bits[i].size());
    long mn = std::numeric_limits<long>::max();
    for (double b : bits[i]) {
      w[i].push_back(long(std::ceil(b / grid - 1e-9)));
      mn = std::min(mn, w[i].back());
    }
    min_total += mn;
    max_total += *std::max_element(w[i].begin(), w[i].end());
  }
  // Past max_total every choice fits: no need for a longer table.
  const long cap = std::min(max_total, long(std::floor(budget / grid + 1e-9)));
  if (long(std::floor(budget / grid + 1e-9)) < min_total)
    throw Error("plan: budget " + std::to_string(budget) + " bits is below the least the " +
                "candidates reach (" + std::to_string(double(min_total) * grid) + ")");
  // best[c] = least cost of items 0..i with total weight exactly... at most c: DP over
  // "weight used" with +inf for unreachable; choice[i][c] the option taken for item i.
  const double inf = std::numeric_limits<double>::infinity();
  const size_t W = size_t(cap) + 1;
  std::vector<double> best(W, inf), next(W);
  best[0] = 0;
  std::vector<std::vector<int8_t>> choice(n, std::vector<int8_t>(W, -1));
  TQ_ASSERT(cost[0].size() < 128);
  for (size_t i = 0; i < n; ++i) {
    std::fill(next.begin(), next.end(), inf);
    for (size_t j = 0; j < cost[i].size(); ++j) {
      const long wj = w[i][j];
      if (wj > cap) continue;
      const double cj = cost[i][j];
      for (size_t c = size_t(wj); c < W; ++c) {
        const double v = best[c - size_t(wj)] + cj;
        if (v < next[c]) {
          next[c] = v;
          choice[i][c] = int8_t(j);
        }
      }
    }
    best.swap(next);
  }
  size_t c_best = 0;
  for (size_t c = 1; c < W; ++c)
    if (best[c] < best[c_best]) c_best = c;
  TQ_ASSERT(best[c_best] < inf);
  std::vector<int> out(n);
  size_t c = c_best;
  for (size_t i = n; i-- > 0;) {
    const int j = choice[i][c];
    TQ_ASSERT(j >= 0);
    out[i] = j;
    c -= size_t(w[i][size_t(j)]);
  }
  return out;
}

void candidate_bits(const std::vector<std::string>& candidates, const KvShape& shape,
                    const KvCacheOptions& cache, int n_ctx, std::vector<double>& bits_k,
                    std::vector<double>& bits_v) {
  if (candidates.size() < 2)
    throw Error("plan: give at least two candidate types (e.g. --candidates turbo3,f16)");
  if (candidates.size() > 64) throw Error("plan: at most 64 candidate types");
  const auto types = list_types();
  std::set<std::string> seen;
  bits_k.clear();
  bits_v.clear();
  for (const auto& t : candidates) {
    if (std::find(types.begin(), types.end(), t) == types.end())
      throw Error("plan: unknown candidate type '" + t + "' (run `tq types` for the list)");
    if (!seen.insert(t).second) throw Error("plan: candidate '" + t + "' is listed twice");
    if (type_traits(t).calibration != CalibrationKind::kNone)
      throw Error("plan: candidate '" + t + "' needs a codebook file, which plans do not take");
    // All-in bits of one part at n_ctx tokens: the codec's bytes per block, the f16 sinks
    // (rounded up to the codec's block, as the cache does) and residual window, the tokens of an
    // incomplete block (f16 pending), and, when this type's keys are centred (key_centring
    // resolved against the type, as KvCache::keys_centred does), the f32 key mean and the f16
    // per-page offsets δ the cache stores (DESIGN.md §3.1).
    const auto codec = make_codec(t, shape.head_dim);
    const int bt = codec->block_tokens();
    const bool plain16 = type_traits(t).reference;
    const double b = codec->bpv();
    const int s_end = cache.sink_tokens > 0 ? (cache.sink_tokens + bt - 1) / bt * bt : 0;
    const int sink = std::min(n_ctx, s_end);
    const int rest = std::max(0, n_ctx - sink - cache.residual_window);
    const int coded = plain16 ? n_ctx - sink : rest / bt * bt;
    const double body = (double(coded) * b + double(n_ctx - coded) * 16.0) / double(n_ctx);
    bits_v.push_back(body);
    bits_k.push_back(body + key_centring_bits(t, cache, n_ctx, s_end, bt));
  }
}

Plan measure_plan(const LlamaModel& model, const std::vector<int32_t>& tokens, bool add_bos,
                  int32_t bos, const PlanMeasureOptions& opts) {
  const LlamaHparams& hp = model.hparams();
  const int n_ctx = opts.n_ctx;
  if (n_ctx < 4) throw Error("plan: -c must be at least 4");
  if (n_ctx > hp.n_ctx_train)
    throw Error("plan: context " + std::to_string(n_ctx) + " exceeds the model's context " +
                "length " + std::to_string(hp.n_ctx_train));
  const int max_chunks = int(tokens.size() / size_t(n_ctx));
  if (max_chunks < 1)
    throw Error("plan: the calibration text has " + std::to_string(tokens.size()) +
                " tokens, fewer than one chunk of " + std::to_string(n_ctx));
  if (opts.n_chunks < 1 || opts.n_chunks > max_chunks)
    throw Error("plan: --chunks " + std::to_string(opts.n_chunks) + " must be in [1, " +
                std::to_string(max_chunks) + "] (chunks of " + std::to_string(n_ctx) +
                " tokens the text holds)");
  validate_cache_options(opts.cache, hp.n_layer);

  Plan plan;
  plan.n_layer = hp.n_layer;
  plan.n_kv_head = hp.n_kv_head;
  plan.head_dim = hp.head_dim;
  plan.ctx = n_ctx;
  plan.chunks = opts.n_chunks;
  plan.key_centring = opts.cache.key_centring;
  plan.key_means_per_page = opts.cache.key_means_per_page;
  plan.key_scales = opts.cache.key_scales;
  plan.sinks = opts.cache.sink_tokens;
  plan.residual = opts.cache.residual_window;
  plan.seed = opts.cache.seed;
  plan.candidates = opts.candidates;
  const KvShape shape = model.kv_shape();
  candidate_bits(plan.candidates, shape, opts.cache, n_ctx, plan.bits_k, plan.bits_v);

  const int L = hp.n_layer, V = hp.n_vocab, E = hp.n_embd, nc = int(plan.candidates.size());
  const int first = n_ctx / 2, n_scored = n_ctx - 1 - first;
  std::vector<int> measured;  // candidate indices that are run (the f16 reference is KLD 0)
  for (int j = 0; j < nc; ++j)
    if (!type_traits(plan.candidates[size_t(j)]).reference) measured.push_back(j);
  // Sums of per-token KLD, [layer][candidate].
  std::vector<std::vector<double>> sum_k(L, std::vector<double>(nc, 0.0)), sum_v = sum_k;

  KvCacheOptions base = opts.cache;
  base.type_k = base.type_v = "f16";
  base.layer_type_k.clear();
  base.layer_type_v.clear();
  base.boundary_layers = 0;
  base.max_tokens = n_ctx;
  base.max_seqs = 1;
  base.codebooks = nullptr;
  base.on_append = nullptr;
  check_memory(model, base);

  const size_t total = size_t(opts.n_chunks) * size_t(L) * 2 * measured.size();
  size_t done = 0;
  const int kRows = 32;
  std::vector<float> ref_lp(size_t(n_scored) * V), logits(size_t(kRows) * V);
  std::vector<float> lp(size_t(kRows) * V);
  for (int c = 0; c < opts.n_chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + size_t(c) * n_ctx,
                               tokens.begin() + size_t(c + 1) * n_ctx);
    if (add_bos) chunk[0] = bos;
    // The reference: plain f16 cache (no centring, sinks or window), as `tq compare`'s.
    std::vector<std::vector<float>> taps;
    {
      KvCacheOptions ro;
      ro.seed = base.seed;
      ro.max_tokens = n_ctx;
      ro.max_seqs = 1;
      KvCache cache(shape, ro);
      const int seq = cache.new_seq();
      std::vector<float> hidden;
      model.forward_taps(cache, seq, chunk.data(), n_ctx, &hidden, &taps);
      for (int r0 = first; r0 < n_ctx - 1; r0 += kRows) {
        const int nr = std::min(kRows, n_ctx - 1 - r0);
        model.logits(&hidden[size_t(r0) * E], nr, logits.data());
#pragma omp parallel for schedule(static)
        for (int r = 0; r < nr; ++r)
          log_softmax(&logits[size_t(r) * V], V, &ref_lp[size_t(r0 - first + r) * V]);
      }
    }
    for (int l = 0; l < L; ++l)
      for (int kv = 0; kv < 2; ++kv)
        for (int j : measured) {
          const std::string& t = plan.candidates[size_t(j)];
          if (opts.progress)
            opts.progress(done, total,
                          "chunk " + std::to_string(c + 1) + " layer " + std::to_string(l) +
                              (kv == 0 ? " K " : " V ") + t);
          KvCacheOptions co = base;
          (kv == 0 ? co.layer_type_k : co.layer_type_v)[l] = t;
          KvCache cache(shape, co);
          const int seq = cache.new_seq();
          std::vector<float> hidden;
          model.forward_from(cache, seq, l, taps[size_t(l)].data(), n_ctx, &hidden);
          double s = 0;
          for (int r0 = first; r0 < n_ctx - 1; r0 += kRows) {
            const int nr = std::min(kRows, n_ctx - 1 - r0);
            model.logits(&hidden[size_t(r0) * E], nr, logits.data());
            std::vector<double> kl(nr);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < nr; ++r) {
              float* q = &lp[size_t(r) * V];
              log_softmax(&logits[size_t(r) * V], V, q);
              const float* p = &ref_lp[size_t(r0 - first + r) * V];
              double acc = 0;
              for (int i = 0; i < V; ++i) acc += std::exp(double(p[i])) * double(p[i] - q[i]);
              kl[r] = std::max(0.0, acc);
            }
            for (double x : kl) s += x;
          }
          (kv == 0 ? sum_k : sum_v)[size_t(l)][size_t(j)] += s;
          ++done;
        }
  }
  if (opts.progress) opts.progress(total, total, "done");
  plan.tokens_scored = long(opts.n_chunks) * n_scored;
  plan.kld_k.assign(L, std::vector<double>(nc, 0.0));
  plan.kld_v = plan.kld_k;
  for (int l = 0; l < L; ++l)
    for (int j = 0; j < nc; ++j) {
      plan.kld_k[l][j] = sum_k[l][j] / double(plan.tokens_scored);
      plan.kld_v[l][j] = sum_v[l][j] / double(plan.tokens_scored);
    }
  return plan;
}

void solve_plan(Plan& plan, double budget_bpv) {
  if (!(budget_bpv > 0) || !std::isfinite(budget_bpv))
    throw Error("plan: --bpv must be a positive number");
  const int L = plan.n_layer;
  const size_t parts = size_t(2 * L);
  std::vector<std::vector<double>> cost(parts), bits(parts);
  double min_bits = 0;
  for (int l = 0; l < L; ++l) {
    cost[size_t(2 * l)] = plan.kld_k[size_t(l)];
    cost[size_t(2 * l + 1)] = plan.kld_v[size_t(l)];
    bits[size_t(2 * l)] = plan.bits_k;
    bits[size_t(2 * l + 1)] = plan.bits_v;
    min_bits += *std::min_element(plan.bits_k.begin(), plan.bits_k.end()) +
                *std::min_element(plan.bits_v.begin(), plan.bits_v.end());
  }
  const double grid = 1.0 / 1024;
  // The least reachable budget on the solver's grid (bits rounded up per part).
  double min_grid = 0;
  for (size_t i = 0; i < parts; ++i) {
    double mn = std::numeric_limits<double>::infinity();
    for (double b : bits[i]) mn = std::min(mn, std::ceil(b / grid - 1e-9) * grid);
    min_grid += mn;
  }
  if (budget_bpv * double(parts) + 1e-9 < min_grid) {
    char m[256];
    std::snprintf(m, sizeof m,
                  "plan: budget %.4g bpv is below the least the candidates reach (%.4f bpv, "
                  "every part at its cheapest type)",
                  budget_bpv, min_grid / double(parts));
    throw Error(m);
  }
  (void)min_bits;
  const auto choice = solve_knapsack(cost, bits, budget_bpv * double(parts), grid);
  plan.budget_bpv = budget_bpv;
  plan.layer_k.assign(L, "");
  plan.layer_v.assign(L, "");
  double b = 0, k = 0;
  for (int l = 0; l < L; ++l) {
    const int jk = choice[size_t(2 * l)], jv = choice[size_t(2 * l + 1)];
    plan.layer_k[l] = plan.candidates[size_t(jk)];
    plan.layer_v[l] = plan.candidates[size_t(jv)];
    b += plan.bits_k[size_t(jk)] + plan.bits_v[size_t(jv)];
    k += plan.kld_k[size_t(l)][size_t(jk)] + plan.kld_v[size_t(l)][size_t(jv)];
  }
  plan.achieved_bpv = b / double(parts);
  plan.predicted_kld = k;
  plan.solver =
      "exact multiple-choice knapsack (dynamic programming over a 1/1024-bit grid, bits rounded "
      "up) minimising the sum of per-part KLDs";
  plan.verified_kld.reset();
  plan.verified_bpv.reset();
}

KvCacheOptions plan_cache_options(const Plan& plan, const KvCacheOptions& base) {
  KvCacheOptions o = base;
  o.type_k = o.type_v = "f16";
  o.boundary_layers = 0;
  o.layer_type_k.clear();
  o.layer_type_v.clear();
  for (int l = 0; l < plan.n_layer; ++l) {
    o.layer_type_k[l] = plan.layer_k[size_t(l)];
    o.layer_type_v[l] = plan.layer_v[size_t(l)];
  }
  o.key_centring = plan.key_centring;
  o.key_means_per_page = plan.key_means_per_page;
  o.key_scales = plan.key_scales;
  o.sink_tokens = plan.sinks;
  o.residual_window = plan.residual;
  o.seed = plan.seed;
  return o;
}

std::string format_plan(const Plan& p) {
  using nlohmann::json;
  json kld = json::array();
  for (int l = 0; l < p.n_layer; ++l) {
    json k = json::object(), v = json::object();
    for (size_t j = 0; j < p.candidates.size(); ++j) {
      k[p.candidates[j]] = p.kld_k[size_t(l)][j];
      v[p.candidates[j]] = p.kld_v[size_t(l)][j];
    }
    kld.push_back({{"layer", l}, {"k", k}, {"v", v}});
  }
  json bits = json::object();
  for (size_t j = 0; j < p.candidates.size(); ++j)
    bits[p.candidates[j]] = {{"k", p.bits_k[j]}, {"v", p.bits_v[j]}};
  json layers = json::array();
  for (int l = 0; l < p.n_layer; ++l)
    layers.push_back({{"layer", l}, {"k", p.layer_k[size_t(l)]}, {"v", p.layer_v[size_t(l)]}});
  json j = {
      {"format", kFormat},
      {"version", Plan::kVersion},
      {"model",
       {{"fingerprint", hex64(p.model_fingerprint)},
        {"file", p.model_file},
        {"n_layer", p.n_layer},
        {"n_kv_head", p.n_kv_head},
        {"head_dim", p.head_dim}}},
      {"calibration",
       {{"file", p.calib_file},
        {"xxh64", hex64(p.calib_hash)},
        {"ctx", p.ctx},
        {"chunks", p.chunks},
        {"tokens_scored", p.tokens_scored}}},
      {"cache_options",
       {{"key_centring", key_centring_name(p.key_centring)},
        {"key_means", p.key_means_per_page ? "page" : "first"},
        {"key_scales", p.key_scales},
        {"sinks", p.sinks},
        {"residual", p.residual},
        {"seed", p.seed}}},
      {"candidates", p.candidates},
      {"bits_per_value", bits},
      {"measured_kld", kld},
      {"budget_bpv", p.budget_bpv},
      {"achieved_bpv", p.achieved_bpv},
      {"predicted_kld", p.predicted_kld},
      {"solver", p.solver},
      {"verified", p.verified_kld ? json{{"kld_mean", *p.verified_kld}, {"bpv", *p.verified_bpv}}
                                  : json(nullptr)},
      {"layers", layers}};
  return j.dump(1) + "\n";
}

void write_plan(const std::string& path, const Plan& p) {
  const std::string text = format_plan(p);
  const std::string tmp = path + ".part";
  {
    std::ofstream o(tmp, std::ios::trunc);
    if (!o) throw Error("cannot write plan file '" + tmp + "'");
    o << text;
    o.close();
    if (!o) throw Error("writing plan file '" + tmp + "' failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("cannot write plan file '" + path + "': " + ec.message());
}

Plan read_plan(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read plan file '" + path + "'");
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  if (in.bad()) throw Error("cannot read plan file '" + path + "'");
  return parse_plan(text, path);
}

Plan parse_plan(const std::string& text, const std::string& path) {
  using nlohmann::json;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception&) {
    throw Error("plan file '" + path + "' is damaged or truncated (not valid JSON)");
  }
  const std::string where = "plan file '" + path + "'";
  auto bad = [&](const std::string& what) { return Error(where + ": " + what); };
  if (!j.is_object() || !j.contains("format") || j["format"] != kFormat)
    throw bad("not a turboquant plan (no \"format\": \"" + std::string(kFormat) + "\")");
  if (!j.contains("version") || !j["version"].is_number_integer()) throw bad("no version");
  const long long version = j["version"].get<long long>();
  if (version < 1 || version > Plan::kVersion)
    throw bad("version " + j["version"].dump() + ", this tool reads versions 1 to " +
              std::to_string(Plan::kVersion));
  Plan p;
  try {
    // An integer field in [lo, hi] (a float or a huge value is refused, not cast).
    auto integer = [&](const json& v, long long lo, long long hi, const char* what) {
      if (!v.is_number_integer()) throw bad(std::string(what) + " is not an integer");
      long long x = 0;
      if (v.is_number_unsigned()) {
        const auto u = v.get<unsigned long long>();
        if (u > static_cast<unsigned long long>(hi)) throw bad(std::string("bad ") + what);
        x = static_cast<long long>(u);
      } else {
        x = v.get<long long>();
      }
      if (x < lo || x > hi) throw bad(std::string("bad ") + what);
      return x;
    };
    auto finite = [&](const json& v, const char* what) {
      const double x = v.get<double>();
      if (!std::isfinite(x)) throw bad(std::string("bad ") + what);
      return x;
    };
    auto hex = [&](const json& v, const char* what) {
      const std::string s = v.get<std::string>();
      size_t used = 0;
      uint64_t x = 0;
      try {
        x = std::stoull(s, &used, 16);
      } catch (const std::exception&) {
        used = 0;
      }
      if (s.empty() || used != s.size()) throw bad(std::string("bad ") + what + " '" + s + "'");
      return x;
    };
    const json& m = j.at("model");
    p.model_fingerprint = hex(m.at("fingerprint"), "model fingerprint");
    p.model_file = m.at("file").get<std::string>();
    p.n_layer = int(integer(m.at("n_layer"), 1, 4096, "n_layer"));
    p.n_kv_head = int(integer(m.at("n_kv_head"), 1, 1 << 16, "n_kv_head"));
    p.head_dim = int(integer(m.at("head_dim"), 1, 1 << 16, "head_dim"));
    const json& c = j.at("calibration");
    p.calib_file = c.at("file").get<std::string>();
    p.calib_hash = hex(c.at("xxh64"), "calibration hash");
    p.ctx = int(integer(c.at("ctx"), 0, 1 << 30, "ctx"));
    p.chunks = int(integer(c.at("chunks"), 0, 1 << 30, "chunks"));
    p.tokens_scored = long(integer(c.at("tokens_scored"), 0, 1ll << 50, "tokens_scored"));
    const json& o = j.at("cache_options");
    if (version == 1) {  // before centring by default: on (first mean only) or off
      p.key_centring = o.at("center_keys").get<bool>() ? KeyCentring::kOn : KeyCentring::kOff;
      p.key_means_per_page = false;
    } else {
      const std::string c = o.at("key_centring").get<std::string>();
      const std::string m = o.at("key_means").get<std::string>();
      if (c == "default")
        p.key_centring = KeyCentring::kTypeDefault;
      else if (c == "on")
        p.key_centring = KeyCentring::kOn;
      else if (c == "off")
        p.key_centring = KeyCentring::kOff;
      else
        throw bad("bad key_centring '" + c + "' (default, on or off)");
      if (m != "page" && m != "first") throw bad("bad key_means '" + m + "' (page or first)");
      p.key_means_per_page = m == "page";
    }
    // Version 3 added key scales; older plans were measured without them.
    p.key_scales = false;
    if (version >= 3) {
      if (!o.contains("key_scales") || !o.at("key_scales").is_boolean())
        throw bad("bad or missing key_scales (true or false)");
      p.key_scales = o.at("key_scales").get<bool>();
    }
    p.sinks = int(integer(o.at("sinks"), 0, 1 << 24, "sinks"));
    p.residual = int(integer(o.at("residual"), 0, 1 << 24, "residual window"));
    if (!o.at("seed").is_number_unsigned()) throw bad("bad seed");
    p.seed = o.at("seed").get<uint64_t>();
    p.candidates = j.at("candidates").get<std::vector<std::string>>();
    // As tq plan takes them (candidate_bits); the solver's choice table holds < 128 options.
    if (p.candidates.size() > 64) throw bad("more than 64 candidates");
    if (std::set<std::string>(p.candidates.begin(), p.candidates.end()).size() !=
        p.candidates.size())
      throw bad("a candidate is listed twice");
    const auto types = list_types();
    auto known = [&](const std::string& t) {
      if (std::find(types.begin(), types.end(), t) == types.end())
        throw bad("unknown cache type '" + t + "'");
    };
    for (const auto& t : p.candidates) known(t);
    if (p.candidates.empty()) throw bad("no candidates");
    const json& bits = j.at("bits_per_value");
    for (const auto& t : p.candidates) {
      p.bits_k.push_back(bits.at(t).at("k").get<double>());
      p.bits_v.push_back(bits.at(t).at("v").get<double>());
      if (!(p.bits_k.back() > 0 && p.bits_v.back() > 0 && p.bits_k.back() <= 64 &&
            p.bits_v.back() <= 64))
        throw bad("bad bits per value of '" + t + "'");
    }
    const json& kld = j.at("measured_kld");
    if (!kld.is_array() || int(kld.size()) != p.n_layer)
      throw bad("measured_kld has " + std::to_string(kld.size()) + " layers, the model " +
                std::to_string(p.n_layer));
    for (int l = 0; l < p.n_layer; ++l) {
      const json& e = kld[size_t(l)];
      if (integer(e.at("layer"), 0, 4096, "layer") != l)
        throw bad("measured_kld out of layer order");
      std::vector<double> k, v;
      for (const auto& t : p.candidates) {
        k.push_back(e.at("k").at(t).get<double>());
        v.push_back(e.at("v").at(t).get<double>());
        if (!(k.back() >= 0 && v.back() >= 0 && std::isfinite(k.back()) && std::isfinite(v.back())))
          throw bad("bad KLD of '" + t + "' at layer " + std::to_string(l));
      }
      p.kld_k.push_back(k);
      p.kld_v.push_back(v);
    }
    p.budget_bpv = finite(j.at("budget_bpv"), "budget_bpv");
    p.achieved_bpv = finite(j.at("achieved_bpv"), "achieved_bpv");
    p.predicted_kld = finite(j.at("predicted_kld"), "predicted_kld");
    p.solver = j.at("solver").get<std::string>();
    const json& ver = j.at("verified");
    if (!ver.is_null()) {
      p.verified_kld = finite(ver.at("kld_mean"), "verified kld_mean");
      p.verified_bpv = finite(ver.at("bpv"), "verified bpv");
    }
    const json& layers = j.at("layers");
    if (!layers.is_array() || int(layers.size()) != p.n_layer)
      throw bad("layers has " + std::to_string(layers.size()) + " entries, the model " +
                std::to_string(p.n_layer));
    for (int l = 0; l < p.n_layer; ++l) {
      const json& e = layers[size_t(l)];
      if (integer(e.at("layer"), 0, 4096, "layer") != l) throw bad("layers out of order");
      p.layer_k.push_back(e.at("k").get<std::string>());
      p.layer_v.push_back(e.at("v").get<std::string>());
      known(p.layer_k.back());
      known(p.layer_v.back());
      if (type_traits(p.layer_k.back()).calibration != CalibrationKind::kNone ||
          type_traits(p.layer_v.back()).calibration != CalibrationKind::kNone)
        throw bad("layer " + std::to_string(l) + " uses a type that needs a codebook file");
    }
  } catch (const json::exception& e) {
    throw bad(std::string("missing or mistyped field (") + e.what() + ")");
  }
  return p;
}

void check_plan_model(const Plan& plan, const std::string& path, uint64_t fingerprint,
                      const LlamaHparams& hp) {
  if (plan.n_layer != hp.n_layer || plan.n_kv_head != hp.n_kv_head || plan.head_dim != hp.head_dim)
    throw Error("plan file '" + path + "' was made for another model (" +
                std::to_string(plan.n_layer) + " layers, " + std::to_string(plan.n_kv_head) +
                " KV heads of " + std::to_string(plan.head_dim) +
                "; this model: " + std::to_string(hp.n_layer) + ", " +
                std::to_string(hp.n_kv_head) + " of " + std::to_string(hp.head_dim) + ")");
  if (plan.model_fingerprint != fingerprint)
    throw Error("plan file '" + path + "' was made for another model (fingerprint " +
                hex64(plan.model_fingerprint) + ", this model " + hex64(fingerprint) + ")");
}

}  // namespace tq
