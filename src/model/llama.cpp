// turboquant — Llama-family forward pass (see llama.h).
#include "model/llama.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "model/gguf.h"
#include "model/model_config.h"

namespace tq {

struct LlamaModel::Layer {
  std::vector<float> attn_norm, wq, wk, wv, wo, bq, bk, bv, ffn_norm, w_gate, w_up, w_down;
};

namespace {

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// Dequantizes a tensor to f32, checking its shape (ne, ggml order).
std::vector<float> load_tensor(const GgufFile& f, const std::string& name,
                               std::vector<int64_t> want) {
  const GgufTensor& t = f.tensor(name);
  std::vector<int64_t> ne = t.ne;
  while (ne.size() > want.size() && ne.back() == 1) ne.pop_back();
  if (ne != want)
    throw Error("tensor '" + name + "' has shape " + shape_str(t.ne) + ", expected " +
                shape_str(want));
  if (!ggml_can_dequantize(t.type))
    throw Error("tensor '" + name + "' has unsupported type " + ggml_type_name(t.type));
  const int64_t n = t.n_elements();
  std::vector<float> out(static_cast<size_t>(n));
  const int64_t row = ne[0];
  const int64_t rows = n / row;
  const int64_t bs = ggml_block_size(t.type);
  if (row % bs != 0)
    throw Error("tensor '" + name + "': row length " + std::to_string(row) +
                " is not a multiple of the " + ggml_type_name(t.type) + " block");
  const size_t row_bytes = size_t(row / bs) * ggml_block_bytes(t.type);
  if (row_bytes * size_t(rows) > t.nbytes) throw Error("tensor '" + name + "' is truncated");
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    dequantize(t.type, t.data + size_t(r) * row_bytes, out.data() + size_t(r) * row, row);
  return out;
}

// Y (n × out) = X (n × in) · Wᵀ, W: out × in row-major (a GGUF Linear, ne = {in, out}).
// beta = 1 adds to Y. One thread pool only: OpenBLAS runs single-threaded (set_threads) and the
// output columns are split over the OpenMP threads — on a shared 2-core machine, OpenBLAS's
// own pthread pool spinning against OpenMP's made prefill several times slower (measured 26 vs
// 295 tok/s). One token goes through sgemv: 105 µs vs 520 µs for sgemm with M = 1 on a
// 1536×576 weight, OpenBLAS 0.3.21, 1 thread.
void linear(const float* X, int n, const std::vector<float>& W, int in, int out, float* Y,
            float beta = 0.f) {
  const int nt = std::min(omp_get_max_threads(), std::max(1, out / 64));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int c0 = int(int64_t(out) * t / T), c1 = int(int64_t(out) * (t + 1) / T);
    if (c1 > c0) {
      const float* Wc = W.data() + size_t(c0) * in;
      if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, c1 - c0, in, 1.f, Wc, in, X, 1, beta, Y + c0,
                    1);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, c1 - c0, in, 1.f, X, in, Wc, in,
                    beta, Y + c0, out);
    }
  }
}

void rms_norm(const float* x, int n, int dim, const std::vector<float>& w, float eps, float* y) {
#pragma omp parallel for schedule(static) if (n > 4)
  for (int t = 0; t < n; ++t) {
    const float* a = x + size_t(t) * dim;
    float* b = y + size_t(t) * dim;
    double ss = 0;
    for (int j = 0; j < dim; ++j) ss += double(a[j]) * a[j];
    const float r = float(1.0 / std::sqrt(ss / dim + eps));
    for (int j = 0; j < dim; ++j) b[j] = a[j] * r * w[j];
  }
}

}  // namespace

LlamaModel::~LlamaModel() = default;

int auto_threads() {
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  double load = 0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = 0;
    std::fclose(f);
  }
  // Threads that wait at OpenMP barriers for a descheduled sibling make an oversubscribed
  // machine several times slower than one thread (measured: decode 13 vs 1.3 tok/s at load 9
  // on 2 cores), so a busy machine gets one thread.
  return load >= cores - 0.5 ? 1 : cores;
}

