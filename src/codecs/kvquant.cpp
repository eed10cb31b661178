// KVQuant-style cache types kvquant3 / kvquant4. See codecs/kvquant.h for the method and layout.
// Plain scalar code: this is a baseline, measured for quality, not for speed.
#include "codecs/kvquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>

#include "core/bitpack.h"
#include "core/half.h"
#include "core/kmeans.h"

namespace tq {


bool KvQuantCalibration::valid(int d) const {
  for (const auto* v : {&key_center, &key_range, &value_center, &value_range})
    if (v->size() != size_t(d)) return false;
  for (const auto* v : {&key_range, &value_range})
    for (float r : *v)
      if (!(r > 0.0f) || !std::isfinite(r)) return false;
  return key_levels3.size() == 8 && value_levels3.size() == 8 && key_levels4.size() == 16 &&
         value_levels4.size() == 16;
}

void rope_rotate(float* x, int d, int64_t pos, const std::vector<float>& inv_freq,
                 float freq_scale, RopePairing pairing, bool inverse) {
  const int half = d / 2;
  for (int i = 0; i < half; ++i) {
    // The same angle and float rounding as the model's forward pass (model/llama.cpp).
    const float f = inv_freq.empty() ? float(std::pow(10000.0, -2.0 * i / d)) : inv_freq[i];
    const double th = double(pos) * freq_scale * f;
    const float c = float(std::cos(th)), s = inverse ? -float(std::sin(th)) : float(std::sin(th));
    const int a = pairing == RopePairing::kNeox ? i : 2 * i;
    const int b = pairing == RopePairing::kNeox ? i + half : 2 * i + 1;
    const float xa = x[a], xb = x[b];
    x[a] = xa * c - xb * s;
    x[b] = xa * s + xb * c;
  }
}

namespace {

// cos/sin of every (position, pair) for one set of RoPE frequencies, computed exactly as
// rope_rotate does (so rotations through the table are bit-identical to it), shared by all
// codecs with the same frequencies and grown on demand: re-rotating every key for every query
// head otherwise costs d trigonometric calls per token and head.
struct RopeTable {
  int half = 0;
  int64_t npos = 0;
  std::vector<float> c, s;  // npos × half
};

std::shared_ptr<const RopeTable> rope_table(int d, const std::vector<float>& inv_freq,
                                            float freq_scale, int64_t need) {
  struct Entry {
    int d;
    float scale;
    std::vector<float> freq;
    std::shared_ptr<const RopeTable> table;
  };
  static std::mutex mu;
  static std::vector<Entry> entries;
  std::lock_guard<std::mutex> lock(mu);
  Entry* e = nullptr;
  for (auto& x : entries)
    if (x.d == d && x.scale == freq_scale && x.freq == inv_freq) e = &x;
  if (!e) {
    entries.push_back({d, freq_scale, inv_freq, nullptr});
    e = &entries.back();
  }
  if (!e->table || e->table->npos < need) {
    int64_t npos = 1024;
    while (npos < need) npos *= 2;
    auto t = std::make_shared<RopeTable>();
    t->half = d / 2;
    t->npos = npos;
    t->c.resize(size_t(npos) * t->half);
    t->s.resize(size_t(npos) * t->half);
    for (int i = 0; i < t->half; ++i) {
      const float f = inv_freq.empty() ? float(std::pow(10000.0, -2.0 * i / d)) : inv_freq[i];
      for (int64_t p = 0; p < npos; ++p) {
        const double th = double(p) * freq_scale * f;
        t->c[size_t(p) * t->half + i] = float(std::cos(th));
        t->s[size_t(p) * t->half + i] = float(std::sin(th));
      }
    }
    e->table = t;
  }
  return e->table;
}

// rope_rotate (forward) with the angles from a table row.
void rope_rotate_table(float* x, int d, const float* c, const float* s, RopePairing pairing) {
  const int half = d / 2;
  for (int i = 0; i < half; ++i) {
    const int a = pairing == RopePairing::kNeox ? i : 2 * i;
    const int b = pairing == RopePairing::kNeox ? i + half : 2 * i + 1;
    const float xa = x[a], xb = x[b];
    x[a] = xa * c[i] - xb * s[i];
    x[b] = xa * s[i] + xb * c[i];
  }
}

}  // namespace

std::vector<float> kvq_fit_levels(const std::vector<float>& z, int bits, uint64_t seed) {
  const int k = 1 << bits;
  auto km = kmeans(z.data(), z.size(), 1, k, seed, 60, 1e-9, 2);
  std::sort(km.centroids.begin(), km.centroids.end());
  return km.centroids;
}

namespace {

// The n_out channels of x farthest outside the per-channel range (largest |x − c|/r), in
// ascending channel order.
std::vector<int> pick_outliers(const float* x, int d, const float* c, const float* r, int n_out) {
  std::vector<int> idx;
  std::vector<char> taken(d, 0);
  for (int k = 0; k < n_out; ++k) {
    int best = -1;
    float be = -1.0f;
    for (int j = 0; j < d; ++j) {
      if (taken[j]) continue;
      const float e = std::fabs(x[j] - c[j]) / r[j];
      if (e > be) {
        be = e;
        best = j;
      }
    }
    taken[best] = 1;
    idx.push_back(best);
  }
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Nearest of the ascending levels (ties to the lower one).
int nearest_level(const std::vector<float>& levels, float z) {
  int best = 0;
  float bd = std::fabs(z - levels[0]);
  for (int i = 1; i < int(levels.size()); ++i) {
    const float e = std::fabs(z - levels[i]);
    if (e < bd) {
      bd = e;
      best = i;
    }
  }
  return best;
}

class KvQuantCodec final : public Codec {
 public:
  KvQuantCodec(int bits, int dim, const CodecOptions& o)
      : bits_(bits),
        dim_(dim),
        key_(o.is_key),
        rope_(o.rope),
        inv_freq_(o.rope_inv_freq),
        freq_scale_(o.rope_freq_scale),
        n_out_(kvq_outliers(dim)),
        idx_bytes_(dim <= 256 ? 1 : 2) {
    header_ = key_ ? 0 : 4;
    codes_off_ = header_ + size_t(n_out_) * (idx_bytes_ + 2);
    block_bytes_ = codes_off_ + packed_bytes(size_t(dim), bits);
    if (!inv_freq_.empty() && int(inv_freq_.size()) != dim / 2)
      throw Error("cache type '" + name() + "': RoPE frequencies for another head dimension");
    if (auto c = std::dynamic_pointer_cast<const KvQuantCalibration>(o.calibration)) {
      if (!c->valid(dim))
        throw Error("cache type '" + name() + "': calibration data of the wrong shape");
      calib_ = c;
      const auto& lv = key_ ? (bits == 3 ? c->key_levels3 : c->key_levels4)
                            : (bits == 3 ? c->value_levels3 : c->value_levels4);
      levels_ = lv;
    } else if (o.calibration) {
      throw Error("cache type '" + name() + "' was given another type's calibration data");
    }
  }

  std::string name() const override { return "kvquant" + std::to_string(bits_); }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return block_bytes_; }
  bool positional() const override { return key_; }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    encode_at(x, n, 0, codes);
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    decode_at(codes, n, 0, x);
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    score_at(qs, codes, n, 0, out);
  }

