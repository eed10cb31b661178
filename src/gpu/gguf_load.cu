// turboquant GPU runtime — a llama / qwen2 GGUF's weights on the GPU in bf16 (DESIGN.md §9).
// The hyperparameter keys are those LlamaModel::load reads (src/model/llama.cpp); the tensors
// are dequantized on the host row by row (any type dequantize() handles) and packed into the
// device layout of GpuModel (Q|K|V rows, gate|up rows).
#include <cuda_runtime.h>

#include <cmath>

#include "core/half.h"
#include "cuda/consts.cuh"
#include "gpu/model_impl.h"
#include "model/gguf.h"
#include "tq/error.h"

namespace tq::gpu {

namespace {

using tq::cuda::check_cuda;

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// The tensor dequantized to f32 after checking its shape (ggml order {in, out} or {n}).
std::vector<float> host_f32(const GgufFile& f, const std::string& name, std::vector<int64_t> want) {
  const GgufTensor& t = f.tensor(name);
  std::vector<int64_t> ne = t.ne;
  while (ne.size() > want.size() && ne.back() == 1) ne.pop_back();
  if (ne != want)
    throw Error("tensor '" + name + "' has shape " + shape_str(t.ne) + ", expected " +
                shape_str(want));
  if (!ggml_can_dequantize(t.type))
    throw Error("tensor '" + name + "' has unsupported type " + ggml_type_name(t.type));
  const int64_t row = ne[0], rows = t.n_elements() / row, bs = ggml_block_size(t.type);
  if (row % bs != 0) throw Error("tensor '" + name + "': row not a whole number of blocks");
  const size_t row_bytes = size_t(row / bs) * ggml_block_bytes(t.type);
  if (row_bytes * size_t(rows) > t.nbytes) throw Error("tensor '" + name + "' is truncated");
  std::vector<float> out(size_t(row * rows));
  for (int64_t r = 0; r < rows; ++r)
    dequantize(t.type, t.data + size_t(r) * row_bytes, out.data() + size_t(r * row), row);
  return out;
}

}  // namespace

std::unique_ptr<GpuModel> GpuModel::from_gguf(const GgufFile& f) {
  LlamaHparams hp;
  hp.arch = f.architecture();
  const std::string a = hp.arch;
  if (a == "llama" || a == "mistral" || a == "smollm") hp.rope = RopePairing::kNormal;
  else if (a == "qwen2") hp.rope = RopePairing::kNeox;
  else throw Error("GPU: unsupported architecture '" + a + "' (supported: llama, qwen2)");
  hp.n_layer = int(f.get_int(a + ".block_count"));
  hp.n_embd = int(f.get_int(a + ".embedding_length"));
  hp.n_ff = int(f.get_int(a + ".feed_forward_length"));
  hp.n_head = int(f.get_int(a + ".attention.head_count"));
  hp.n_kv_head = int(f.get_int(a + ".attention.head_count_kv", hp.n_head));
  hp.rms_eps = float(f.get_float(a + ".attention.layer_norm_rms_epsilon", 1e-5));
  hp.rope_base = float(f.get_float(a + ".rope.freq_base", 10000.0));
  hp.n_ctx_train = int(f.get_int(a + ".context_length", 2048));
  if (hp.n_layer <= 0 || hp.n_embd <= 0 || hp.n_ff <= 0 || hp.n_head <= 0 ||
      hp.n_kv_head <= 0 || hp.n_head % hp.n_kv_head != 0)
    throw Error("model: inconsistent hyperparameters (layers, width, heads)");
  hp.head_dim = int(f.get_int(a + ".attention.key_length", hp.n_embd / hp.n_head));
  if (f.get_int(a + ".attention.value_length", hp.head_dim) != hp.head_dim ||
      f.get_int(a + ".rope.dimension_count", hp.head_dim) != hp.head_dim)
    throw Error("GPU: key/value head sizes differ or RoPE is partial (unsupported)");
  if (f.get_string(a + ".rope.scaling.type", "none") != "none")
    throw Error("GPU: RoPE scaling is not supported on the GPU yet");
  hp.has_qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  const GgufTensor& te = f.tensor("token_embd.weight");
  if (te.ne.size() < 2 || te.ne[0] != hp.n_embd)
    throw Error("tensor 'token_embd.weight' has shape " + shape_str(te.ne));
  hp.n_vocab = int(te.ne[1]);
  hp.tied_output = f.find_tensor("output.weight") == nullptr;

  std::unique_ptr<GpuModel> m(new GpuModel());
  m->hp_ = hp;
  m->impl_ = std::make_unique<Impl>();
  Impl& I = *m->impl_;
  const int E = hp.n_embd, D = hp.head_dim, F = hp.n_ff, V = hp.n_vocab;
  const int HQ = hp.n_head * D, HK = hp.n_kv_head * D;
  auto alloc = [&](size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      throw Error("GPU: out of memory for the model's weights");
    }
    I.allocations.push_back(p);
    m->bytes_ += bytes;
    return p;
  };
  // rows of a bf16 device matrix from one GGUF Linear
  auto put16 = [&](uint16_t* dst, const std::string& name, int in, int out) {
    const std::vector<float> h = host_f32(f, name, {in, out});
    std::vector<uint16_t> b(h.size());
    for (size_t i = 0; i < h.size(); ++i) b[i] = f32_to_bf16(h[i]);
    check_cuda(int(cudaMemcpy(dst, b.data(), b.size() * 2, cudaMemcpyHostToDevice)), "weights");
  };
  auto mat = [&](size_t rows, size_t in) { return static_cast<uint16_t*>(alloc(rows * in * 2)); };
  auto vec = [&](float* dst, const std::string& name, int n) {
    const std::vector<float> h = host_f32(f, name, {n});
    check_cuda(int(cudaMemcpy(dst, h.data(), h.size() * 4, cudaMemcpyHostToDevice)), "weights");
  };
  I.tok_embd = mat(V, E);
  put16(I.tok_embd, "token_embd.weight", E, V);
  if (hp.tied_output) {
    I.output = I.tok_embd;
  } else {
    I.output = mat(V, E);
    put16(I.output, "output.weight", E, V);
  }
  I.output_norm = static_cast<float*>(alloc(size_t(E) * 4));
  vec(I.output_norm, "output_norm.weight", E);
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Impl::Layer L;
    L.wqkv = mat(HQ + 2 * HK, E);
    put16(L.wqkv, p + "attn_q.weight", E, HQ);
    put16(L.wqkv + size_t(HQ) * E, p + "attn_k.weight", E, HK);
    put16(L.wqkv + size_t(HQ + HK) * E, p + "attn_v.weight", E, HK);
    L.wo = mat(E, HQ);
    put16(L.wo, p + "attn_output.weight", HQ, E);
    L.wgu = mat(2 * size_t(F), E);
    put16(L.wgu, p + "ffn_gate.weight", E, F);
    put16(L.wgu + size_t(F) * E, p + "ffn_up.weight", E, F);
    L.wdown = mat(E, F);
    put16(L.wdown, p + "ffn_down.weight", F, E);
    L.attn_norm = static_cast<float*>(alloc(size_t(E) * 4));
    vec(L.attn_norm, p + "attn_norm.weight", E);
    L.ffn_norm = static_cast<float*>(alloc(size_t(E) * 4));
    vec(L.ffn_norm, p + "ffn_norm.weight", E);
    if (hp.has_qkv_bias) {
      L.bqkv = static_cast<float*>(alloc(size_t(HQ + 2 * HK) * 4));
      vec(L.bqkv, p + "attn_q.bias", HQ);
      vec(L.bqkv + HQ, p + "attn_k.bias", HK);
      vec(L.bqkv + HQ + HK, p + "attn_v.bias", HK);
    }
    I.layers.push_back(L);
  }
  // RoPE frequencies θ_i = base^(−2i/d), divided by rope_freqs.weight when present
  std::vector<float> factors;
  if (f.find_tensor("rope_freqs.weight")) factors = host_f32(f, "rope_freqs.weight", {D / 2});
  I.inv_freq_host.resize(D / 2);
  for (int i = 0; i < D / 2; ++i) {
    double v = std::pow(double(hp.rope_base), -2.0 * i / D);
    if (!factors.empty()) v /= factors[i];
    I.inv_freq_host[i] = float(v);
  }
  I.inv_freq = static_cast<float*>(alloc(sizeof(float) * D / 2));
  check_cuda(int(cudaMemcpy(I.inv_freq, I.inv_freq_host.data(), sizeof(float) * D / 2,
                            cudaMemcpyHostToDevice)),
             "inv_freq");
  return m;
}

}  // namespace tq::gpu