void set_threads(int n) {
  omp_set_num_threads(n > 0 ? n : auto_threads());
  openblas_set_num_threads(1);
}

std::unique_ptr<LlamaModel> LlamaModel::load(const GgufFile& f) {
  openblas_set_num_threads(1);  // see linear()
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  LlamaHparams& hp = m->hp_;
  hp = read_llama_hparams(f);  // validated sizes (model/model_config.h)
  check_tensors_finite(f);
  const int E = hp.n_embd, D = hp.head_dim, Hq = hp.n_head * D, Hk = hp.n_kv_head * D;
  m->tok_embd_ = load_tensor(f, "token_embd.weight", {E, hp.n_vocab});
  m->output_norm_ = load_tensor(f, "output_norm.weight", {E});
  hp.tied_output = f.find_tensor("output.weight") == nullptr;
  if (!hp.tied_output) m->output_ = load_tensor(f, "output.weight", {E, hp.n_vocab});
  m->layers_.resize(hp.n_layer);
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Layer& L = m->layers_[l];
    L.attn_norm = load_tensor(f, p + "attn_norm.weight", {E});
    L.wq = load_tensor(f, p + "attn_q.weight", {E, Hq});
    L.wk = load_tensor(f, p + "attn_k.weight", {E, Hk});
    L.wv = load_tensor(f, p + "attn_v.weight", {E, Hk});
    L.wo = load_tensor(f, p + "attn_output.weight", {Hq, E});
    if (hp.has_qkv_bias) {
      L.bq = load_tensor(f, p + "attn_q.bias", {Hq});
      L.bk = load_tensor(f, p + "attn_k.bias", {Hk});
      L.bv = load_tensor(f, p + "attn_v.bias", {Hk});
    }
    L.ffn_norm = load_tensor(f, p + "ffn_norm.weight", {E});
    L.w_gate = load_tensor(f, p + "ffn_gate.weight", {E, hp.n_ff});
    L.w_up = load_tensor(f, p + "ffn_up.weight", {E, hp.n_ff});
    L.w_down = load_tensor(f, p + "ffn_down.weight", {hp.n_ff, E});
  }
  // RoPE frequencies θ_i = base^(−2i/d), optionally divided by per-dimension factors
  // (rope_freqs.weight, Llama 3.1 style).
  m->inv_freq_.resize(D / 2);
  std::vector<float> factors;
  if (f.find_tensor("rope_freqs.weight")) factors = load_tensor(f, "rope_freqs.weight", {D / 2});
  for (int i = 0; i < D / 2; ++i) {
    double v = std::pow(double(hp.rope_base), -2.0 * i / D);
    if (!factors.empty()) v /= factors[i];
    m->inv_freq_[i] = float(v);
  }
  return m;
}

KvShape LlamaModel::kv_shape() const {
  KvShape s;
  s.n_layer = hp_.n_layer;
  s.n_kv_head = hp_.n_kv_head;
  s.head_dim = hp_.head_dim;
  s.rope = hp_.rope;
  s.rope_inv_freq = inv_freq_;
  s.rope_freq_scale = hp_.rope_freq_scale;
  return s;
}

void LlamaModel::logits(const float* hidden, int n, float* out) const {
  const std::vector<float>& W = hp_.tied_output ? tok_embd_ : output_;
  linear(hidden, n, W, hp_.n_embd, hp_.n_vocab, out);
}

