// turboquant GPU runtime — the device-side weights of a GpuModel (internal to src/gpu).
#pragma once
#include <cstdint>
#include <vector>

#include "gpu/runtime.h"

namespace tq::gpu {

struct GpuModel::Impl {
  struct Layer {
    uint16_t* wqkv = nullptr;  // [(Hq + 2·Hkv)·D][E]
    uint16_t* wo = nullptr;    // [E][Hq·D]
    uint16_t* wgu = nullptr;   // [2F][E]
    uint16_t* wdown = nullptr; // [E][F]
    float* attn_norm = nullptr;
    float* ffn_norm = nullptr;
    float* bqkv = nullptr;  // null without biases
  };
  uint16_t* tok_embd = nullptr;  // [vocab][E]
  uint16_t* output = nullptr;    // [vocab][E] (== tok_embd when tied)
  float* output_norm = nullptr;
  float* inv_freq = nullptr;     // [D/2]
  std::vector<Layer> layers;
  std::vector<float> inv_freq_host;
  std::vector<void*> allocations;
};

}  // namespace tq::gpu
