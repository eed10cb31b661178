#include <algorithm>
#include <deque>
#include <map>
#include <mutex>

#include "codecs/attn_ops.h"
#include "codecs/common.h"

namespace tq {
namespace {

struct Registry {
  std::mutex mu;
  std::deque<CodecRegistration> entries;  // stable addresses: type_traits() returns references
  bool initialised = false;
};

Registry& registry() {
  static Registry r;
  return r;
}

// Explicit registration (static initialisers would be dropped from a static library).
void ensure_initialised() {
  Registry& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (r.initialised) return;
    r.initialised = true;
  }
  register_float_codecs();
  register_turbo_codecs();
  register_polar_codecs();
  register_polarvq_codecs();
  register_ggml_codecs();
  register_baseline_codecs();
  register_vllm_codecs();
  register_kvquant_codecs();
  register_kvarn_codecs();
}

const CodecRegistration* find(std::string_view name) {
  ensure_initialised();
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& e : r.entries)
    if (e.name == name) return &e;
  return nullptr;
}

const CodecRegistration& find_or_throw(std::string_view type) {
  const CodecRegistration* e = find(type);
  if (!e)
    throw Error("unknown cache type '" + std::string(type) + "' (run `tq types` for the list)");
  return *e;
}

}  // namespace

std::unique_ptr<AttnOps> Codec::attn_ops() const { return nullptr; }

void register_codec(CodecRegistration reg) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& e : r.entries) TQ_ASSERT(e.name != reg.name);
  r.entries.push_back(std::move(reg));
}

std::unique_ptr<Codec> make_codec(std::string_view type, int dim, const CodecOptions& opts) {
  const CodecRegistration& e = find_or_throw(type);
  if (dim < 2 || dim > 1024)
    unsupported_dim(type, dim, "head dimensions 2..1024 are supported");
  return e.factory(type, dim, opts);
}

std::vector<std::string> list_types() {
  ensure_initialised();
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<const CodecRegistration*> v;
  for (const auto& e : r.entries)
    if (e.listed) v.push_back(&e);
  std::stable_sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->order < b->order; });
  std::vector<std::string> names;
  for (auto* e : v) names.push_back(e->name);
  return names;
}

const TypeTraits& type_traits(std::string_view type) { return find_or_throw(type).traits; }

bool type_needs_calibration(std::string_view type) { return type_traits(type).needs_calibration; }

void check_calibration_given(std::string_view type, bool have_codebooks) {
  const TypeTraits& t = type_traits(type);
  if (!have_codebooks && t.needs_calibration)
    throw Error("cache type '" + std::string(type) + "' needs learned codebooks: run " +
                t.calibrate_command + " and pass --codebooks FILE");
}

std::string calibration_label(std::string_view preset) {
  ensure_initialised();
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& e : r.entries)
    if (!preset.empty() && e.traits.calibration_preset == preset) return e.traits.calibration_label;
  return std::string(preset);
}

std::string describe_type(std::string_view type) { return find_or_throw(type).description; }

}  // namespace tq