  void encode_at(const float* x, size_t n, int64_t pos0, uint8_t* codes) const override {
    require_calibration();
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    std::vector<float> v(dim_);
    std::vector<uint8_t> q(dim_);
    const float* c = key_ ? calib_->key_center.data() : calib_->value_center.data();
    const float* r = key_ ? calib_->key_range.data() : calib_->value_range.data();
    for (size_t t = 0; t < n; ++t) {
      std::memcpy(v.data(), x + t * dim_, sizeof(float) * dim_);
      if (key_) {  // back to the pre-RoPE key
        rope_rotate(v.data(), dim_, pos0 + int64_t(t), inv_freq_, freq_scale_, rope_, true);
        check_fp16_range(v.data(), dim_, name());
      }
      uint8_t* blk = codes + t * block_bytes_;
      std::memset(blk, 0, block_bytes_);
      const std::vector<int> out = pick_outliers(v.data(), dim_, c, r, n_out_);
      std::vector<char> is_out(dim_, 0);
      for (int k = 0; k < n_out_; ++k) {
        const int j = out[k];
        is_out[j] = 1;
        uint8_t* ip = blk + header_ + size_t(k) * idx_bytes_;
        ip[0] = uint8_t(j & 0xFF);
        if (idx_bytes_ == 2) ip[1] = uint8_t(j >> 8);
        store_f16(outlier_value_ptr(blk, k), v[j]);
      }
      float o = 0.0f, s = 0.0f;
      if (!key_) {
        float m = INFINITY, M = -INFINITY;
        for (int j = 0; j < dim_; ++j)
          if (!is_out[j]) {
            m = std::min(m, v[j]);
            M = std::max(M, v[j]);
          }
        store_f16(blk, 0.5f * (M + m));
        store_f16(blk + 2, 0.5f * (M - m));
        o = load_f16(blk);
        s = load_f16(blk + 2);
      }
      for (int j = 0; j < dim_; ++j) {
        float z = 0.0f;
        if (key_) z = (v[j] - c[j]) / r[j];
        else if (s > 0.0f) z = (v[j] - o) / s;
        // Outlier channels get the nearest level too (unused: decode takes the fp16 value).
        q[j] = uint8_t(nearest_level(levels_, z));
      }
      pack_bits(q.data(), dim_, bits_, blk + codes_off_);
    }
  }

