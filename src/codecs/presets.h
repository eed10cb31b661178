// Named cache-type presets that expand into a (K type, V type) pair plus boundary layers, so
// that `tq compare` can take e.g. `turboquant_k3v4_nc` the way vLLM's --kv-cache-dtype does.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tq {

struct PresetInfo {
  std::string name;        // e.g. "turboquant_k3v4_nc"
  std::string ctk, ctv;    // registry names of the key and value codecs
  int boundary_layers;     // first and last N layers use boundary_type instead (N = this)
  std::string boundary_type;  // type of the boundary layers for both K and V ("f16")
  std::string description;
};

// (ctk, ctv) of a preset, or nullopt when `name` is not a preset.
std::optional<std::pair<std::string, std::string>> preset_pair(std::string_view name);
// Everything about a preset, or nullopt.
std::optional<PresetInfo> preset_info(std::string_view name);
// All preset names, in display order.
std::vector<std::string> list_presets();
// The layer indices (ascending) that a preset keeps at its boundary type in a model with
// n_layers layers: the first and last min(N, n_layers/2) layers, as vLLM computes them. Empty
// for an unknown preset.
std::vector<int> preset_boundary_layers(std::string_view name, int n_layers);

}  // namespace tq