void LlamaModel::forward(KvCache& cache, int seq, const int32_t* tokens, int n,
                         std::vector<float>* hidden_out, std::vector<float>* logits_last,
                         AttnPath path) const {
  if (n <= 0) return;
  const int E = hp_.n_embd, D = hp_.head_dim, NH = hp_.n_head, NKV = hp_.n_kv_head;
  const int Hq = NH * D, Hk = NKV * D, F = hp_.n_ff;
  const int pos0 = cache.seq_len(seq, 0);
  if (pos0 + n > hp_.n_ctx_train)
    throw Error("context of " + std::to_string(pos0 + n) + " tokens exceeds the model's " +
                "context length " + std::to_string(hp_.n_ctx_train));
  cache.reserve(seq, pos0 + n);
  for (int t = 0; t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= hp_.n_vocab)
      throw Error("token id " + std::to_string(tokens[t]) + " out of range [0, " +
                  std::to_string(hp_.n_vocab) + ")");

  std::vector<float> x(size_t(n) * E), xn(size_t(n) * E);
  std::vector<float> q(size_t(n) * Hq), k(size_t(n) * Hk), v(size_t(n) * Hk), att(size_t(n) * Hq);
  std::vector<float> g(size_t(n) * F), u(size_t(n) * F);
  for (int t = 0; t < n; ++t)
    std::memcpy(&x[size_t(t) * E], &tok_embd_[size_t(tokens[t]) * E], sizeof(float) * E);

  // cos/sin per (token, pair).
  const int P = D / 2;
  std::vector<float> cs(size_t(n) * P), sn(size_t(n) * P);
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < P; ++i) {
      const double th = double(pos0 + t) * hp_.rope_freq_scale * inv_freq_[i];
      cs[size_t(t) * P + i] = float(std::cos(th));
      sn[size_t(t) * P + i] = float(std::sin(th));
    }
  const bool neox = hp_.rope == RopePairing::kNeox;
  auto rope = [&](float* m, int heads) {
#pragma omp parallel for schedule(static) if (n > 4)
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h) {
        float* r = m + (size_t(t) * heads + h) * D;
        const float* c = &cs[size_t(t) * P];
        const float* s = &sn[size_t(t) * P];
        for (int i = 0; i < P; ++i) {
          const int ia = neox ? i : 2 * i, ib = neox ? i + P : 2 * i + 1;
          const float a0 = r[ia], b0 = r[ib];
          r[ia] = a0 * c[i] - b0 * s[i];
          r[ib] = a0 * s[i] + b0 * c[i];
        }
      }
  };
  auto add_bias = [&](float* m, const std::vector<float>& b, int w) {
    for (int t = 0; t < n; ++t)
      for (int j = 0; j < w; ++j) m[size_t(t) * w + j] += b[j];
  };
  const float scale = 1.f / std::sqrt(float(D));

  for (int l = 0; l < hp_.n_layer; ++l) {
    const Layer& L = layers_[l];
    rms_norm(x.data(), n, E, L.attn_norm, hp_.rms_eps, xn.data());
    linear(xn.data(), n, L.wq, E, Hq, q.data());
    linear(xn.data(), n, L.wk, E, Hk, k.data());
    linear(xn.data(), n, L.wv, E, Hk, v.data());
    if (hp_.has_qkv_bias) {
      add_bias(q.data(), L.bq, Hq);
      add_bias(k.data(), L.bk, Hk);
      add_bias(v.data(), L.bv, Hk);
    }
    rope(q.data(), NH);
    rope(k.data(), NKV);
    // Store first, then attend to what is stored (SPEC §3 "Honest evaluation").
    cache.append(seq, l, k.data(), v.data(), n);
    attention(cache, seq, l, NH, q.data(), n, pos0, scale, att.data(), path);
    linear(att.data(), n, L.wo, Hq, E, x.data(), 1.f);
    rms_norm(x.data(), n, E, L.ffn_norm, hp_.rms_eps, xn.data());
    linear(xn.data(), n, L.w_gate, E, F, g.data());
    linear(xn.data(), n, L.w_up, E, F, u.data());
#pragma omp parallel for schedule(static) if (n > 4)
    for (int64_t i = 0; i < int64_t(n) * F; ++i) {
      const float a = g[i];
      g[i] = a / (1.f + std::exp(-a)) * u[i];
    }
    linear(g.data(), n, L.w_down, F, E, x.data(), 1.f);
  }
  rms_norm(x.data(), n, E, output_norm_, hp_.rms_eps, xn.data());
  if (logits_last) {
    logits_last->resize(hp_.n_vocab);
    logits(&xn[size_t(n - 1) * E], 1, logits_last->data());
  }
  if (hidden_out) *hidden_out = std::move(xn);
}

}  // namespace tq
