// turboquant — Llama-family forward pass on the CPU (architectures llama, qwen2; aliases
// mistral and smollm, which use the llama tensors).
//
// Weights are dequantized to f32 at load and the projections run through OpenBLAS sgemm
// (prefill, many tokens) / sgemv (one token). Measured on the default 135M model, 1 thread:
// dequantizing all weights takes ~0.3-0.5 s, while a whole decode step with f32 weights takes
// ~75 ms (memory-bound on the 0.54 GB of f32 weights) — dequantizing on the fly per step would
// be several times slower, so load-time dequantization is the right choice at this size.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "cache/kv_cache.h"

namespace tq {

class GgufFile;

struct LlamaHparams {
  std::string arch;
  int n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_kv_head = 0, head_dim = 0;
  int n_vocab = 0, n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.f;
  float rope_freq_scale = 1.f;  // linear RoPE scaling: positions × this
  RopePairing rope = RopePairing::kNormal;
  bool has_qkv_bias = false;
  bool tied_output = false;
};

// Threads of the forward pass and attention (OpenMP; OpenBLAS is kept single-threaded and
// called from the OpenMP threads, so that only one pool competes for the cores). n ≤ 0: auto
// (auto_threads()).
void set_threads(int n);
// All cores, or 1 when the machine is already busy (1-minute load average ≥ cores − 0.5).
int auto_threads();

class LlamaModel {
 public:
  // Reads hyperparameters and dequantizes all weights. Throws tq::Error for an unsupported
  // architecture or a missing/mis-shaped tensor.
  static std::unique_ptr<LlamaModel> load(const GgufFile& f);
  ~LlamaModel();

  const LlamaHparams& hparams() const { return hp_; }
  // The KV-cache shape this model needs.
  KvShape kv_shape() const;

  // Runs n tokens of sequence `seq` at positions [cache.seq_len(seq), +n) through the model,
  // appending their K/V to the cache (each layer's chunk is stored first, then its queries
  // attend to the stored K/V). hidden_out (optional): n × n_embd, the final-norm hidden states.
  // logits_last (optional): n_vocab logits of the last token.
  void forward(KvCache& cache, int seq, const int32_t* tokens, int n,
               std::vector<float>* hidden_out, std::vector<float>* logits_last,
               AttnPath path = AttnPath::kAuto) const;
  // logits (n × n_vocab) of n final-norm hidden states.
  void logits(const float* hidden, int n, float* out) const;

 private:
  LlamaModel() = default;
  struct Layer;
  LlamaHparams hp_;
  std::vector<float> tok_embd_, output_norm_, output_;  // output_ empty when tied
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;  // head_dim / 2
};

}  // namespace tq
