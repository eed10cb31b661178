// turboquant GPU runtime (DESIGN.md §9): a Llama-family model (llama, qwen2) on the GPU in bf16,
// served from the paged, compressed GPU cache of src/cuda (one GpuCache per layer over one
// shared page numbering). Plain C++ interface: no CUDA types, so tools and tests compile it
// with any compiler.
//
//   GpuModel    the weights on the device: synthetic (seeded random, generated on the GPU) of a
//               named shape; host copies of them for the CPU reference.
//   GpuRuntime  sequences, the page pool, chunked prefill and batched decode steps (cuBLAS
//               GEMMs, fused kernels of ops.h, the cache's append + decode kernels per layer,
//               the decode step replayed as a CUDA graph).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"

namespace tq {
class GgufFile;
}

namespace tq::gpu {

// Named synthetic shapes: "llama3-8b" (32 layers, 4096 wide, 32/8 heads of 128, FFN 14336,
// vocab 128256, RoPE θ 500000), "tiny" (2 layers, 256 wide, 4/2 heads of 64, FFN 512, vocab
// 512, llama) and "tiny-qwen2" (the same with Q/K/V biases and NeoX RoPE). tq::Error otherwise.
LlamaHparams synthetic_hparams(const std::string& name);
const char* synthetic_names();  // for help texts

// Host copies of a model's weights, in the device's layout: matrices bf16 row-major
// [out][in]; wqkv = [q; k; v] rows, wgu = [gate; up] rows; norms and biases fp32.
struct HostWeights {
  struct Layer {
    std::vector<uint16_t> wqkv, wo, wgu, wdown;
    std::vector<float> attn_norm, ffn_norm, bqkv;  // bqkv empty without biases
  };
  std::vector<uint16_t> tok_embd, output;  // [vocab][E] each
  std::vector<float> output_norm;
  std::vector<Layer> layers;
  std::vector<float> inv_freq;  // [head_dim / 2]
};

class GpuModel {
 public:
  // Seeded random weights generated on the GPU (uniform, each matrix scaled to unit output
  // variance for unit-variance input; norms 1 ± 0.1; biases ± 0.5).
  static std::unique_ptr<GpuModel> synthetic(const LlamaHparams& hp, uint64_t seed);
  // A llama / qwen2 GGUF's weights, dequantized and stored in bf16 (norms, biases fp32).
  // tq::Error for an unsupported architecture or a missing / mis-shaped tensor.
  static std::unique_ptr<GpuModel> from_gguf(const GgufFile& f);
  ~GpuModel();
  GpuModel(const GpuModel&) = delete;
  GpuModel& operator=(const GpuModel&) = delete;

  const LlamaHparams& hparams() const { return hp_; }
  size_t weight_bytes() const { return bytes_; }
  // Bytes a decode step reads: every weight but the embedding table (a gather of B rows).
  size_t step_weight_bytes() const;
  HostWeights download() const;

  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  GpuModel() = default;
  LlamaHparams hp_;
  size_t bytes_ = 0;
  std::unique_ptr<Impl> impl_;
};

struct RuntimeConfig {
  std::string cache_type = "bf16";    // a GPU cache type (tq::cuda::parse_fmt)
  int max_seqs = 16;                  // sequence slots (largest decode batch)
  int max_ctx = 4096;                 // tokens per sequence (block-table width)
  int n_pages = 0;                    // 32-token pages in the pool; 0: max_seqs full contexts
  int max_chunk = 256;                // prefill tokens per forward (chunked prefill)
  bool graphs = true;                 // replay the decode step as a CUDA graph
  uint64_t cache_seed = 0x5451'0001;  // rotations of the turbo types (as CodecOptions::seed)
  // Benchmarks: the attention decode grid of every layer's cache ("auto", "split", "stream";
  // tq::cuda::DecodeGrid). Anything else is a tq::Error.
  std::string decode_grid = "auto";
  // Linear layers of up to small_linear_rows rows (≤ 16) by the small-batch kernel with the
  // element-wise steps folded in (linear.h); above, cuBLAS and the separate kernels. 8: where
  // the kernel measured faster than cuBLAS on the H200 (docs/gpu-runtime.md; at 16 rows
  // cuBLAS is faster). small_linear false: cuBLAS at every size (benchmarks).
  bool small_linear = true;
  int small_linear_rows = 8;
  // Programmatic dependent launch of the runtime's own kernels (sm_90): a kernel starts
  // (and streams its weights) while the previous one finishes.
  bool pdl = true;
};

class GpuRuntime {
 public:
  GpuRuntime(const GpuModel& model, const RuntimeConfig& cfg);
  ~GpuRuntime();
  GpuRuntime(const GpuRuntime&) = delete;
  GpuRuntime& operator=(const GpuRuntime&) = delete;

