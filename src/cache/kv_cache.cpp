// turboquant — the paged, compressed KV cache. See kv_cache.h for the storage model.
#include "cache/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "codecs/polarvq.h"
#include "codecs/polarvq_file.h"
#include "core/half.h"

namespace tq {

struct KvCache::Stream {
  std::string type;
  CodecOptions copts;
  std::unique_ptr<Codec> codec;
  int bt = 1;                       // codec block_tokens
  size_t bb = 0;                    // codec block_bytes
  size_t page_bytes = 0;            // (page_tokens / bt) · bb
  std::vector<uint8_t> pool;        // n_pages · page_bytes
  bool outliers_from_data = false;  // TypeTraits::outliers_from_prefill: set from the first append
  bool outliers_set = false;
};

struct KvCache::Part {
  int n = 0;                                      // tokens stored
  int c = 0;                                      // positions [s_end, c) are encoded
  int s_end = 0;                                  // positions [0, s_end) are f16 sinks
  std::vector<std::vector<uint16_t>> sink, pend;  // per head, f16 [tok][d]
  std::vector<std::vector<float>> mu;             // per head, key means (centring)
  bool mu_set = false;
  // Per-page key offsets δ (key_means_per_page): per head, d floats per page index (pos / PT);
  // page_delta[i]: 0 = not set yet, 1 = inherited (no bytes), 2 = stored (d f16 per head).
  std::vector<std::vector<float>> delta;
  std::vector<uint8_t> page_delta;
  // Key scales (KvCacheOptions::key_scales): per head d floats (f16 values), empty = none;
  // decided once, at the first append. q2: the observed queries' per-channel mean square.
  std::vector<std::vector<float>> ks;
  bool ks_decided = false;
  std::vector<std::vector<double>> q2;
  int q2_tokens = 0;
};

struct KvCache::Seq {
  bool active = false;
  std::vector<int> pages;
  std::vector<Part> parts;  // [layer·2 + (is_key ? 0 : 1)]
};

namespace {

// The codec of one stream: types that read learned data (TypeTraits::calibration) get their
// (layer, head) part of the codebook file.
std::unique_ptr<Codec> make_stream_codec(const std::string& type, int dim, CodecOptions& co,
                                         const KvCacheOptions& opts) {
  const TypeTraits& tr = type_traits(type);
  const auto& cb = opts.codebooks;
  switch (tr.calibration) {
    case CalibrationKind::kNone:
      return make_codec(type, dim, co);
    case CalibrationKind::kKvQuant:
      if (!cb || cb->kvq.empty())
        throw Error("cache type '" + type + "' needs a kvquant calibration file: run " +
                    tr.calibrate_command + " and pass --codebooks FILE");
      co.calibration = cb->kvq_head(co.layer, co.head);
      return make_codec(type, dim, co);
    case CalibrationKind::kPolarVq:
      if (!cb) {
        check_calibration_given(type, false);
        return make_codec(type, dim, co);
      }
      if (cb->params.preset != tr.calibration_preset)
        throw Error("the codebook file is for " + calibration_label(cb->params.preset) +
                    ", the cache type is '" + type + "'");
      co.calibration = cb->head(co.layer, co.head);
      if (tr.params_from_codebooks) return std::make_unique<PolarVqCodec>(cb->params, dim, co);
      return make_codec(type, dim, co);
  }
  TQ_ASSERT(false);
  return nullptr;
}
}  // namespace

KvCache::KvCache(const KvShape& shape, const KvCacheOptions& opts) : shape_(shape), opts_(opts) {
  if (shape.n_layer <= 0 || shape.n_kv_head <= 0 || shape.head_dim <= 0)
    throw Error("KV cache: bad shape");
  if (opts.page_tokens <= 0) throw Error("KV cache: page_tokens must be positive");
  if (opts.residual_window < 0 || opts.sink_tokens < 0 || opts.boundary_layers < 0)
    throw Error("KV cache: residual window, sinks and boundary layers must be ≥ 0");
  if (opts.max_seqs <= 0) throw Error("KV cache: max_seqs must be positive");
  n_pages_ = std::max(1, (opts.max_tokens + opts.page_tokens - 1) / opts.page_tokens);
  // Learned data: refuse what cannot work before allocating anything.
  for (int l = 0; l < shape.n_layer; ++l)
    for (bool is_key : {true, false}) {
      check_calibration_given(type_name(l, is_key), opts.codebooks != nullptr);
    }
  if (const auto& cb = opts.codebooks) {
    if (int(cb->n_layer) != shape.n_layer || int(cb->n_head_kv) != shape.n_kv_head ||
        int(cb->head_dim) != shape.head_dim)
      throw Error("the codebook file has shape " + std::to_string(cb->n_layer) + " layers x " +
                  std::to_string(cb->n_head_kv) + " KV heads x " + std::to_string(cb->head_dim) +
                  ", the model has " + std::to_string(shape.n_layer) + " x " +
                  std::to_string(shape.n_kv_head) + " x " + std::to_string(shape.head_dim));
    if (cb->rope != shape.rope)
      throw Error("the codebook file was made for another RoPE pairing than the model's");
    if (cb->heads.size() != size_t(cb->n_layer) * cb->n_head_kv ||
        (!cb->kvq.empty() && cb->kvq.size() != cb->heads.size()))
      throw Error("the codebook file has the wrong number of heads");
  }
  for (int l = 0; l < shape.n_layer; ++l)
    for (int h = 0; h < shape.n_kv_head; ++h)
      for (int kind = 0; kind < 2; ++kind) {
        auto s = std::make_unique<Stream>();
        const bool is_key = kind == 0;
        s->type = type_name(l, is_key);
        s->copts.seed = opts.seed;
        s->copts.layer = l;
        s->copts.head = h;
        s->copts.is_key = is_key;
        s->copts.rope = shape.rope;
        s->copts.rope_inv_freq = shape.inv_freq(l);
        s->copts.rope_freq_scale = shape.freq_scale(l);
        s->codec = make_stream_codec(s->type, shape.head_dim, s->copts, opts);
        s->bt = s->codec->block_tokens();
        s->bb = s->codec->block_bytes();
        if (opts.page_tokens % s->bt != 0)
          throw Error("KV cache: page size " + std::to_string(opts.page_tokens) +
                      " tokens is not a multiple of the block of '" + s->type + "' (" +
                      std::to_string(s->bt) + " tokens)");
        s->page_bytes = size_t(opts.page_tokens / s->bt) * s->bb;
        s->pool.assign(size_t(n_pages_) * s->page_bytes, 0);
        s->outliers_from_data = type_traits(s->type).outliers_from_prefill;
        streams_.push_back(std::move(s));
      }
  for (int p = n_pages_ - 1; p >= 0; --p) free_pages_.push_back(p);
}

KvCache::~KvCache() = default;

const char* key_centring_name(KeyCentring c) {
  switch (c) {
    case KeyCentring::kTypeDefault:
      return "default";
    case KeyCentring::kOn:
      return "on";
    case KeyCentring::kOff:
      return "off";
  }
  return "?";
}

bool KvCache::keys_centred(int layer) const {
  switch (opts_.key_centring) {
    case KeyCentring::kOn:
      return true;
    case KeyCentring::kOff:
      return false;
    case KeyCentring::kTypeDefault:
      break;
  }
  return traits(layer, true).center_keys;
}

int KvCache::centred_layers() const {
  int n = 0;
  for (int l = 0; l < shape_.n_layer; ++l) n += keys_centred(l) ? 1 : 0;
  return n;
}

std::string KvCache::type_name(int layer, bool is_key) const {
  const auto& ov = is_key ? opts_.layer_type_k : opts_.layer_type_v;
  if (auto it = ov.find(layer); it != ov.end()) return it->second;
  const int nb = opts_.boundary_layers;
  if (nb > 0 && (layer < nb || layer >= shape_.n_layer - nb))
    return is_key ? opts_.boundary_type_k : opts_.boundary_type_v;
  return is_key ? opts_.type_k : opts_.type_v;
}

KvCache::Stream& KvCache::stream(int layer, int head, bool is_key) {
  TQ_ASSERT(layer >= 0 && layer < shape_.n_layer && head >= 0 && head < shape_.n_kv_head);
  return *streams_[(size_t(layer) * shape_.n_kv_head + head) * 2 + (is_key ? 0 : 1)];
}
const KvCache::Stream& KvCache::stream(int layer, int head, bool is_key) const {
  TQ_ASSERT(layer >= 0 && layer < shape_.n_layer && head >= 0 && head < shape_.n_kv_head);
  return *streams_[(size_t(layer) * shape_.n_kv_head + head) * 2 + (is_key ? 0 : 1)];
}
const Codec& KvCache::codec(int layer, int head, bool is_key) const {
  return *stream(layer, head, is_key).codec;
}

KvCache::Seq& KvCache::seq_ref(int seq) {
  TQ_ASSERT(seq >= 0 && seq < int(seqs_.size()) && seqs_[seq] && seqs_[seq]->active);
  return *seqs_[seq];
}
const KvCache::Seq& KvCache::seq_ref(int seq) const {
  TQ_ASSERT(seq >= 0 && seq < int(seqs_.size()) && seqs_[seq] && seqs_[seq]->active);
  return *seqs_[seq];
}

int KvCache::new_seq() {
  int id = -1;
  for (int i = 0; i < int(seqs_.size()); ++i)
    if (!seqs_[i]->active) id = i;
  if (id < 0) {
    if (int(seqs_.size()) >= opts_.max_seqs)
      throw Error("KV cache full: all " + std::to_string(opts_.max_seqs) +
                  " sequence slots are in use");
    seqs_.push_back(std::make_unique<Seq>());
    id = int(seqs_.size()) - 1;
  }
  Seq& s = *seqs_[id];
  s.active = true;
  s.pages.clear();
  s.parts.assign(size_t(shape_.n_layer) * 2, Part{});
  for (int l = 0; l < shape_.n_layer; ++l)
    for (int kind = 0; kind < 2; ++kind) {
      Part& p = s.parts[size_t(l) * 2 + kind];
      const int bt = stream(l, 0, kind == 0).bt;
      p.s_end = opts_.sink_tokens > 0 ? (opts_.sink_tokens + bt - 1) / bt * bt : 0;
      p.c = p.s_end;
      p.sink.resize(shape_.n_kv_head);
      p.pend.resize(shape_.n_kv_head);
      p.mu.resize(shape_.n_kv_head);
      p.delta.resize(shape_.n_kv_head);
    }
  return id;
}

void KvCache::free_seq(int seq) {
  Seq& s = seq_ref(seq);
  for (int p : s.pages) free_pages_.push_back(p);
  // Hand out low page ids first (keeps the pool compact; purely cosmetic).
  std::sort(free_pages_.begin(), free_pages_.end(), std::greater<int>());
  s.pages.clear();
  s.parts.clear();
  s.active = false;
}

int KvCache::seq_len(int seq, int layer) const { return seq_ref(seq).parts[size_t(layer) * 2].n; }

void KvCache::reserve(int seq, int n_total) {
  Seq& s = seq_ref(seq);
  const int need = (n_total + opts_.page_tokens - 1) / opts_.page_tokens;
  if (need - int(s.pages.size()) > int(free_pages_.size()))
    throw Error("KV cache full: sequence " + std::to_string(seq) + " needs " +
                std::to_string(n_total) + " tokens (" + std::to_string(need) + " pages of " +
                std::to_string(opts_.page_tokens) + "), only " +
                std::to_string(free_pages_.size()) + " of " + std::to_string(n_pages_) +
                " pages are free");
  while (int(s.pages.size()) < need) {
    s.pages.push_back(free_pages_.back());
    free_pages_.pop_back();
  }
}

void KvCache::append(int seq, int layer, const float* k, const float* v, int T) {
  TQ_ASSERT(layer >= 0 && layer < shape_.n_layer && T >= 0);
  Seq& s = seq_ref(seq);
  reserve(seq, s.parts[size_t(layer) * 2].n + T);
  if (opts_.on_append) opts_.on_append(layer, k, v, T);
  append_part(s, layer, true, k, T);
  append_part(s, layer, false, v, T);
}

bool type_takes_key_scales(const TypeTraits& tr) {
  return !tr.positional && tr.calibration == CalibrationKind::kNone;
}

bool KvCache::keys_scalable(int layer) const {
  return opts_.key_scales && keys_centred(layer) && type_takes_key_scales(traits(layer, true));
}

void KvCache::observe_queries(int seq, int layer, const float* q, int T, int n_head) {
  Seq& s = seq_ref(seq);
  TQ_ASSERT(layer >= 0 && layer < shape_.n_layer);
  Part& part = s.parts[size_t(layer) * 2];
  if (part.ks_decided || !keys_scalable(layer) || T <= 0) return;
  const int H = shape_.n_kv_head, d = shape_.head_dim, g = n_head / H;
  TQ_ASSERT(n_head % H == 0);
  part.q2.assign(size_t(H), std::vector<double>(size_t(d), 0.0));
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < g; ++i) {
        const float* r = q + (size_t(t) * n_head + size_t(h) * g + i) * d;
        for (int j = 0; j < d; ++j) part.q2[h][j] += double(r[j]) * r[j];
      }
  for (auto& v : part.q2)
    for (double& x : v) x /= double(T) * g;
  part.q2_tokens = T;
}

