// Fuzz target: the plan file reader (eval/plan.h, DESIGN.md §11.1) and what the tool does with a
// plan it accepts. The input is the file's text. A plan that parses must: format to text that
// parses again and formats to the same text (write_plan ∘ read_plan is a fixed point); give
// cache options that validate (or refuse with tq::Error) for its layer count; pass the model
// check against its own fingerprint and shape; and, when small, re-solve (`tq plan --from`) for
// its budget and a few others, within the budget or refused with tq::Error.
// Seeds: fuzz/corpus/fuzz_plan.
#include <cmath>
#include <string>

#include "eval/perplexity.h"
#include "eval/plan.h"
#include "tq/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  tq::Plan p;
  try {
    p = tq::parse_plan(text, "fuzz.json");
  } catch (const tq::Error&) {
    return 0;
  }
  const std::string a = tq::format_plan(p);
  const tq::Plan q = tq::parse_plan(a, "fuzz.json");  // throws (and fails the run) if it refuses
  if (tq::format_plan(q) != a) __builtin_trap();      // not a fixed point

  try {
    tq::validate_cache_options(tq::plan_cache_options(p), p.n_layer);
  } catch (const tq::Error&) {
  }
  tq::LlamaHparams hp;
  hp.n_layer = p.n_layer;
  hp.n_kv_head = p.n_kv_head;
  hp.head_dim = p.head_dim;
  tq::check_plan_model(p, "fuzz.json", p.model_fingerprint, hp);  // its own model: accepted

  // Re-solving: the solver's table grows with layers × bits, so only small plans (a real model
  // has at most a few hundred parts; the memory bound of the run is 2 GB).
  if (p.n_layer > 8) return 0;
  for (double budget : {p.budget_bpv, 2.0, 3.25, 16.0}) {
    if (!(budget > 0 && budget <= 64)) continue;
    tq::Plan r = p;
    try {
      tq::solve_plan(r, budget);
    } catch (const tq::Error&) {
      continue;
    }
    if (!(r.achieved_bpv <= budget + 1e-9) || !std::isfinite(r.predicted_kld)) __builtin_trap();
    if (int(r.layer_k.size()) != r.n_layer || int(r.layer_v.size()) != r.n_layer)
      __builtin_trap();
  }
  return 0;
}
