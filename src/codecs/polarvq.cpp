#include "codecs/polarvq.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/bitpack.h"
#include "core/half.h"
#include "core/kmeans.h"

namespace tq {

// ---------------------------------------------------------------- presets
// Bits per value at d = 128 (see `tq types`), averaged over K and V: quality 3.69 (4.34x),
// balanced 2.94 (5.45x), max 2.22 (7.21x), gqa 4.56 (3.51x).
PolarVqParams polarvq_preset(const std::string& name) {
  PolarVqParams p;
  p.preset = name;
  // Every preset's parameters were chosen by KLD on held-out calibration text
  // (docs/polarvq-results.md, "Preset sweep"): angle bits decide almost everything, and
  // magnitudes grouped per pair-channel over a block of tokens (r is RoPE-invariant, each
  // channel has its own range) beat groups within a token by 1.1-2x in KLD.
  if (name == "quality") {  // stage 1 only
    // KLD 0.077 vs 0.85 for the seed's 4-bit r / 2-bit θ within-token stage 1 (= stage1).
    p.mag_bits = 3; p.angle_bits = 5; p.key_block_tokens = 128;
    p.value_bits = 3; p.value_group = 128;
  } else if (name == "gqa") {  // stage 1 only with 4-bit magnitudes, finer angles
    // KLD 0.028 vs 0.18 for the earlier 3-bit θ / 5-bit values.
    p.mag_bits = 4; p.angle_bits = 5; p.key_block_tokens = 128; p.value_bits = 4;
  } else if (name == "balanced") {  // stage 1 + stage 2 (values only)
    // KLD 0.45 vs 1.09 for the earlier 3-bit θ within-token keys (and 1.54 for the seed's
    // 2-bit θ + key PQ); key PQ bits are better spent on angles.
    p.mag_bits = 2; p.angle_bits = 4; p.key_block_tokens = 128;
    p.value_bits = 2; p.value_group = 128;
    p.vq_size = 256; p.vq_dim = 16; p.subspaces = 4; p.vq_keys = false;
  } else if (name == "max") {  // stage 1 + stage 2 (a small value PQ) + coarser grouping
    // KLD 1.54 vs 2.34 for the earlier 1-bit θ + key PQ; 1-bit values or 1-bit r: KLD > 3.4.
    p.mag_bits = 2; p.angle_bits = 2; p.key_block_tokens = 128;
    p.value_bits = 2; p.value_group = 128;
    p.vq_size = 16; p.vq_dim = 64; p.subspaces = 4; p.vq_keys = false;
  } else if (name == "stage1") {  // the seed's default stage 1 (the old quality), for comparisons
    p.mag_bits = 4; p.angle_bits = 2; p.value_bits = 4;
  } else {
    throw Error("unknown polar-vq preset '" + name +
                "' (presets: quality, balanced, max, gqa, stage1)");
  }
  return p;
}

void validate_polarvq_params(const PolarVqParams& p, const std::string& where) {
  const auto need = [&](const char* name, int v, int lo, int hi) {
    if (v < lo || v > hi)
      throw Error(where + ": " + name + " = " + std::to_string(v) + " must be in [" +
                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  need("mag_bits", p.mag_bits, 1, 8);
  need("angle_bits", p.angle_bits, 1, 8);
  need("value_bits", p.value_bits, 1, 8);
  need("group_size", p.group_size, 1, 65536);
  need("key_block_tokens", p.key_block_tokens, 1, 65536);
  need("value_group", p.value_group, 1, 65536);
  need("vq_size", p.vq_size, 0, 65536);
  if (p.vq_size != 0) {
    if (p.vq_size < 2 || (p.vq_size & (p.vq_size - 1)) != 0)
      throw Error(where + ": vq_size = " + std::to_string(p.vq_size) +
                  " must be 0 (no stage 2) or a power of two in [2, 65536]");
    need("vq_dim", p.vq_dim, 1, 65536);
    need("subspaces", p.subspaces, 1, 65536);
    need("key_vq_dim", p.key_vq_dim, 0, 65536);
  }
}

std::vector<std::string> polarvq_preset_names() {
  return {"quality", "balanced", "max", "gqa", "stage1"};
}

// ---------------------------------------------------------------- codec
struct PolarVqCodec::Unpacked {
  std::vector<float> mag;       // keys: dequantized magnitudes (d/2)
  std::vector<uint8_t> ang;     // keys: angle indices (d/2)
  std::vector<float> val;       // values: dequantized stage-1 values, permuted order (d)
  std::vector<uint16_t> vq;     // stage-2 codes
  // The block header (fp16 min, scale per group) as floats, decoded once per block: every
  // token of a 128-token key block shares it.
  std::vector<float> hdr;
  const uint8_t* hdr_blk = nullptr;
};

namespace {


// Uniform b-bit quantizer with fp16 (min, scale), as stored.
struct Uniform {
  float mn = 0, sc = 0;
  int levels = 1;
  void fit(float lo, float hi, int bits) {
    levels = (1 << bits) - 1;
    mn = round_f16(lo);
    sc = round_f16(std::max(0.0f, hi - mn) / float(levels));
    // Make sure the top level still reaches hi after fp16 rounding of the scale.
    if (sc > 0 && mn + sc * levels < hi) sc = round_f16(std::nextafter(sc, 1e30f) * 1.0005f);
  }
  int code(float v) const {
    if (sc <= 0) return 0;
    const int c = int(std::lround((v - mn) / sc));
    return std::clamp(c, 0, levels);
  }
  float value(int c) const { return mn + sc * float(c); }
};

struct PvqQuery : QueryState {
  std::vector<float> table;  // keys: (d/2) × A angle table; values: permuted query (d)
  std::vector<float> lut;    // stage 2: n_sub × K
};

}  // namespace

PolarVqCodec::PolarVqCodec(const PolarVqParams& p, int dim, const CodecOptions& opts)
    : p_(p), dim_(dim), key_(opts.is_key), rope_(opts.rope), half_(dim / 2) {
  const std::string nm = "polar-vq:" + p.preset;
  if (dim % 2) unsupported_dim(nm, dim, "needs an even dimension");
  validate_polarvq_params(p, nm);
  calib_ = std::dynamic_pointer_cast<const PolarVqCalibration>(opts.calibration);
  if (opts.calibration && !calib_) throw Error(nm + ": the calibration given is not polar-vq's");
  if (calib_ && calib_->dim != dim)
    throw Error(nm + ": codebooks are for head dimension " + std::to_string(calib_->dim) +
                ", the model has " + std::to_string(dim));
  const int A = 1 << p.angle_bits;
  if (key_) {
    if (calib_ && !calib_->angle_centroids.empty()) {
      if (calib_->angle_centroids.size() != size_t(half_) * A)
        throw Error(nm + ": angle codebook has the wrong size for " +
                    std::to_string(p.angle_bits) + "-bit angles");
      angles_ = calib_->angle_centroids;
    } else {
      angles_.resize(size_t(half_) * A);
      for (int i = 0; i < half_; ++i)
        for (int c = 0; c < A; ++c) angles_[size_t(i) * A + c] = float(-M_PI + (c + 0.5) * 2 * M_PI / A);
    }
  } else {
    perm_.resize(dim);
    for (int j = 0; j < dim; ++j) perm_[j] = j;
    if (calib_ && !calib_->value_perm.empty()) {
      if (calib_->value_perm.size() != size_t(dim)) throw Error(nm + ": bad value permutation");
      perm_ = calib_->value_perm;
      std::vector<char> seen(dim, 0);
      for (int c : perm_) {
        if (c < 0 || c >= dim || seen[c]) throw Error(nm + ": bad value permutation");
        seen[c] = 1;
      }
    }
  }
  // Stage 2.
  vq_ = p.has_vq(key_);
  if (vq_) {
    vq_dim_ = p.vq_dim_for(key_);
    if (p.vq_size < 2 || (p.vq_size & (p.vq_size - 1)) || p.vq_size > 65536)
      throw Error(nm + ": codebook size must be a power of two in 2..65536");
    if (vq_dim_ < 1 || dim % vq_dim_)
      unsupported_dim(nm, dim, "stage-2 sub-vectors of " + std::to_string(vq_dim_) +
                                   " values must tile the head");
    vq_bits_ = 0;
    while ((1 << vq_bits_) < p.vq_size) ++vq_bits_;
    int s = std::max(1, std::min(p.subspaces, dim / vq_dim_));
    while ((dim / vq_dim_) % s) --s;
    sub_per_space_ = (dim / vq_dim_) / s;
    const auto& books = key_ ? (calib_ ? calib_->key_vq : std::vector<float>{})
                             : (calib_ ? calib_->value_vq : std::vector<float>{});
    // Without codebooks the codec still reports its layout (for `tq types`) but refuses to
    // encode or score.
    if (books.empty()) missing_books_ = true;
    else if (books.size() != size_t(s) * p.vq_size * vq_dim_)
      throw Error(nm + ": stage-2 codebook has the wrong size (incompatible codebook file)");
  }
  // Layout.
  if (key_) {
    const int T = p.key_block_tokens;
    if (T < 1) throw Error(nm + ": key_block_tokens must be ≥ 1");
    groups_ = T == 1 ? (half_ + p.group_size - 1) / p.group_size : half_;
    header_bytes_ = size_t(groups_) * 4;
    token_bits_ = size_t(half_) * (p.mag_bits + p.angle_bits) + size_t(vq_count()) * vq_bits_;
    block_bytes_ = header_bytes_ + packed_bytes(token_bits_ * T, 1);
  } else {
    groups_ = (dim + p.value_group - 1) / p.value_group;
    header_bytes_ = size_t(groups_) * 4;
    token_bits_ = size_t(dim) * p.value_bits + size_t(vq_count()) * vq_bits_;
    block_bytes_ = header_bytes_ + packed_bytes(token_bits_, 1);
  }
}

void PolarVqCodec::pair_index(int i, int& a, int& b) const {
  if (rope_ == RopePairing::kNeox) {
    a = i;
    b = i + half_;
  } else {
    a = 2 * i;
    b = 2 * i + 1;
  }
}

const float* PolarVqCodec::vq_entry(int sub, int code) const {
  const auto& books = key_ ? calib_->key_vq : calib_->value_vq;
  const int space = sub / sub_per_space_;
  return &books[(size_t(space) * p_.vq_size + code) * vq_dim_];
}

void PolarVqCodec::encode_block(const float* x, uint8_t* blk) const {
  const int T = block_tokens();
  const int A = 1 << p_.angle_bits;
  std::vector<Uniform> q(groups_);
  std::vector<float> r(size_t(T) * half_), th(size_t(T) * half_), v(dim_);
  // Header: fit the uniform quantizers.
  if (key_) {
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < half_; ++i) {
        int a, b;
        pair_index(i, a, b);
        const float ka = x[size_t(t) * dim_ + a], kb = x[size_t(t) * dim_ + b];
        r[size_t(t) * half_ + i] = std::sqrt(ka * ka + kb * kb);
        th[size_t(t) * half_ + i] = std::atan2(kb, ka);
      }
    for (int g = 0; g < groups_; ++g) {
      float lo = 1e30f, hi = -1e30f;
      if (T == 1) {
        for (int i = g * p_.group_size; i < std::min(half_, (g + 1) * p_.group_size); ++i)
          lo = std::min(lo, r[i]), hi = std::max(hi, r[i]);
      } else {
        for (int t = 0; t < T; ++t)
          lo = std::min(lo, r[size_t(t) * half_ + g]), hi = std::max(hi, r[size_t(t) * half_ + g]);
      }
      q[g].fit(lo, hi, p_.mag_bits);
    }
  } else {
    for (int j = 0; j < dim_; ++j) v[j] = x[perm_[j]];
    for (int g = 0; g < groups_; ++g) {
      float lo = 1e30f, hi = -1e30f;
      for (int j = g * p_.value_group; j < std::min(dim_, (g + 1) * p_.value_group); ++j)
        lo = std::min(lo, v[j]), hi = std::max(hi, v[j]);
      q[g].fit(lo, hi, p_.value_bits);
    }
  }
  for (int g = 0; g < groups_; ++g) {
    store_f16(blk + 4 * g, q[g].mn);
    store_f16(blk + 4 * g + 2, q[g].sc);
  }
  BitWriter w(blk + header_bytes_);
  Unpacked u;
  std::vector<float> rec(dim_), res(dim_);
  for (int t = 0; t < T; ++t) {
    const float* xt = x + size_t(t) * dim_;
    if (key_) {
      u.mag.resize(half_);
      u.ang.resize(half_);
      for (int i = 0; i < half_; ++i) {
        const Uniform& qq = q[T == 1 ? i / p_.group_size : i];
        const int c = qq.code(r[size_t(t) * half_ + i]);
        w.put(uint32_t(c), p_.mag_bits);
        u.mag[i] = qq.value(c);
      }
      for (int i = 0; i < half_; ++i) {
        const float* cent = &angles_[size_t(i) * A];
        int best = 0;
        float bd = 1e30f;
        for (int c = 0; c < A; ++c) {
          const float e = std::fabs(angle_diff(th[size_t(t) * half_ + i], cent[c]));
          if (e < bd) bd = e, best = c;
        }
        w.put(uint32_t(best), p_.angle_bits);
        u.ang[i] = uint8_t(best);
      }
    } else {
      if (T != 1) for (int j = 0; j < dim_; ++j) v[j] = xt[perm_[j]];
      u.val.resize(dim_);
      for (int j = 0; j < dim_; ++j) {
        const Uniform& qq = q[j / p_.value_group];
        const int c = qq.code(v[j]);
        w.put(uint32_t(c), p_.value_bits);
        u.val[j] = qq.value(c);
      }
    }
    if (vq_) {
      u.vq.clear();
      reconstruct(u, rec.data());  // stage 1 only (u.vq empty)
      for (int j = 0; j < dim_; ++j) res[j] = (key_ ? xt[j] : v[j]) - rec[j];
      const auto& books = key_ ? calib_->key_vq : calib_->value_vq;
      for (int s = 0; s < vq_count(); ++s) {
        const int space = s / sub_per_space_;
        const int c = nearest_centroid(&res[size_t(s) * vq_dim_],
                                       &books[size_t(space) * p_.vq_size * vq_dim_], p_.vq_size,
                                       vq_dim_);
        w.put(uint32_t(c), vq_bits_);
      }
    }
  }
  while (w.bits_written() % 8) w.put(0, 1);
}

void PolarVqCodec::unpack_token(const uint8_t* blk, int t, Unpacked& u) const {
  BitReader rd(blk + header_bytes_, block_bytes_ - header_bytes_);
  rd.skip(size_t(t) * token_bits_);  // to token t (bit-exact offset)
  if (u.hdr_blk != blk) {
    u.hdr.resize(2 * size_t(groups_));
    for (int g = 0; g < groups_; ++g) {
      u.hdr[2 * g] = load_f16(blk + 4 * g);
      u.hdr[2 * g + 1] = load_f16(blk + 4 * g + 2);
    }
    u.hdr_blk = blk;
  }
  const float* h = u.hdr.data();
  if (key_) {
    u.mag.resize(half_);
    u.ang.resize(half_);
    const bool intok = block_tokens() == 1;
    for (int i = 0; i < half_; ++i) {
      const int g = intok ? i / p_.group_size : i;
      u.mag[i] = h[2 * g] + h[2 * g + 1] * float(rd.get(p_.mag_bits));
    }
    for (int i = 0; i < half_; ++i) u.ang[i] = uint8_t(rd.get(p_.angle_bits));
  } else {
    u.val.resize(dim_);
    for (int j = 0; j < dim_; ++j) {
      const int g = j / p_.value_group;
      u.val[j] = h[2 * g] + h[2 * g + 1] * float(rd.get(p_.value_bits));
    }
  }
  u.vq.resize(vq_count());
  for (auto& c : u.vq) c = uint16_t(rd.get(vq_bits_));
}

void PolarVqCodec::reconstruct(const Unpacked& u, float* x) const {
  const int A = 1 << p_.angle_bits;
  if (key_) {
    for (int i = 0; i < half_; ++i) {
      int a, b;
      pair_index(i, a, b);
      const float th = angles_[size_t(i) * A + u.ang[i]];
      x[a] = u.mag[i] * std::cos(th);
      x[b] = u.mag[i] * std::sin(th);
    }
  } else {
    std::copy(u.val.begin(), u.val.end(), x);
  }
  for (size_t s = 0; s < u.vq.size(); ++s) {
    const float* e = vq_entry(int(s), u.vq[s]);
    for (int t = 0; t < vq_dim_; ++t) x[s * vq_dim_ + t] += e[t];
  }
}

void PolarVqCodec::require_books() const {
  if (missing_books_)
    throw Error(name() + " needs learned codebooks: run `tq calibrate` and pass --codebooks FILE");
}

void PolarVqCodec::encode(const float* x, size_t n, uint8_t* codes) const {
  require_books();
  const int T = block_tokens();
  check_finite(x, n * T * dim_, "encode");
  for (size_t b = 0; b < n; ++b) encode_block(x + b * T * dim_, codes + b * block_bytes_);
}

void PolarVqCodec::decode(const uint8_t* codes, size_t n, float* x) const {
  const int T = block_tokens();
  Unpacked u;
  std::vector<float> tmp(dim_);
  for (size_t b = 0; b < n; ++b)
    for (int t = 0; t < T; ++t) {
      unpack_token(codes + b * block_bytes_, t, u);
      float* out = x + (b * T + t) * dim_;
      if (key_) {
        reconstruct(u, out);
      } else {
        reconstruct(u, tmp.data());
        for (int j = 0; j < dim_; ++j) out[perm_[j]] = tmp[j];
      }
    }
}

std::unique_ptr<QueryState> PolarVqCodec::prepare_query(const float* q) const {
  require_books();
  auto s = std::make_unique<PvqQuery>();
  const int A = 1 << p_.angle_bits;
  std::vector<float> qd(q, q + dim_);  // query in the stored order
  if (key_) {
    s->table.resize(size_t(half_) * A);
    for (int i = 0; i < half_; ++i) {
      int a, b;
      pair_index(i, a, b);
      for (int c = 0; c < A; ++c) {
        const float th = angles_[size_t(i) * A + c];
        s->table[size_t(i) * A + c] = q[a] * std::cos(th) + q[b] * std::sin(th);
      }
    }
  } else {
    for (int j = 0; j < dim_; ++j) qd[j] = q[perm_[j]];
    s->table = qd;
  }
  if (vq_) {
    s->lut.resize(size_t(vq_count()) * p_.vq_size);
    for (int sub = 0; sub < vq_count(); ++sub)
      for (int c = 0; c < p_.vq_size; ++c) {
        const float* e = vq_entry(sub, c);
        float acc = 0;
        for (int t = 0; t < vq_dim_; ++t) acc += qd[size_t(sub) * vq_dim_ + t] * e[t];
        s->lut[size_t(sub) * p_.vq_size + c] = acc;
      }
  }
  return s;
}

void PolarVqCodec::score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const {
  const auto& s = static_cast<const PvqQuery&>(qs);
  const int T = block_tokens(), A = 1 << p_.angle_bits;
  Unpacked u;
  for (size_t b = 0; b < n; ++b)
    for (int t = 0; t < T; ++t) {
      unpack_token(codes + b * block_bytes_, t, u);
      double acc = 0;
      if (key_) {
        for (int i = 0; i < half_; ++i) acc += double(u.mag[i]) * s.table[size_t(i) * A + u.ang[i]];
      } else {
        for (int j = 0; j < dim_; ++j) acc += double(u.val[j]) * s.table[j];
      }
      for (size_t k = 0; k < u.vq.size(); ++k) acc += s.lut[k * p_.vq_size + u.vq[k]];
      out[b * T + t] = float(acc);
    }
}

void PolarVqCodec::accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const {
  const int T = block_tokens();
  Unpacked u;
  std::vector<float> x(dim_);
  for (size_t b = 0; b < n; ++b)
    for (int t = 0; t < T; ++t) {
      unpack_token(codes + b * block_bytes_, t, u);
      reconstruct(u, x.data());  // keys: original order; values: permuted order
      const float wt = w[b * T + t];
      for (int j = 0; j < dim_; ++j) acc[j] += wt * x[j];
    }
}

void PolarVqCodec::finish(const float* acc, float* out) const {
  if (key_) {
    std::copy(acc, acc + dim_, out);
  } else {
    for (int j = 0; j < dim_; ++j) out[perm_[j]] = acc[j];
  }
}

void register_polarvq_codecs() {
  for (const auto& name : polarvq_preset_names()) {
    const auto p = polarvq_preset(name);
    std::string desc = "seed pipeline: pair-polar keys (" + std::to_string(p.mag_bits) + "-bit r, " +
                       std::to_string(p.angle_bits) + "-bit θ), " +
                       std::to_string(p.value_bits) + "-bit grouped values";
    if (p.vq_size)
      desc += " + residual PQ (" + std::to_string(p.vq_size) + " entries, sub-vectors of " +
              std::to_string(p.vq_dim) + ")";
    desc += p.vq_size ? "; needs --codebooks" : "; calibration optional";
    TypeTraits tr;
    tr.calibration = CalibrationKind::kPolarVq;
    tr.needs_calibration = p.vq_size > 0;
    tr.calibration_preset = name;
    tr.calibration_label = "polar-vq:" + name;
    tr.center_keys = true;  // the project's own keys: mean-centred by default
    register_codec({"polar-vq:" + name, desc,
                    [p](std::string_view, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
                      return std::make_unique<PolarVqCodec>(p, d, o);
                    },
                    300, tr});
  }
  // polar-vq:custom (a parameter sweep of `tq calibrate`) takes its parameters from the
  // codebook file: the cache builds it from CodebookFile::params, never through the factory.
  TypeTraits custom;
  custom.calibration = CalibrationKind::kPolarVq;
  custom.needs_calibration = true;
  custom.params_from_codebooks = true;
  custom.calibration_preset = "custom";
  custom.calibration_label = "polar-vq:custom";
  custom.center_keys = true;
  register_codec({"polar-vq:custom", "polar-vq with the parameters of a codebook file",
                  [](std::string_view t, int, const CodecOptions&) -> std::unique_ptr<Codec> {
                    throw Error("cache type '" + std::string(t) +
                                "' takes its parameters from a codebook file: pass --codebooks "
                                "FILE");
                  },
                  399, custom, /*listed=*/false});
}

}  // namespace tq