const float* KvCache::key_scales(int seq, int layer, int head) const {
  const Part& part = seq_ref(seq).parts[size_t(layer) * 2];
  return part.ks.empty() ? nullptr : part.ks[size_t(head)].data();
}

namespace {
// s_j = (σk_j / σq_j)^a over one head's first append (keys already centred; σq over the
// observed queries of its group), each σ kept above 1e-3 of its head's mean (dead channels),
// normalised to geometric mean 1, rounded to f16 (as stored and counted). For rotation-based
// codes (isotropic error ∝ |k|) the score error variance ∝ |q ∘ s|²·|k ⊘ s|² is least at
// a = 1/2; a = 0.35 measured better on data/calib.txt (SmolLM2-135M, turbo3 and turbo4 KLD,
// a ∈ {0, 0.15, 0.25, 0.35, 0.5}; docs/safe-keys.md).
constexpr double kKeyScaleExponent = 0.35;
std::vector<float> key_scales_of(const float* xh, int T, int d, const std::vector<double>& q2) {
  std::vector<double> sk(static_cast<size_t>(d), 0.0), sq(static_cast<size_t>(d));
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < d; ++j) sk[j] += double(xh[size_t(t) * d + j]) * xh[size_t(t) * d + j];
  double mk = 0, mq = 0;
  for (int j = 0; j < d; ++j) {
    sk[j] = std::sqrt(sk[j] / T);
    sq[j] = std::sqrt(q2[size_t(j)]);
    mk += sk[j];
    mq += sq[j];
  }
  mk /= d;
  mq /= d;
  std::vector<double> ls(static_cast<size_t>(d));
  double mean_log = 0;
  for (int j = 0; j < d; ++j) {
    ls[j] = kKeyScaleExponent * (std::log(std::max(sk[j], 1e-3 * mk + 1e-30)) -
                                 std::log(std::max(sq[j], 1e-3 * mq + 1e-30)));
    mean_log += ls[j] / d;
  }
  std::vector<float> s(static_cast<size_t>(d));
  for (int j = 0; j < d; ++j) s[j] = f16_to_f32(f32_to_f16(float(std::exp(ls[j] - mean_log))));
  return s;
}
}  // namespace

