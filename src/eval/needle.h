// turboquant — passkey ("needle") retrieval at long context (DESIGN.md §11.2, SPEC §4, §6).
//
// A random 5-7 digit number is hidden, inside a fixed sentence ("The pass key is 48213.
// Remember it."), at a depth (a fraction of the filler) in filler text taken from a file; the
// question comes at the end, followed by an answer prefix ("The pass key is"); a few tokens are
// decoded greedily and the first run of digits of the answer must equal the number exactly.
//
// The prompt is built in tokens, so its length is exact: head (BOS, the chat template's prefix,
// the instruction) + filler[0, i) + needle + filler[i, n) + tail (the question, the template's
// suffix, the answer prefix), the filler cut to n = length − head − needle − tail tokens. The
// insertion point i = round(depth · n), moved forward to the next filler token that starts a
// word (a token beginning with whitespace; at most 32 tokens), so the needle never splits a
// word. The filler starts at a seeded offset into the file's tokens (also moved to a word
// start), the same for every depth of one (length, trial); the number depends on (length,
// depth, trial). Every cache type runs exactly the same prompts.
//
// Each prompt runs in a fresh cache with the model's batched prefill (LlamaModel::forward over
// the whole prompt, in chunks of max_batch() tokens, every position attending to the stored
// codes, DESIGN.md §3.3), then greedy decode steps on the same cache.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/compare.h"
#include "model/llama.h"

namespace tq {

class Tokenizer;

// The fixed token pieces of every prompt of one tokenizer.
struct NeedleParts {
  std::vector<int32_t> head;  // BOS (if the model wants one), chat prefix, the instruction
  std::vector<int32_t> tail;  // the question, chat suffix, the answer prefix
  bool chat = false;          // wrapped in the model's chat template
};
NeedleParts make_needle_parts(const Tokenizer& tok, bool chat);

// The needle sentence for a number (tokens, with a leading space: it starts a word).
std::vector<int32_t> needle_tokens(const Tokenizer& tok, const std::string& number);

// The number of trial `trial` of (length, depth index) under `seed`: 5-7 digits, no leading 0.
// `attempt` > 0 draws another one (run_needle does so while the filler already contains it).
std::string needle_number(uint64_t seed, int length, int depth_index, int trial, int attempt = 0);

struct NeedlePrompt {
  std::vector<int32_t> tokens;  // exactly `length` tokens
  int needle_pos = 0;           // index of the needle's first token in `tokens`
  int needle_len = 0;
  int filler_tokens = 0;     // filler tokens in the prompt
  int filler_before = 0;     // filler tokens before the needle (the realised depth × n)
  size_t filler_offset = 0;  // first filler token's index in the file's tokens
};

// Smallest length whose prompt holds the fixed parts, a 7-digit needle and 16 filler tokens.
int needle_min_length(const Tokenizer& tok, const NeedleParts& parts);

// Occurrences of `number` in the decoded prompt, as a whole number (not inside a longer digit
// run).
int count_number(const Tokenizer& tok, const std::vector<int32_t>& tokens,
                 const std::string& number);

// Builds one prompt. Throws tq::Error if `length` cannot hold the fixed parts and 16 filler
// tokens, depth is outside [0, 1], or the filler (from filler_offset on) is too short.
NeedlePrompt build_needle_prompt(const Tokenizer& tok, const NeedleParts& parts,
                                 const std::vector<int32_t>& filler, int length, double depth,
                                 const std::string& number, size_t filler_offset);

// The filler offset of trial `trial` at `length`: seeded, in [0, filler_size − need], moved to a
// word start; 0 when the filler has exactly what is needed.
size_t needle_filler_offset(const Tokenizer& tok, const std::vector<int32_t>& filler, uint64_t seed,
                            int length, int trial, int need);

// The first run of ASCII digits in `text` ("" if none).
std::string first_digit_run(const std::string& text);

struct NeedleOptions {
  std::vector<int> lengths;
  std::vector<double> depths;
  int trials = 3;
  int max_new_tokens = 12;      // greedy answer tokens (stops early once the number has ended)
  uint64_t seed = 0x5451'0001;  // numbers and filler offsets (and the cache's rotations)
  bool chat = true;
  // The command line's cache flags and codebooks, as compare's rows take them: each row's
  // options are row_cache_options(entry, compare) (KIVI's R=128, kvquant's S=1 defaults, @R=,
  // @S=, @C=, and `plan:FILE` rows: the plan's types and options; the caller checks the plan
  // against the model, check_plan_model).
  CompareOptions compare;
  std::function<void(size_t done, size_t total, const std::string& note)> progress;
  // Resumable runs (`--log FILE`): every finished prompt is appended to this file as one JSON
  // line (row, its cache options' tag, length, depth, trial, number, the prompt's hash, the
  // answer, bytes and times) and flushed; prompts the file already holds for the same row tag
  // and prompt hash are taken from it instead of being run again, so a long measurement that
  // stops (a session's end, a kill) continues where it stopped. Empty: no log.
  std::string log_path;
  uint64_t log_model = 0;  // the model's fingerprint (plan_model_fingerprint), part of each key
};

// The tag of a row's cache options in a needle log: the options that change what the cache
// stores (types, per-layer overrides, boundary, window, sinks, centring, key means and scales,
// seed). Two rows with the same tag store the same thing.
std::string needle_cache_tag(const KvCacheOptions& o);

struct NeedleTrial {
  std::string number, answer;  // answer: the decoded text (first line, trimmed)
  bool correct = false;
  int needle_pos = 0;
};

struct NeedleCell {
  int length = 0;
  double depth = 0;
  int correct = 0;
  std::vector<NeedleTrial> trials;
  double accuracy() const { return trials.empty() ? 0.0 : double(correct) / trials.size(); }
};

struct NeedleRow {
  std::string label, ctk, ctv;
  bool reference = false;
  std::vector<double> bpv;        // per length: all-in, from the cache's bytes after the prompt
  std::vector<size_t> kv_bytes;   // per length
  std::vector<NeedleCell> cells;  // length-major: cells[li * depths + di]
  double seconds = 0, cpu_seconds = 0, prefill_seconds = 0;
  long prefill_tokens = 0;
  int from_log = 0;  // prompts taken from NeedleOptions::log_path (their times included above)
};

struct NeedleResult {
  std::vector<int> lengths;
  std::vector<double> depths;
  int trials = 0;
  bool chat = false;
  size_t filler_tokens = 0;     // tokens of the filler file
  std::vector<NeedleRow> rows;  // the f16 reference first
  // Mean accuracy of a row at a length (over its depths and trials).
  double mean(const NeedleRow& r, size_t length_index) const;
};

// Checks everything (lengths against the model's context and the filler, depths, trials, each
// row's cache options and memory) before any work, then runs the f16 reference (unless
// with_reference is false) and every entry over the same prompts. Throws tq::Error (one line)
// for bad input.
NeedleResult run_needle(const LlamaModel& model, const Tokenizer& tok,
                        const std::vector<int32_t>& filler,
                        const std::vector<CompareEntry>& entries, const NeedleOptions& opts,
                        bool with_reference = true);

// Heat map of accuracy (rows: type × length, columns: depth) drawn with gnuplot into a PNG.
// Throws tq::Error if gnuplot is missing or fails.
void plot_needle(const NeedleResult& r, const std::string& png, const std::string& title);

}  // namespace tq
