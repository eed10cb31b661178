// turboquant GPU runtime — synthetic models: named shapes and seeded random bf16 weights
// generated on the GPU (DESIGN.md §9: real weights cannot be brought to the device machine, so
// throughput is measured on random weights of the real shapes).
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/consts.cuh"
#include "gpu/model_impl.h"
#include "gpu/ops.h"
#include "tq/error.h"

namespace tq::gpu {

using tq::cuda::check_cuda;
#define GCK(x) check_cuda(int(x), #x)

LlamaHparams synthetic_hparams(const std::string& name) {
  LlamaHparams hp;
  hp.rms_eps = 1e-5f;
  if (name == "llama3-8b") {
    hp.arch = "llama";
    hp.n_layer = 32;
    hp.n_embd = 4096;
    hp.n_head = 32;
    hp.n_kv_head = 8;
    hp.head_dim = 128;
    hp.n_ff = 14336;
    hp.n_vocab = 128256;
    hp.rope_base = 500000.f;
    hp.n_ctx_train = 131072;
  } else if (name == "tiny" || name == "tiny-qwen2") {
    const bool qwen = name == "tiny-qwen2";
    hp.arch = qwen ? "qwen2" : "llama";
    hp.n_layer = 2;
    hp.n_embd = 256;
    hp.n_head = 4;
    hp.n_kv_head = 2;
    hp.head_dim = 64;
    hp.n_ff = 512;
    hp.n_vocab = 512;
    hp.rope_base = qwen ? 1000000.f : 10000.f;
    hp.rope = qwen ? RopePairing::kNeox : RopePairing::kNormal;
    hp.has_qkv_bias = qwen;
    hp.n_ctx_train = 32768;
  } else {
    throw Error("unknown synthetic model '" + name + "' (known: " + synthetic_names() + ")");
  }
  return hp;
}

const char* synthetic_names() { return "llama3-8b, tiny, tiny-qwen2"; }

namespace {

// Tensor seeds: one per (layer, tensor kind), so that any weight can be regenerated alone.
enum Kind : uint64_t {
  kEmbd = 1, kOut, kOutNorm, kQkv, kWo, kGu, kDown, kAttnNorm, kFfnNorm, kBias
};
uint64_t tensor_seed(uint64_t seed, int layer, Kind k) {
  return mix64(seed * 0x100000001B3ull + uint64_t(layer + 1) * 64 + k);
}

}  // namespace

GpuModel::~GpuModel() {
  if (impl_)
    for (void* p : impl_->allocations) cudaFree(p);
}

std::unique_ptr<GpuModel> GpuModel::synthetic(const LlamaHparams& hp, uint64_t seed) {
  std::unique_ptr<GpuModel> m(new GpuModel());
  m->hp_ = hp;
  m->impl_ = std::make_unique<Impl>();
  Impl& I = *m->impl_;
  const int E = hp.n_embd, D = hp.head_dim, F = hp.n_ff, V = hp.n_vocab;
  const size_t QKV = size_t(hp.n_head + 2 * hp.n_kv_head) * D, HQ = size_t(hp.n_head) * D;
  auto alloc = [&](size_t bytes) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw Error("GPU: out of memory for the model's weights (" +
                  std::to_string(bytes >> 20) + " MiB more)");
    }
    I.allocations.push_back(p);
    m->bytes_ += bytes;
    return p;
  };
  // uniform ±a has variance a²/3: a = √(3/in) gives unit output variance for unit input
  auto matrix = [&](size_t rows, size_t in, int layer, Kind k) {
    auto* w = static_cast<uint16_t*>(alloc(rows * in * 2));
    launch_init_bf16(w, rows * in, tensor_seed(seed, layer, k), std::sqrt(3.f / float(in)), 0.f,
                     nullptr);
    return w;
  };
  auto vec = [&](size_t n, int layer, Kind k, float scale, float offset) {
    auto* w = static_cast<float*>(alloc(n * 4));
    launch_init_f32(w, n, tensor_seed(seed, layer, k), scale, offset, nullptr);
    return w;
  };
  I.tok_embd = static_cast<uint16_t*>(alloc(size_t(V) * E * 2));
  launch_init_bf16(I.tok_embd, size_t(V) * E, tensor_seed(seed, -1, kEmbd), 1.f, 0.f, nullptr);
  I.output = matrix(V, E, -1, kOut);
  I.output_norm = vec(E, -1, kOutNorm, 0.1f, 1.f);
  for (int l = 0; l < hp.n_layer; ++l) {
    Impl::Layer L;
    L.wqkv = matrix(QKV, E, l, kQkv);
    L.wo = matrix(E, HQ, l, kWo);
    L.wgu = matrix(2 * size_t(F), E, l, kGu);
    L.wdown = matrix(E, F, l, kDown);
    L.attn_norm = vec(E, l, kAttnNorm, 0.1f, 1.f);
    L.ffn_norm = vec(E, l, kFfnNorm, 0.1f, 1.f);
    if (hp.has_qkv_bias) L.bqkv = vec(QKV, l, kBias, 0.5f, 0.f);
    I.layers.push_back(L);
  }
  I.inv_freq_host.resize(D / 2);
  for (int i = 0; i < D / 2; ++i)
    I.inv_freq_host[i] = float(std::pow(double(hp.rope_base), -2.0 * i / D));
  I.inv_freq = static_cast<float*>(alloc(sizeof(float) * D / 2));
  GCK(cudaMemcpy(I.inv_freq, I.inv_freq_host.data(), sizeof(float) * D / 2,
                 cudaMemcpyHostToDevice));
  GCK(cudaDeviceSynchronize());
  return m;
}

size_t GpuModel::step_weight_bytes() const {
  // a tied output matrix is the embedding table itself, read whole by the logits GEMM
  return hp_.tied_output ? bytes_ : bytes_ - size_t(hp_.n_vocab) * hp_.n_embd * 2;
}

HostWeights GpuModel::download() const {
  const Impl& I = *impl_;
  const int E = hp_.n_embd, D = hp_.head_dim, F = hp_.n_ff, V = hp_.n_vocab;
  const size_t QKV = size_t(hp_.n_head + 2 * hp_.n_kv_head) * D, HQ = size_t(hp_.n_head) * D;
  HostWeights h;
  auto get16 = [](std::vector<uint16_t>& v, const uint16_t* p, size_t n) {
    v.resize(n);
    GCK(cudaMemcpy(v.data(), p, n * 2, cudaMemcpyDeviceToHost));
  };
  auto get32 = [](std::vector<float>& v, const float* p, size_t n) {
    v.resize(n);
    GCK(cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost));
  };
  get16(h.tok_embd, I.tok_embd, size_t(V) * E);
  get16(h.output, I.output, size_t(V) * E);
  get32(h.output_norm, I.output_norm, E);
  h.layers.resize(hp_.n_layer);
  for (int l = 0; l < hp_.n_layer; ++l) {
    const Impl::Layer& L = I.layers[l];
    HostWeights::Layer& H = h.layers[l];
    get16(H.wqkv, L.wqkv, QKV * E);
    get16(H.wo, L.wo, size_t(E) * HQ);
    get16(H.wgu, L.wgu, 2 * size_t(F) * E);
    get16(H.wdown, L.wdown, size_t(E) * F);
    get32(H.attn_norm, L.attn_norm, E);
    get32(H.ffn_norm, L.ffn_norm, E);
    if (L.bqkv) get32(H.bqkv, L.bqkv, QKV);
  }
  h.inv_freq = I.inv_freq_host;
  return h;
}

}  // namespace tq::gpu