void KvCache::append_part(Seq& s, int layer, bool is_key, const float* x, int T) {
  const int H = shape_.n_kv_head, d = shape_.head_dim, PT = opts_.page_tokens;
  Part& part = s.parts[size_t(layer) * 2 + (is_key ? 0 : 1)];
  const int n_old = part.n;
  const bool center = is_key && keys_centred(layer);
  const bool set_mu = center && !part.mu_set && T > 0;
  // Key scales: decided at the first append, from its keys and the queries observed with them.
  bool set_ks = false;
  if (is_key && !part.ks_decided && T > 0) {
    set_ks = keys_scalable(layer) && n_old == 0 && T >= kKeyScaleMinTokens && part.q2_tokens == T;
    if (set_ks) part.ks.assign(size_t(H), {});
    part.ks_decided = true;
  }
  for (int h = 0; h < H; ++h) {
    Stream& st = stream(layer, h, is_key);
    // Gather this head's rows (centred if asked).
    std::vector<float> xh(size_t(T) * d);
    for (int t = 0; t < T; ++t)
      std::memcpy(&xh[size_t(t) * d], x + (size_t(t) * H + h) * d, sizeof(float) * d);
    if (set_mu) {
      auto& mu = part.mu[h];
      mu.assign(d, 0.f);
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < d; ++j) mu[j] += xh[size_t(t) * d + j];
      for (int j = 0; j < d; ++j) mu[j] /= float(T);
    }
    if (center)
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < d; ++j) xh[size_t(t) * d + j] -= part.mu[h][j];
    if (set_ks) part.ks[h] = key_scales_of(xh.data(), T, d, part.q2[h]);
    if (!part.ks.empty())
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < d; ++j) xh[size_t(t) * d + j] /= part.ks[h][j];
    // Types that take their outlier channels from prefill (the fractional TurboQuant types):
    // the d/4 channels of largest mean |x| in the first append.
    if (st.outliers_from_data && !st.outliers_set && T > 0) {
      std::vector<double> mag(d, 0.0);
      for (int t = 0; t < T; ++t)
        for (int j = 0; j < d; ++j) mag[j] += std::fabs(xh[size_t(t) * d + j]);
      std::vector<int> idx(d);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return mag[a] > mag[b]; });
      idx.resize(d / 4);
      std::sort(idx.begin(), idx.end());
      st.copts.outlier_channels = idx;
      st.codec = make_codec(st.type, d, st.copts);
      TQ_ASSERT(st.codec->block_bytes() == st.bb && st.codec->block_tokens() == st.bt);
      st.outliers_set = true;
    }
    auto& sink = part.sink[h];
    auto& pend = part.pend[h];
    for (int t = 0; t < T; ++t) {
      const int pos = n_old + t;
      auto& dst = pos < part.s_end ? sink : pend;
      for (int j = 0; j < d; ++j) dst.push_back(f32_to_f16(xh[size_t(t) * d + j]));
    }
    // Encode every complete block that has left the residual window.
    const int n = n_old + T;
    const int avail = std::max(0, n - opts_.residual_window - part.s_end);
    const int c_new = std::max(part.c, part.s_end + avail / st.bt * st.bt);
    if (c_new > part.c) {
      const int m = c_new - part.c;
      std::vector<float> buf(size_t(m) * d);
      for (int i = 0; i < m; ++i) {
        const int pos = part.c + i;
        float* row = &buf[size_t(i) * d];
        if (pos >= n_old) {  // from this append: encode the f32 values, not their f16 copy
          std::memcpy(row, &xh[size_t(pos - n_old) * d], sizeof(float) * d);
        } else {
          const uint16_t* src = &pend[size_t(i) * d];
          for (int j = 0; j < d; ++j) row[j] = f16_to_f32(src[j]);
        }
      }
      for (int pos = part.c; pos < c_new;) {
        const int page_end = (pos / PT + 1) * PT;
        const int run = std::min(c_new, page_end) - pos;  // a multiple of bt
        float* rows = &buf[size_t(pos - part.c) * d];
        if (center && opts_.key_means_per_page) {
          // The page's offset δ, set by its first encode (pages are encoded in order; the same
          // run for every head): the mean of that run's keys when it holds at least
          // min(64, PT) of them, else the previous page's; rounded to f16 (as counted).
          const size_t pi = size_t(pos / PT);
          auto& dl = part.delta[h];
          if (dl.size() < (pi + 1) * size_t(d)) {
            const bool fresh = run >= std::min(64, PT);
            dl.resize((pi + 1) * size_t(d), 0.f);
            float* dp = &dl[pi * d];
            if (fresh) {
              std::vector<double> m(d, 0.0);
              for (int i = 0; i < run; ++i)
                for (int j = 0; j < d; ++j) m[j] += rows[size_t(i) * d + j];
              for (int j = 0; j < d; ++j) dp[j] = f16_to_f32(f32_to_f16(float(m[j] / run)));
            } else if (pi > 0) {
              std::copy(dp - d, dp, dp);
            }
            if (part.page_delta.size() <= pi) part.page_delta.resize(pi + 1, 0);
            part.page_delta[pi] = fresh ? 2 : 1;
          }
          const float* dp = &dl[pi * d];
          for (int i = 0; i < run; ++i)
            for (int j = 0; j < d; ++j) rows[size_t(i) * d + j] -= dp[j];
        }
        uint8_t* dst = st.pool.data() + size_t(s.pages[pos / PT]) * st.page_bytes +
                       size_t((pos % PT) / st.bt) * st.bb;
        st.codec->encode_at(rows, size_t(run / st.bt), pos, dst);
        pos += run;
      }
      pend.erase(pend.begin(), pend.begin() + size_t(m) * d);
    }
  }
  if (set_mu) part.mu_set = true;
  if (is_key && part.ks_decided && part.q2_tokens) {  // the observed queries are spent
    part.q2.clear();
    part.q2_tokens = 0;
  }
  part.n = n_old + T;
  const int n = part.n;
  const int bt = stream(layer, 0, is_key).bt;
  part.c =
      std::max(part.c, part.s_end + std::max(0, n - opts_.residual_window - part.s_end) / bt * bt);
  TQ_ASSERT(part.c <= std::max(n, part.s_end));
}

