// turboquant — `tq compare`: one f16 reference run, then every listed cache type over the same
// chunks, in one table (DESIGN.md §4, §6).
//
// The reference runs once through run_perplexity with a KLD base file (its full-vocabulary
// log-probs, fp16) in a temporary folder; every other row compares against that file, so the
// text is tokenized once and the reference forward runs once.
//
// Type list syntax (comma-separated entries):
//   T            K = V = T                       e.g. turbo3, q4_0+h, polar-vq:balanced
//   K/V          a pair                          e.g. q8_0/turbo3
//   PRESET       a vLLM preset (K/V + boundary)  e.g. turboquant_k3v4_nc
//   entry@R=N    this row only: residual window of the newest N tokens in f16
//   entry@S=N    this row only: the first N tokens in f16 (attention sinks)
//   entry@C=0|1  this row only: keys centred in no layer (0) / every layer (1), overriding the
//                type default (turbo*, polar, polar-vq:* centred; baselines not) and the flags
//   plan:FILE    a plan from `tq plan` (DESIGN.md §11): its per-layer K/V types and the cache
//                options it was measured with (key centring included); the command line's
//                type flags do not apply to it, and `tq` refuses a cache flag that differs
//                from the plan's (no @ options; FILE may not contain a comma)
// KIVI rows (kivi2/kivi4 as K or V) get R = 128 (KIVI's default) unless the entry or the
// command line sets a residual window. kvquant rows (kvquant3/kvquant4 as K or V) get S = 1
// (KVQuant keeps the first token in fp16) unless the entry or the command line sets sinks.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "model/llama.h"

namespace tq {

struct Plan;

struct CompareEntry {
  std::string spec;                    // as written in the list
  std::string ctk, ctv;                // registry names
  std::string preset;                  // preset name, or ""
  int boundary_layers = -1;            // −1: the command line's; else the preset's
  std::string boundary_type;           // with boundary_layers ≥ 0
  std::optional<int> residual, sinks;  // @R= / @S=
  std::optional<bool> center;          // @C=1 / @C=0
  std::string plan_file;               // plan:FILE rows
  std::shared_ptr<const Plan> plan;    // read by parse_type_list
  bool is_f16() const;  // plain f16/f16 with no per-row options: the reference itself
};

// Parses and validates a type list (unknown type, malformed pair, bad @ option, unreadable or
// damaged plan file → tq::Error, one line). Reads plan files; does no other work (the plan's
// model is checked by the caller, check_plan_model).
std::vector<CompareEntry> parse_type_list(const std::string& list);

// A row's residual window and sinks default to its types' TypeTraits::default_window /
// default_sinks (KIVI: R = 128, kvquant: S = 1) unless given on the command line or per row.

struct CompareOptions {
  int n_ctx = 512;
  int n_chunks = -1;
  KvCacheOptions cache;  // the command line's cache flags, applied to every row
  // Several polar-vq codebook files (one per preset): each row gets, as cache.codebooks, the
  // one whose preset is its polar-vq type's. Empty: every row uses cache.codebooks.
  std::vector<std::shared_ptr<const CodebookFile>> codebook_set;
  bool residual_given = false;  // --residual was on the command line (KIVI default off)
  bool sinks_given = false;     // --sinks was on the command line (kvquant default off)
  int decode_tokens = 16;       // greedy decode steps timed after the first chunk
  uint64_t model_fingerprint = 0;
  std::string work_dir;  // where the temporary KLD base lives ("" = system temp)
  std::function<void(size_t done, size_t total, const std::string& note)> progress;
};

struct CompareRow {
  std::string label;  // e.g. "kivi2 (R=128)", "q8_0/turbo3", "turboquant_k3v4_nc"
  std::string ctk, ctv, preset;
  int boundary_layers = 0, residual = 0, sinks = 0;
  bool reference = false;
  // Key centring as asked ("default", "on", "off": KeyCentring) and as done: the number of
  // layers whose keys were mean-centred (their means are counted in kv_bytes and bpv).
  std::string key_centring = "default";
  int centred_layers = 0;
  std::string key_means = "page";  // KvCacheOptions::key_means_per_page: "page" | "first"
  bool key_scales = true;          // KvCacheOptions::key_scales (applies to centred keys)
  double bpv = 0, bpv_k = 0, bpv_v = 0, compression = 0;
  size_t kv_bytes = 0;     // one chunk's cache (n_ctx tokens), as stored
  double kv_mib_8192 = 0;  // kv_bytes / n_ctx × 8192 tokens
  double ppl = 0, ppl_stderr = 0, dppl_pct = 0, kld_mean = 0, kld_p99 = 0, top1 = 0;
  double decode_tps = 0;  // 0 when no room for decode tokens
  double prefill_tps = 0, seconds = 0;
};

struct CompareResult {
  int n_ctx = 0, chunks = 0;
  long tokens_scored = 0, tokens_run = 0;
  int decode_tokens = 0;
  std::vector<CompareRow> rows;  // the reference first
};

// Effective cache options of one row. Throws tq::Error if codebook_set is given and has no file
// for a polar-vq preset of the row, or the row mixes two polar-vq presets.
KvCacheOptions row_cache_options(const CompareEntry& e, const CompareOptions& opts);

// True when the row is the plain f16 reference itself (an f16 entry with no per-row options,
// and no command-line overrides, boundary layers or centring): it is not run a second time.
bool is_reference_entry(const CompareEntry& e, const CompareOptions& opts);

// A row's label: its types (or preset) and its window / sinks / boundary, e.g. "kivi2 (R=128)".
std::string row_label(const CompareRow& r);

// Runs the reference and every entry. Throws tq::Error for bad options (checked for every row
// before the reference runs).
CompareResult run_compare(const LlamaModel& model, const std::vector<int32_t>& tokens, bool add_bos,
                          int32_t bos, const std::vector<CompareEntry>& entries,
                          const CompareOptions& opts);

// Indices of the rows on the Pareto frontier of (bpv, mean KLD): no other row has both lower
// or equal bpv and lower or equal KLD with one of them strictly lower. Ascending bpv.
std::vector<size_t> pareto_frontier(const std::vector<CompareRow>& rows);

// Draws mean KLD (log scale) against bpv with gnuplot into a PNG, frontier marked and labelled.
// Rows with KLD 0 (the reference) cannot sit on a log axis and are left out (noted in the
// title). Throws tq::Error if gnuplot is not installed or fails.
void plot_compare(const CompareResult& r, const std::string& png, const std::string& title);
// Throws tq::Error("... gnuplot ... not found ...") when gnuplot is not on PATH.
void require_gnuplot();

}  // namespace tq
