// turboquant — Llama-family forward pass on the CPU (architectures llama, qwen2, gemma3; aliases
// mistral and smollm, which use the llama tensors). Gemma 3 is the same pass with the flags of
// LlamaHparams switched on (DESIGN.md §8), not a second copy of it.
//
// Weights stay in their GGUF types inside the memory-mapped file (QMatrix views, no f32 copy)
// and every projection goes through matmul() (src/matmul, DESIGN.md §8): int8 activations and
// integer dot products for the quantized types, OpenBLAS for f32 weights. Only the 1-D tensors
// (norm weights, biases) are dequantized to f32. The GgufFile must outlive the model.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "cache/kv_cache.h"
#include "matmul/qmatrix.h"

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
  // Gemma 3 (DESIGN.md §8). Its GGUF stores the RMSNorm weights already as (1 + w), so every
  // norm is the plain x·r·w here too.
  bool qk_norm = false;       // per-head RMSNorm of q and k (attn_q_norm / attn_k_norm), pre-RoPE
  bool post_norms = false;    // RMSNorm of the attention and FFN outputs before the residual add
  bool gelu_ffn = false;      // GeGLU (gelu-tanh gate) instead of SwiGLU (silu gate)
  float embd_scale = 1.f;     // token embeddings × this (gemma3: sqrt(n_embd))
  float attn_scale = 0.f;     // softmax scale of q·k; 0 = 1/sqrt(head_dim)
  float logit_softcap = 0.f;  // > 0: logits = cap·tanh(logits / cap)
  // Per layer: 0 = global attention, W > 0 = sliding window (a query at p sees [p−W+1, p]).
  // Sliding layers take RoPE base rope_base_local and no RoPE scaling.
  std::vector<int> layer_window;
  float rope_base_local = 10000.f;
};

// Threads of the forward pass and attention (OpenMP; OpenBLAS is kept single-threaded and
// called from the OpenMP threads, so that only one pool competes for the cores). n ≤ 0: auto
// (auto_threads()).
void set_threads(int n);
// All cores, or 1 when the machine is already busy (1-minute load average ≥ cores − 0.5).
int auto_threads();

class LlamaModel {
 public:
  // Reads hyperparameters and maps the weights (views into f, which must outlive the model).
  // Throws tq::Error for an unsupported architecture or weight type, or a missing/mis-shaped
  // tensor.
  static std::unique_ptr<LlamaModel> load(const GgufFile& f);
  ~LlamaModel();

  const LlamaHparams& hparams() const { return hp_; }
  // The KV-cache shape this model needs.
  KvShape kv_shape() const;

  // Runs n tokens of sequence `seq` at positions [cache.seq_len(seq), +n) through the model,
  // appending their K/V to the cache (each layer's chunk is stored first, then its queries
  // attend to the stored K/V). Long inputs run in chunks of max_batch() tokens, which bounds
  // the activation memory (activation_bytes()). hidden_out (optional): n × n_embd, the final-norm hidden states.
  // logits_last (optional): n_vocab logits of the last token.
  void forward(KvCache& cache, int seq, const int32_t* tokens, int n,
               std::vector<float>* hidden_out, std::vector<float>* logits_last,
               AttnPath path = AttnPath::kAuto) const;
  // logits (n × n_vocab) of n final-norm hidden states.
  void logits(const float* hidden, int n, float* out) const;

  // Runs only layers [first_layer, n_layer) of n tokens whose residual stream entering
  // first_layer is x_in (n × n_embd), at positions [cache.seq_len(seq, first_layer), +n); the
  // layers below are neither run nor stored. For measurements where those layers are the same as
  // in an earlier run (`tq plan` quantizes one layer at a time, DESIGN.md §11). hidden_out:
  // n × n_embd final-norm states. taps (optional, also with first_layer = 0 and tokens): the
  // residual stream entering every layer l ≥ first_layer, (*taps)[l] = n × n_embd.
  void forward_from(KvCache& cache, int seq, int first_layer, const float* x_in, int n,
                    std::vector<float>* hidden_out,
                    std::vector<std::vector<float>>* taps = nullptr) const;
  // forward() that also records the residual stream entering every layer (see forward_from).
  void forward_taps(KvCache& cache, int seq, const int32_t* tokens, int n,
                    std::vector<float>* hidden_out, std::vector<std::vector<float>>* taps) const;

  // Tokens per forward chunk.
  static int max_batch() { return 512; }
  // Bytes of the weights the forward pass reads (the mapped tensors it multiplies with, the
  // f32 norms and biases), and of its activation buffers for a chunk of `batch` tokens.
  size_t weight_bytes() const;
  size_t activation_bytes(int batch) const;

 private:
  LlamaModel() = default;
  // tokens (embedded here) or x_in (the residual stream entering first_layer).
  void forward_chunk(KvCache& cache, int seq, const int32_t* tokens, int n,
                     std::vector<float>* hidden_out, std::vector<float>* logits_last,
                     AttnPath path, int first_layer = 0, const float* x_in = nullptr,
                     std::vector<std::vector<float>>* taps = nullptr) const;
  void forward_span(KvCache& cache, int seq, const int32_t* tokens, const float* x_in,
                    int first_layer, int n, std::vector<float>* hidden_out,
                    std::vector<std::vector<float>>* taps) const;
  struct Layer;
  LlamaHparams hp_;
  QMatrix tok_embd_, output_;  // output_ == tok_embd_ when tied
  std::vector<float> output_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;        // head_dim / 2
  std::vector<float> inv_freq_local_;  // the sliding-window layers' (empty when there are none)
  bool local(int layer) const { return hp_.layer_window[size_t(layer)] > 0; }
};

}  // namespace tq