void KvCache::segments(int seq, int layer, int head, bool is_key,
                       std::vector<KvSegment>& out) const {
  out.clear();
  const Seq& s = seq_ref(seq);
  const Part& part = s.parts[size_t(layer) * 2 + (is_key ? 0 : 1)];
  const Stream& st = stream(layer, head, is_key);
  const int PT = opts_.page_tokens;
  const int n_sink = std::min(part.n, part.s_end);
  if (n_sink > 0) out.push_back({0, n_sink, nullptr, part.sink[head].data()});
  const int c = std::max(part.c, part.s_end);
  for (int pos = part.s_end; pos < std::min(c, part.n);) {
    const int run = std::min(c, (pos / PT + 1) * PT) - pos;
    const uint8_t* codes = st.pool.data() + size_t(s.pages[pos / PT]) * st.page_bytes +
                           size_t((pos % PT) / st.bt) * st.bb;
    const float* off = nullptr;
    if (is_key && size_t(pos / PT) < part.page_delta.size() && part.page_delta[pos / PT] != 0)
      off = &part.delta[head][size_t(pos / PT) * shape_.head_dim];
    out.push_back({pos, run, codes, nullptr, off});
    pos += run;
  }
  if (part.n > c) out.push_back({c, part.n - c, nullptr, part.pend[head].data()});
}