  void decode_at(const uint8_t* codes, size_t n, int64_t pos0, float* x) const override {
    require_calibration();
    const auto tab = table_for(pos0, n);
    for (size_t t = 0; t < n; ++t)
      decode_token(codes + t * block_bytes_, pos0 + int64_t(t), x + t * dim_, tab.get());
  }

  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  // q · decode: the decoded (and, for keys, re-rotated) token dotted with the query.
  void score_at(const QueryState& qs, const uint8_t* codes, size_t n, int64_t pos0,
                float* out) const override {
    require_calibration();
    const float* q = plain_query_data(qs);
    std::vector<float> y(dim_);
    const auto tab = table_for(pos0, n);
    for (size_t t = 0; t < n; ++t) {
      decode_token(codes + t * block_bytes_, pos0 + int64_t(t), y.data(), tab.get());
      float a = 0.0f;
      for (int j = 0; j < dim_; ++j) a += q[j] * y[j];
      out[t] = a;
    }
  }
  // Values (the key form with the run at positions 0, 1, ..., as its position-free forms are
  // defined; the cache never accumulates keys).
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    require_calibration();
    std::vector<float> y(dim_);
    for (size_t t = 0; t < n; ++t) {
      decode_token(codes + t * block_bytes_, int64_t(t), y.data());
      for (int j = 0; j < dim_; ++j) acc[j] += w[t] * y[j];
    }
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

 private:
  uint8_t* outlier_value_ptr(uint8_t* blk, int k) const {
    return blk + header_ + size_t(n_out_) * idx_bytes_ + 2 * size_t(k);
  }
  const uint8_t* outlier_value_ptr(const uint8_t* blk, int k) const {
    return blk + header_ + size_t(n_out_) * idx_bytes_ + 2 * size_t(k);
  }
  int outlier_index(const uint8_t* blk, int k) const {
    const uint8_t* ip = blk + header_ + size_t(k) * idx_bytes_;
    return idx_bytes_ == 2 ? int(ip[0] | (ip[1] << 8)) : int(ip[0]);
  }

  // The shared cos/sin table when this run of positions is a key run (values need none).
  std::shared_ptr<const RopeTable> table_for(int64_t pos0, size_t n) const {
    if (!key_ || pos0 < 0 || n == 0) return nullptr;
    return rope_table(dim_, inv_freq_, freq_scale_, pos0 + int64_t(n));
  }

