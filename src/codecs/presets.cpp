// vLLM's TurboQuant KV-cache presets (vllm/model_executor/layers/quantization/turboquant/
// config.py, TQ_PRESETS and TurboQuantConfig; read 2026-11):
//
//   preset               key_quant_bits  value_quant_bits  norm_correction   vLLM's own figures
//   turboquant_k8v4            8                4               no           2.6x, +1.17% PPL
//   turboquant_4bit_nc         4                4               yes          3.8x, +2.71% PPL
//   turboquant_k3v4_nc         3                4               yes          ~3.5x, +10.63% PPL
//   turboquant_3bit_nc         3                3               yes          4.9x, +20.59% PPL
//
// key_quant_bits 8 = keys cast to FP8 E4M3 (no rotation, no scale); 3-4 = Hadamard rotation +
// Lloyd-Max ("MSE") codes with an fp16 norm; values are uniform per token with fp16 scale and
// zero; QJL is deliberately left out. Norm correction renormalises the centroid vector to unit
// length before the inverse rotation (codec details in vllm_tq.cpp).
// Boundary layers: vLLM's engine (vllm/engine/arg_utils.py) adds
// TurboQuantConfig.get_boundary_skip_layers(n = 2) to kv_cache_dtype_skip_layers for every
// turboquant_* cache dtype on dense models: the first and last min(2, n_layers/2) layers keep
// the unquantized model-dtype cache ("auto"). Our reference cache is f16, so those layers use f16.
//
// `kvarn` is KVarN's vLLM preset kvarn_k4v2_g128 (github.com/huawei-csl/KVarN, read 2026-12;
// codecs/kvarn.h), under the name the issue gives the row.
#include "codecs/presets.h"

#include <algorithm>

namespace tq {
namespace {

const std::vector<PresetInfo>& presets() {
  static const std::vector<PresetInfo> p = {
      {"turboquant_k8v4", "vllm-k8", "vllm-v4", 2, "f16",
       "vLLM TurboQuant: FP8 keys + 4-bit uniform values; first/last 2 layers f16"},
      {"turboquant_4bit_nc", "vllm-k4nc", "vllm-v4", 2, "f16",
       "vLLM TurboQuant: 4-bit Lloyd-Max keys (norm corr.) + 4-bit values; first/last 2 f16"},
      {"turboquant_k3v4_nc", "vllm-k3nc", "vllm-v4", 2, "f16",
       "vLLM TurboQuant: 3-bit Lloyd-Max keys (norm corr.) + 4-bit values; first/last 2 f16"},
      {"turboquant_3bit_nc", "vllm-k3nc", "vllm-v3", 2, "f16",
       "vLLM TurboQuant: 3-bit Lloyd-Max keys (norm corr.) + 3-bit values; first/last 2 f16"},
      // KVarN's shipped preset kvarn_k4v2_g128 (codecs/kvarn.h): no boundary layers (its
      // KVarNConfig.boundary_skip_layers = 0); the first 128 tokens f16 come from the types'
      // default sinks.
      {"kvarn", "kvarn4", "kvarn2", 0, "f16",
       "KVarN kvarn_k4v2_g128: 4-bit keys + 2-bit values, 128-token tiles, first 128 tokens f16"},
  };
  return p;
}

}  // namespace

std::optional<PresetInfo> preset_info(std::string_view name) {
  for (const auto& p : presets())
    if (p.name == name) return p;
  return std::nullopt;
}

std::optional<std::pair<std::string, std::string>> preset_pair(std::string_view name) {
  const auto p = preset_info(name);
  if (!p) return std::nullopt;
  return std::make_pair(p->ctk, p->ctv);
}

std::vector<std::string> list_presets() {
  std::vector<std::string> v;
  for (const auto& p : presets()) v.push_back(p.name);
  return v;
}

std::vector<int> preset_boundary_layers(std::string_view name, int n_layers) {
  const auto p = preset_info(name);
  if (!p || n_layers <= 0 || p->boundary_layers <= 0) return {};
  const int n = std::min(p->boundary_layers, n_layers / 2);
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  for (int i = n_layers - n; i < n_layers; ++i)
    if (std::find(v.begin(), v.end(), i) == v.end()) v.push_back(i);
  return v;
}

}  // namespace tq