void KvCache::read(int seq, int layer, int head, bool is_key, float* x) const {
  const int d = shape_.head_dim;
  std::vector<KvSegment> segs;
  segments(seq, layer, head, is_key, segs);
  const Codec& cd = codec(layer, head, is_key);
  for (const auto& sg : segs) {
    float* dst = x + size_t(sg.pos0) * d;
    if (sg.codes) {
      cd.decode_at(sg.codes, size_t(sg.n / cd.block_tokens()), sg.pos0, dst);
      if (sg.key_offset)
        for (int i = 0; i < sg.n; ++i)
          for (int j = 0; j < d; ++j) dst[size_t(i) * d + j] += sg.key_offset[j];
    } else {
      for (size_t i = 0; i < size_t(sg.n) * d; ++i) dst[i] = f16_to_f32(sg.f16[i]);
    }
  }
  if (const float* ks = is_key ? key_scales(seq, layer, head) : nullptr)  // back to k − μ
    for (int i = 0; i < seq_len(seq, layer); ++i)
      for (int j = 0; j < d; ++j) x[size_t(i) * d + j] *= ks[j];
}

size_t KvCache::bytes_of(bool is_key) const {
  size_t total = 0;
  const int d = shape_.head_dim;
  for (const auto& sp : seqs_) {
    if (!sp->active) continue;
    for (int l = 0; l < shape_.n_layer; ++l) {
      const Part& p = sp->parts[size_t(l) * 2 + (is_key ? 0 : 1)];
      for (int h = 0; h < shape_.n_kv_head; ++h) {
        const Stream& st = stream(l, h, is_key);
        const int coded = std::max(0, std::min(p.c, p.n) - p.s_end);
        total += size_t(coded / st.bt) * st.bb;
        total += (p.sink[h].size() + p.pend[h].size()) * sizeof(uint16_t);
        if (p.mu_set) total += size_t(d) * sizeof(float);
        if (!p.ks.empty()) total += size_t(d) * sizeof(uint16_t);  // f16 key scales
        for (uint8_t pd : p.page_delta)
          if (pd == 2) total += size_t(d) * sizeof(uint16_t);  // a page's f16 offset δ
      }
    }
  }
  return total;
}

size_t KvCache::k_bytes() const { return bytes_of(true); }
size_t KvCache::v_bytes() const { return bytes_of(false); }
size_t KvCache::kv_bytes() const { return k_bytes() + v_bytes(); }

size_t KvCache::values_stored() const {
  size_t n = 0;
  for (const auto& sp : seqs_)
    if (sp->active)
      for (int l = 0; l < shape_.n_layer; ++l) n += size_t(sp->parts[size_t(l) * 2].n);
  return n * shape_.n_kv_head * shape_.head_dim;
}

double KvCache::bpv_k() const {
  const size_t n = values_stored();
  return n ? 8.0 * double(k_bytes()) / double(n) : 0.0;
}
double KvCache::bpv_v() const {
  const size_t n = values_stored();
  return n ? 8.0 * double(v_bytes()) / double(n) : 0.0;
}

size_t KvCache::reserved_bytes() const {
  size_t total = 0;
  for (const auto& s : streams_) total += s->pool.size();
  return total;
}

}  // namespace tq