  const RuntimeConfig& config() const { return cfg_; }
  // Benchmarks: switch CUDA graphs of the decode step on or off.
  void set_graphs(bool on);
  // Sequences. new_seq: tq::Error when every slot is taken.
  int new_seq();
  void free_seq(int seq);
  int seq_len(int seq) const;
  // Pages for n_total tokens of seq; false (nothing allocated) when the pool lacks them.
  bool try_reserve(int seq, int n_total);
  int pages_free() const;
  int pages_total() const;
  int pages_for(int tokens) const { return (tokens + 31) / 32; }

  // Runs n prompt tokens of seq (chunks of max_chunk tokens: each chunk's K/V appended, then
  // its queries attend to the stored cache causally). last_logits (optional): the logits of
  // the last token. tq::Error when the pool is full or the context too long.
  // rows (optional): the logits of rows [rows_from, n) passed to rows(r0, nr, logits[nr][vocab])
  // in order, up to max_seqs rows at a time, as each chunk finishes (perplexity).
  void prefill(int seq, const int32_t* tokens, int n, std::vector<float>* last_logits,
               int rows_from = -1,
               const std::function<void(int r0, int nr, const float* logits)>& rows = nullptr);

  // One decode step: token tokens[i] of seqs[i] at position seq_len(seqs[i]), all sequences in
  // one batch. sampled (optional): the next token of each (greedy when temperature ≤ 0);
  // logits (optional): [B][vocab].
  void decode(const std::vector<int>& seqs, const std::vector<int32_t>& tokens,
              std::vector<int32_t>* sampled, std::vector<float>* logits, float temperature = 0.f,
              uint64_t seed = 0);

  // Benchmarks: append n random K/V tokens to every layer of each sequence directly (no
  // forward pass), as if a prompt of n tokens had been run.
  void fill_random(const std::vector<int>& seqs, int n, uint64_t seed);
  // Benchmarks: `steps` decode steps of seqs, each feeding back its greedy token; the time of
  // each step in ms (device events around each step).
  std::vector<double> timed_decode(const std::vector<int>& seqs, int steps);

  // Bytes of one 32-token page over all layers; of the whole pool.
  size_t page_bytes_all_layers() const;
  size_t pool_bytes() const;
  // Whether decode steps ran as CUDA graphs, or why not (a capture that failed).
  std::string graph_status() const;

  struct Impl;

 private:
  RuntimeConfig cfg_;
  std::unique_ptr<Impl> impl_;
};

// Bytes of one 32-token page of one layer for a cache type and model shape (tq::Error for a
// type the GPU cannot serve).
size_t page_bytes_for(const std::string& cache_type, const LlamaHparams& hp);
std::string gpu_name();
bool gpu_available();  // a CUDA device can be used

// Free and total device memory in bytes.
void device_memory(size_t* free_b, size_t* total_b);
// Device-to-device copy bandwidth (read + write counted), TB/s, over `bytes` (median of runs).
double measure_copy_tbps(size_t bytes);

}  // namespace tq::gpu
