// turboquant — plans: a cache type per layer, K and V separately, chosen on calibration text to
// minimise the predicted KL divergence under an all-in bpv budget (DESIGN.md §11).
//
// Measurement: the f16-cache run of each calibration chunk is made once; its log-probs of the
// scored positions (the second half of the chunk, as in perplexity.h) and the residual stream
// entering every layer are kept. Then, for each part of the cache — layer L, K or V — and each
// candidate type, the chunk runs with only that part quantized (everything else f16) and the
// mean KL(P_f16 ‖ P) over the scored positions is recorded. Layers below L are the same as in
// the f16 run, so the run starts at L from the kept residual stream (LlamaModel::forward_from):
// about half the work of a full forward.
//
// Choice: the additive model — predicted KLD of an assignment = Σ over parts of the part's
// measured KLD — minimised under Σ bits(part) ≤ budget · parts (every part holds the same share
// of the values, n_kv_head · head_dim per token), by an exact multiple-choice knapsack (dynamic
// programming over a grid of 1/1024 bit per part; each cost rounded up to the grid, so a
// solution never exceeds the budget).
//
// Plan file: JSON (format "turboquant-plan", version 1), see write_plan().
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "model/llama.h"

namespace tq {

class GgufFile;

// The fingerprint a plan is checked against: GgufFile::fingerprint over every tensor (the one
// KLD base files use): a plan's KLDs depend on all the weights, not only the K/V projections.
uint64_t plan_model_fingerprint(const GgufFile& f);

// The default candidate types of `tq plan`.
std::vector<std::string> default_plan_candidates();

// Multiple-choice knapsack: for every item i choose one option j (cost[i][j], bits[i][j]) so
// that Σ bits ≤ budget with least Σ cost. Bits are rounded up to multiples of `grid`; exact on
// that grid. Returns the chosen option per item; throws tq::Error if no choice fits.
std::vector<int> solve_knapsack(const std::vector<std::vector<double>>& cost,
                                const std::vector<std::vector<double>>& bits, double budget,
                                double grid = 1.0 / 1024);

struct Plan {
  // Version 2 records key_centring and key_means (DESIGN.md §3.1); version 1 files (a bool
  // center_keys, from before keys were centred by default) are still read: center_keys true is
  // kOn with the first mean only, false is kOff, as they were measured.
  // Version 3 records key_scales (KvCacheOptions::key_scales); older files read as false.
  static constexpr int kVersion = 3;
  // Model.
  uint64_t model_fingerprint = 0;
  std::string model_file;  // file name only (informative)
  int n_layer = 0, n_kv_head = 0, head_dim = 0;
  // Calibration.
  std::string calib_file;
  uint64_t calib_hash = 0;  // XXH64 of the calibration text's bytes
  int ctx = 0, chunks = 0;
  long tokens_scored = 0;
  // Cache options the parts were measured with (applied with the plan).
  KeyCentring key_centring = KeyCentring::kTypeDefault;  // resolved per layer, as the cache does
  bool key_means_per_page = true;                        // KvCacheOptions::key_means_per_page
  bool key_scales = true;                                // KvCacheOptions::key_scales
  int sinks = 0, residual = 0;
  uint64_t seed = 0;
  // Candidates, their all-in bits per value of a K part and of a V part at this head_dim and
  // ctx (codec bytes per block, key means, sinks and window counted), and the measured mean KLD
  // of each part: kld_k[layer][candidate], kld_v likewise.
  std::vector<std::string> candidates;
  std::vector<double> bits_k, bits_v;
  std::vector<std::vector<double>> kld_k, kld_v;
  // The choice.
  double budget_bpv = 0, achieved_bpv = 0, predicted_kld = 0;
  std::string solver;
  std::vector<std::string> layer_k, layer_v;         // per layer
  std::optional<double> verified_kld, verified_bpv;  // the chosen plan run on the calibration
};

struct PlanMeasureOptions {
  int n_ctx = 512, n_chunks = 2;
  std::vector<std::string> candidates = default_plan_candidates();
  // key_centring, key_means_per_page, sinks, residual, seed, page_tokens; types are ignored
  KvCacheOptions cache;
  // (done, total, note) after every run; may be empty.
  std::function<void(size_t, size_t, const std::string&)> progress;
};

// Checks a candidate list (known types, no duplicates, no type that needs learned data, at
// least two) and returns the per-value bits of each as a K part and as a V part. Throws.
void candidate_bits(const std::vector<std::string>& candidates, const KvShape& shape,
                    const KvCacheOptions& cache, int n_ctx, std::vector<double>& bits_k,
                    std::vector<double>& bits_v);

// Measures every (part, candidate) KLD on `tokens` (the calibration text, tokenized). Fills
// the measurement fields of the plan (not the model / calibration identity, not the choice).
Plan measure_plan(const LlamaModel& model, const std::vector<int32_t>& tokens, bool add_bos,
                  int32_t bos, const PlanMeasureOptions& opts);

// Chooses the assignment for `budget_bpv` from the plan's measurements (fills the choice
// fields; clears the verification). Throws tq::Error naming the minimum if the budget is below
// what the candidates reach.
void solve_plan(Plan& plan, double budget_bpv);

// The plan's cache options: every layer's K and V type, and the options it was measured with.
KvCacheOptions plan_cache_options(const Plan& plan, const KvCacheOptions& base = {});

// JSON file I/O. read_plan throws a one-line tq::Error for a missing, truncated or damaged file,
// another format or version, an unknown type, or inconsistent fields.
void write_plan(const std::string& path, const Plan& plan);
Plan read_plan(const std::string& path);
// The same on text (the file's contents; `path` only names it in messages): format_plan is what
// write_plan writes, parse_plan what read_plan checks (fuzz/fuzz_plan.cpp feeds it).
std::string format_plan(const Plan& plan);
Plan parse_plan(const std::string& text, const std::string& path);
// Throws if the plan was made for another model (fingerprint or shape).
void check_plan_model(const Plan& plan, const std::string& path, uint64_t fingerprint,
                      const LlamaHparams& hp);

}  // namespace tq
