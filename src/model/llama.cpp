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
  std::vector<float> attn_norm, bq, bk, bv, ffn_norm;
  std::vector<float> q_norm, k_norm, post_attn_norm, post_ffn_norm;  // gemma3 only
  QMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

namespace {

// The 1-D tensors (norm weights, biases, RoPE factors) as f32; ne = {n}.
std::vector<float> load_tensor(const GgufFile& f, const std::string& name,
                               std::vector<int64_t> want) {
  TQ_ASSERT(want.size() == 1);
  return vector_of(f, name, want[0]);
}

// A weight matrix, ne = {in, out}: a view into the mapped file.
QMatrix load_matrix(const GgufFile& f, const std::string& name, std::vector<int64_t> want) {
  TQ_ASSERT(want.size() == 2);
  return qmatrix_of(f, name, want[0], want[1]);
}

// Y (n × out) = X (n × in) · Wᵀ (a GGUF Linear, ne = {in, out}); beta = 1 adds to Y.
void linear(const float* X, int n, const QMatrix& W, int in, int out, float* Y,
            float beta = 0.f) {
  TQ_ASSERT(W.cols == in && W.rows == out);
  matmul(W, X, n, Y, beta != 0.f);
}

// n rows of dim: y = x / rms(x) · w (y may be x).
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

// GELU, tanh approximation (Gemma's gelu_pytorch_tanh).
float gelu_tanh(float x) {
  constexpr float kC = 0.7978845608028654f;  // sqrt(2/π)
  return 0.5f * x * (1.f + std::tanh(kC * (x + 0.044715f * x * x * x)));
}

// RoPE frequencies θ_i = base^(−2i/d), optionally divided by per-dimension factors.
std::vector<float> rope_inv_freq(double base, int d, const std::vector<float>& factors) {
  std::vector<float> f(size_t(d) / 2);
  for (int i = 0; i < d / 2; ++i) {
    double v = std::pow(base, -2.0 * i / d);
    if (!factors.empty()) v /= factors[size_t(i)];
    f[size_t(i)] = float(v);
  }
  return f;
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
  m->tok_embd_ = load_matrix(f, "token_embd.weight", {E, hp.n_vocab});
  m->output_norm_ = load_tensor(f, "output_norm.weight", {E});
  hp.tied_output = f.find_tensor("output.weight") == nullptr;
  m->output_ = hp.tied_output ? m->tok_embd_ : load_matrix(f, "output.weight", {E, hp.n_vocab});
  m->layers_.resize(hp.n_layer);
  for (int l = 0; l < hp.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Layer& L = m->layers_[l];
    L.attn_norm = load_tensor(f, p + "attn_norm.weight", {E});
    L.wq = load_matrix(f, p + "attn_q.weight", {E, Hq});
    L.wk = load_matrix(f, p + "attn_k.weight", {E, Hk});
    L.wv = load_matrix(f, p + "attn_v.weight", {E, Hk});
    L.wo = load_matrix(f, p + "attn_output.weight", {Hq, E});
    if (hp.has_qkv_bias) {
      L.bq = load_tensor(f, p + "attn_q.bias", {Hq});
      L.bk = load_tensor(f, p + "attn_k.bias", {Hk});
      L.bv = load_tensor(f, p + "attn_v.bias", {Hk});
    }
    if (hp.qk_norm) {
      L.q_norm = load_tensor(f, p + "attn_q_norm.weight", {D});
      L.k_norm = load_tensor(f, p + "attn_k_norm.weight", {D});
    }
    if (hp.post_norms) {
      L.post_attn_norm = load_tensor(f, p + "post_attention_norm.weight", {E});
      L.post_ffn_norm = load_tensor(f, p + "post_ffw_norm.weight", {E});
    }
    L.ffn_norm = load_tensor(f, p + "ffn_norm.weight", {E});
    L.w_gate = load_matrix(f, p + "ffn_gate.weight", {E, hp.n_ff});
    L.w_up = load_matrix(f, p + "ffn_up.weight", {E, hp.n_ff});
    L.w_down = load_matrix(f, p + "ffn_down.weight", {hp.n_ff, E});
  }
  // Per-dimension RoPE factors: rope_freqs.weight (Llama 3.1 style), global layers only.
  std::vector<float> factors;
  if (f.find_tensor("rope_freqs.weight")) factors = load_tensor(f, "rope_freqs.weight", {D / 2});
  m->inv_freq_ = rope_inv_freq(hp.rope_base, D, factors);
  if (std::any_of(hp.layer_window.begin(), hp.layer_window.end(), [](int w) { return w > 0; }))
    m->inv_freq_local_ = rope_inv_freq(hp.rope_base_local, D, {});
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
  if (!inv_freq_local_.empty())
    for (int l = 0; l < hp_.n_layer; ++l) {
      s.layer_rope_inv_freq.push_back(local(l) ? inv_freq_local_ : inv_freq_);
      s.layer_rope_freq_scale.push_back(local(l) ? 1.f : hp_.rope_freq_scale);
    }
  return s;
}

void LlamaModel::logits(const float* hidden, int n, float* out) const {
  linear(hidden, n, output_, hp_.n_embd, hp_.n_vocab, out);
  if (const float cap = hp_.logit_softcap; cap > 0) {
    const int64_t total = int64_t(n) * hp_.n_vocab;
#pragma omp parallel for schedule(static) if (n > 4)
    for (int64_t i = 0; i < total; ++i) out[i] = cap * std::tanh(out[i] / cap);
  }
}

size_t LlamaModel::weight_bytes() const {
  size_t b = tok_embd_.bytes() + (hp_.tied_output ? 0 : output_.bytes());
  b += output_norm_.size() * 4;
  for (const Layer& L : layers_) {
    for (const QMatrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      b += w->bytes();
    b += 4 * (L.attn_norm.size() + L.ffn_norm.size() + L.bq.size() + L.bk.size() + L.bv.size() +
              L.q_norm.size() + L.k_norm.size() + L.post_attn_norm.size() +
              L.post_ffn_norm.size());
  }
  return b;
}

size_t LlamaModel::activation_bytes(int batch) const {
  const size_t n = size_t(std::max(1, std::min(batch, max_batch())));
  const size_t E = hp_.n_embd, Hq = size_t(hp_.n_head) * hp_.head_dim;
  const size_t Hk = size_t(hp_.n_kv_head) * hp_.head_dim, F = hp_.n_ff;
  // forward_chunk's buffers (x, xn, q, k, v, att, g, u, two RoPE tables, gemma3's
  // post-norm scratch), the logits, and the largest quantized-activation copy a product makes
  // (at most 4 bytes per input value).
  const size_t floats = n * (2 * E + 2 * Hq + 2 * Hk + 2 * F + 2 * hp_.head_dim) +
                        (hp_.post_norms ? n * E : 0) + hp_.n_vocab;
  return 4 * floats + 4 * n * std::max(E, F);
}

void LlamaModel::forward(KvCache& cache, int seq, const int32_t* tokens, int n,
                         std::vector<float>* hidden_out, std::vector<float>* logits_last,
                         AttnPath path) const {
  if (n <= 0) return;
  if (n <= max_batch()) return forward_chunk(cache, seq, tokens, n, hidden_out, logits_last, path);
  if (hidden_out) hidden_out->clear();
  std::vector<float> h;
  for (int t0 = 0; t0 < n; t0 += max_batch()) {
    const int m = std::min(max_batch(), n - t0);
    const bool last = t0 + m == n;
    forward_chunk(cache, seq, tokens + t0, m, hidden_out ? &h : nullptr,
                  last ? logits_last : nullptr, path);
    if (hidden_out) hidden_out->insert(hidden_out->end(), h.begin(), h.end());
  }
}

void LlamaModel::forward_span(KvCache& cache, int seq, const int32_t* tokens, const float* x_in,
                              int first_layer, int n, std::vector<float>* hidden_out,
                              std::vector<std::vector<float>>* taps) const {
  if (first_layer < 0 || first_layer >= hp_.n_layer)
    throw Error("forward_from: layer " + std::to_string(first_layer) + " outside [0, " +
                std::to_string(hp_.n_layer) + ")");
  if (hidden_out) hidden_out->clear();
  if (taps) taps->assign(size_t(hp_.n_layer), {});
  std::vector<float> h;
  std::vector<std::vector<float>> t;
  for (int t0 = 0; t0 < n; t0 += max_batch()) {
    const int m = std::min(max_batch(), n - t0);
    forward_chunk(cache, seq, tokens ? tokens + t0 : nullptr, m, hidden_out ? &h : nullptr,
                  nullptr, AttnPath::kAuto, first_layer,
                  x_in ? x_in + size_t(t0) * hp_.n_embd : nullptr, taps ? &t : nullptr);
    if (hidden_out) hidden_out->insert(hidden_out->end(), h.begin(), h.end());
    if (taps)
      for (int l = first_layer; l < hp_.n_layer; ++l)
        (*taps)[size_t(l)].insert((*taps)[size_t(l)].end(), t[size_t(l)].begin(),
                                  t[size_t(l)].end());
  }
}

void LlamaModel::forward_from(KvCache& cache, int seq, int first_layer, const float* x_in, int n,
                              std::vector<float>* hidden_out,
                              std::vector<std::vector<float>>* taps) const {
  if (n <= 0) return;
  forward_span(cache, seq, nullptr, x_in, first_layer, n, hidden_out, taps);
}

void LlamaModel::forward_taps(KvCache& cache, int seq, const int32_t* tokens, int n,
                              std::vector<float>* hidden_out,
                              std::vector<std::vector<float>>* taps) const {
  if (n <= 0) return;
  forward_span(cache, seq, tokens, nullptr, 0, n, hidden_out, taps);
}

void LlamaModel::forward_chunk(KvCache& cache, int seq, const int32_t* tokens, int n,
                               std::vector<float>* hidden_out, std::vector<float>* logits_last,
                               AttnPath path, int first_layer, const float* x_in,
                               std::vector<std::vector<float>>* taps) const {
  const int E = hp_.n_embd, D = hp_.head_dim, NH = hp_.n_head, NKV = hp_.n_kv_head;
  const int Hq = NH * D, Hk = NKV * D, F = hp_.n_ff;
  const int pos0 = cache.seq_len(seq, first_layer);
  if (pos0 + n > hp_.n_ctx_train)
    throw Error("context of " + std::to_string(pos0 + n) + " tokens exceeds the model's " +
                "context length " + std::to_string(hp_.n_ctx_train));
  cache.reserve(seq, pos0 + n);
  for (int t = 0; tokens && t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= hp_.n_vocab)
      throw Error("token id " + std::to_string(tokens[t]) + " out of range [0, " +
                  std::to_string(hp_.n_vocab) + ")");

  std::vector<float> x(size_t(n) * E), xn(size_t(n) * E);
  std::vector<float> q(size_t(n) * Hq), k(size_t(n) * Hk), v(size_t(n) * Hk), att(size_t(n) * Hq);
  std::vector<float> g(size_t(n) * F), u(size_t(n) * F);
  if (!tokens) std::copy(x_in, x_in + size_t(n) * E, x.begin());
  for (int t = 0; tokens && t < n; ++t) {
    float* xt = &x[size_t(t) * E];
    qmatrix_row(tok_embd_, tokens[t], xt);
    if (hp_.embd_scale != 1.f)
      for (int j = 0; j < E; ++j) xt[j] *= hp_.embd_scale;
  }

  // cos/sin per (token, pair): [0] the global layers', [1] the sliding-window layers'.
  const int P = D / 2;
  std::vector<float> cs[2], sn[2];
  for (int kind = 0; kind < 2; ++kind) {
    const std::vector<float>& inv = kind ? inv_freq_local_ : inv_freq_;
    if (inv.empty()) continue;
    const double fs = kind ? 1.0 : hp_.rope_freq_scale;
    cs[kind].resize(size_t(n) * P);
    sn[kind].resize(size_t(n) * P);
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < P; ++i) {
        const double th = double(pos0 + t) * fs * inv[size_t(i)];
        cs[kind][size_t(t) * P + i] = float(std::cos(th));
        sn[kind][size_t(t) * P + i] = float(std::sin(th));
      }
  }
  const bool neox = hp_.rope == RopePairing::kNeox;
  auto rope = [&](float* m, int heads, int kind) {
#pragma omp parallel for schedule(static) if (n > 4)
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h) {
        float* r = m + (size_t(t) * heads + h) * D;
        const float* c = &cs[kind][size_t(t) * P];
        const float* s = &sn[kind][size_t(t) * P];
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
  const float scale = hp_.attn_scale > 0 ? hp_.attn_scale : 1.f / std::sqrt(float(D));
  std::vector<float> tmp(hp_.post_norms ? size_t(n) * E : 0);

  if (taps) taps->assign(size_t(hp_.n_layer), {});
  for (int l = first_layer; l < hp_.n_layer; ++l) {
    const Layer& L = layers_[l];
    if (taps) (*taps)[size_t(l)] = x;
    rms_norm(x.data(), n, E, L.attn_norm, hp_.rms_eps, xn.data());
    linear(xn.data(), n, L.wq, E, Hq, q.data());
    linear(xn.data(), n, L.wk, E, Hk, k.data());
    linear(xn.data(), n, L.wv, E, Hk, v.data());
    if (hp_.has_qkv_bias) {
      add_bias(q.data(), L.bq, Hq);
      add_bias(k.data(), L.bk, Hk);
      add_bias(v.data(), L.bv, Hk);
    }
    if (hp_.qk_norm) {  // every head's D values are one RMSNorm row
      rms_norm(q.data(), n * NH, D, L.q_norm, hp_.rms_eps, q.data());
      rms_norm(k.data(), n * NKV, D, L.k_norm, hp_.rms_eps, k.data());
    }
    const int kind = local(l) ? 1 : 0;
    rope(q.data(), NH, kind);
    rope(k.data(), NKV, kind);
    // Store first, then attend to what is stored (DESIGN.md §3 "Honest evaluation").
    cache.observe_queries(seq, l, q.data(), n, NH);
    cache.append(seq, l, k.data(), v.data(), n);
    attention(cache, seq, l, NH, q.data(), n, pos0, scale, att.data(), path,
              hp_.layer_window[size_t(l)]);
    // x += o (llama) or x += norm(o) (gemma3's post-attention norm); the same for the FFN.
    auto residual = [&](const float* in, int w_in, const QMatrix& W,
                        const std::vector<float>& post) {
      if (post.empty()) return linear(in, n, W, w_in, E, x.data(), 1.f);
      linear(in, n, W, w_in, E, tmp.data());
      rms_norm(tmp.data(), n, E, post, hp_.rms_eps, tmp.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    };
    residual(att.data(), Hq, L.wo, L.post_attn_norm);
    rms_norm(x.data(), n, E, L.ffn_norm, hp_.rms_eps, xn.data());
    linear(xn.data(), n, L.w_gate, E, F, g.data());
    linear(xn.data(), n, L.w_up, E, F, u.data());
    const bool gelu = hp_.gelu_ffn;
#pragma omp parallel for schedule(static) if (n > 4)
    for (int64_t i = 0; i < int64_t(n) * F; ++i) {
      const float a = g[i];
      g[i] = (gelu ? gelu_tanh(a) : a / (1.f + std::exp(-a))) * u[i];
    }
    residual(g.data(), F, L.w_down, L.post_ffn_norm);
  }
  rms_norm(x.data(), n, E, output_norm_, hp_.rms_eps, xn.data());
  if (logits_last) {
    logits_last->resize(hp_.n_vocab);
    logits(&xn[size_t(n - 1) * E], 1, logits_last->data());
  }
  if (hidden_out) *hidden_out = std::move(xn);
}

}  // namespace tq
