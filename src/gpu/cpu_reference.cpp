// turboquant GPU runtime — CPU reference forward (see cpu_reference.h).
#include "gpu/cpu_reference.h"

#include <cmath>

#include "attention/attention.h"
#include "gpu/ops_ref.h"

namespace tq::gpu {

CpuReference::CpuReference(const LlamaHparams& hp, HostWeights w, const std::string& cache_type,
                           int max_tokens, int max_seqs)
    : hp_(hp), w_(std::move(w)) {
  KvShape shape;
  shape.n_layer = hp.n_layer;
  shape.n_kv_head = hp.n_kv_head;
  shape.head_dim = hp.head_dim;
  shape.rope = hp.rope;
  shape.rope_inv_freq = w_.inv_freq;
  KvCacheOptions o;
  o.type_k = o.type_v = cache_type;
  o.max_tokens = max_tokens;
  o.max_seqs = max_seqs;
  // The GPU formats store no key mean (docs/safe-keys.md): the reference matches them.
  o.key_centring = KeyCentring::kOff;
  cache_ = std::make_unique<KvCache>(shape, o);
}

std::vector<float> CpuReference::forward(int seq, const int32_t* tokens, int n) {
  const int E = hp_.n_embd, D = hp_.head_dim, NH = hp_.n_head, NKV = hp_.n_kv_head;
  const int F = hp_.n_ff, V = hp_.n_vocab, QKV = (NH + 2 * NKV) * D, HQ = NH * D;
  const int pos0 = cache_->seq_len(seq);
  cache_->reserve(seq, pos0 + n);
  std::vector<float> x(size_t(n) * E), qkv(size_t(n) * QKV), q(size_t(n) * HQ);
  std::vector<float> att(size_t(n) * HQ), gu(size_t(n) * 2 * F), kf(size_t(n) * NKV * D),
      vf(size_t(n) * NKV * D);
  std::vector<uint16_t> xn(size_t(n) * E), k(size_t(n) * NKV * D), v(size_t(n) * NKV * D);
  std::vector<uint16_t> attb(size_t(n) * HQ), h(size_t(n) * F);
  std::vector<int> tok(tokens, tokens + n), pos(n);
  for (int t = 0; t < n; ++t) pos[t] = pos0 + t;
  ref::embed(w_.tok_embd.data(), tok.data(), x.data(), n, E);
  const float scale = 1.f / std::sqrt(float(D));
  for (int l = 0; l < hp_.n_layer; ++l) {
    const HostWeights::Layer& L = w_.layers[l];
    ref::rmsnorm_bf16(x.data(), L.attn_norm.data(), xn.data(), n, E, hp_.rms_eps);
    ref::linear_bf16(xn.data(), n, L.wqkv.data(), E, QKV, qkv.data(), 0.f);
    QkvArgs a{qkv.data(), L.bqkv.empty() ? nullptr : L.bqkv.data(), pos.data(),
              w_.inv_freq.data(), hp_.rope_freq_scale, hp_.rope == RopePairing::kNeox,
              n, NH, NKV, D, q.data(), k.data(), v.data()};
    ref::qkv_rope(a);
    for (size_t i = 0; i < k.size(); ++i) {
      kf[i] = bf16_to_f32(k[i]);
      vf[i] = bf16_to_f32(v[i]);
    }
    cache_->append(seq, l, kf.data(), vf.data(), n);
    attention(*cache_, seq, l, NH, q.data(), n, pos0, scale, att.data(), AttnPath::kReference);
    for (size_t i = 0; i < att.size(); ++i) attb[i] = f32_to_bf16(att[i]);
    ref::linear_bf16(attb.data(), n, L.wo.data(), HQ, E, x.data(), 1.f);
    ref::rmsnorm_bf16(x.data(), L.ffn_norm.data(), xn.data(), n, E, hp_.rms_eps);
    ref::linear_bf16(xn.data(), n, L.wgu.data(), E, 2 * F, gu.data(), 0.f);
    ref::swiglu_bf16(gu.data(), h.data(), n, F);
    ref::linear_bf16(h.data(), n, L.wdown.data(), F, E, x.data(), 1.f);
  }
  std::vector<uint16_t> xl(E);
  ref::rmsnorm_bf16(x.data() + size_t(n - 1) * E, w_.output_norm.data(), xl.data(), 1, E,
                    hp_.rms_eps);
  std::vector<float> logits(V);
  ref::linear_bf16(xl.data(), 1, w_.output.data(), E, V, logits.data(), 0.f);
  return logits;
}

}  // namespace tq::gpu