  void decode_token(const uint8_t* blk, int64_t pos, float* y,
                    const RopeTable* tab = nullptr) const {
    uint8_t q[1024];
    unpack_bits(blk + codes_off_, dim_, bits_, q);
    if (key_) {
      const float* c = calib_->key_center.data();
      const float* r = calib_->key_range.data();
      for (int j = 0; j < dim_; ++j) y[j] = c[j] + r[j] * levels_[q[j]];
    } else {
      const float o = load_f16(blk), s = load_f16(blk + 2);
      for (int j = 0; j < dim_; ++j) y[j] = o + s * levels_[q[j]];
    }
    for (int k = 0; k < n_out_; ++k) {
      const int j = outlier_index(blk, k);
      TQ_ASSERT(j < dim_);
      y[j] = load_f16(outlier_value_ptr(blk, k));
    }
    if (!key_) return;
    if (tab && pos >= 0 && pos < tab->npos)
      rope_rotate_table(y, dim_, &tab->c[size_t(pos) * tab->half], &tab->s[size_t(pos) * tab->half],
                        rope_);
    else
      rope_rotate(y, dim_, pos, inv_freq_, freq_scale_, rope_, false);
  }

  void require_calibration() const {
    if (!calib_)
      throw Error("cache type '" + name() + "' needs calibration data: run `tq calibrate " +
                  "--preset kvquant` and pass --codebooks FILE");
  }

  int bits_, dim_;
  bool key_;
  RopePairing rope_;
  std::vector<float> inv_freq_;
  float freq_scale_;
  int n_out_, idx_bytes_;
  size_t header_ = 0, codes_off_ = 0, block_bytes_ = 0;
  std::shared_ptr<const KvQuantCalibration> calib_;
  std::vector<float> levels_;
};

}  // namespace

void kvq_normalised(const float* x, int d, const float* center, const float* range, bool is_key,
                    std::vector<float>& out) {
  const std::vector<int> o = pick_outliers(x, d, center, range, kvq_outliers(d));
  std::vector<char> is_out(d, 0);
  for (int j : o) is_out[j] = 1;
  if (is_key) {
    for (int j = 0; j < d; ++j)
      if (!is_out[j]) out.push_back(std::clamp((x[j] - center[j]) / range[j], -1.0f, 1.0f));
    return;
  }
  float m = INFINITY, M = -INFINITY;
  for (int j = 0; j < d; ++j)
    if (!is_out[j]) {
      m = std::min(m, x[j]);
      M = std::max(M, x[j]);
    }
  const float o16 = round_f16(0.5f * (M + m)), s16 = round_f16(0.5f * (M - m));
  if (!(s16 > 0.0f)) return;
  for (int j = 0; j < d; ++j)
    if (!is_out[j]) out.push_back((x[j] - o16) / s16);
}

void register_kvquant_codecs() {
  auto make = [](int bits) {
    return [bits](std::string_view t, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
      if (d % 2 != 0) unsupported_dim(t, d, "keys are rotated in RoPE pairs (d must be even)");
      return std::make_unique<KvQuantCodec>(bits, d, o);
    };
  };
  TypeTraits tr;
  tr.calibration = CalibrationKind::kKvQuant;
  tr.needs_calibration = true;
  tr.calibration_preset = kKvqPreset;
  tr.calibration_label = kKvqPreset;
  tr.calibrate_command = "`tq calibrate --preset kvquant`";
  tr.default_sinks = kKvqDefaultSinks;  // KVQuant keeps the first token in f16
  tr.positional = true;
  register_codec({"kvquant3",
                  "KVQuant-style 3-bit: pre-RoPE per-channel keys (calibrated ranges), per-token "
                  "values, per-layer non-uniform levels, ~1% fp16 outliers per token "
                  "(3.375/3.875 bpv at d=64); needs `tq calibrate --preset kvquant`; tq compare "
                  "keeps S=1 sink token f16 unless --sinks is given",
                  make(3), 75, tr});
  register_codec({"kvquant4",
                  "KVQuant-style 4-bit: pre-RoPE per-channel keys (calibrated ranges), per-token "
                  "values, per-layer non-uniform levels, ~1% fp16 outliers per token "
                  "(4.375/4.875 bpv at d=64); needs `tq calibrate --preset kvquant`; tq compare "
                  "keeps S=1 sink token f16 unless --sinks is given",
                  make(4), 76, tr});
}

}  // namespace tq
