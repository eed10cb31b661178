// turboquant GPU runtime — a CPU reference of GpuRuntime's forward pass (tests, `tq bench serve
// --check`): the same weights (GpuModel::download), bf16 rounding at the same points as the
// GPU (GEMM inputs, K/V handed to the cache), sums in double, and attention through the CPU
// KvCache with the CPU codec of the same type name (the GPU formats hold the CPU codecs'
// codes, docs/gpu-notes.md) — so GPU and CPU differ only by summation order, the GPU
// attention's bf16/fp16 operands and its codebook tables.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "gpu/runtime.h"

namespace tq::gpu {

class CpuReference {
 public:
  CpuReference(const LlamaHparams& hp, HostWeights w, const std::string& cache_type,
               int max_tokens, int max_seqs);
  int new_seq() { return cache_->new_seq(); }
  int seq_len(int seq) const { return cache_->seq_len(seq); }
  // Runs n tokens of seq at positions [seq_len, +n); returns the last token's logits.
  std::vector<float> forward(int seq, const int32_t* tokens, int n);

 private:
  LlamaHparams hp_;
  HostWeights w_;
  std::unique_ptr<KvCache> cache_;
};

// Writes a model's weights as a GGUF (BF16 matrices in the llama/qwen2 tensor names, F32
// norms and biases) that the CPU path (LlamaModel::load) reads: the GPU forward and the
// project's CPU forward can then be compared on the same weights. with_tokenizer: also a
// byte-level BPE tokenizer (needs a vocabulary of >= 258), so `tq generate` / `tq perplexity`
// run the file on text (the device machine has no real model).
void write_gguf(const LlamaHparams& hp, const HostWeights& w, const std::string& path,
                bool with_tokenizer = false);

}  // namespace tq::gpu
