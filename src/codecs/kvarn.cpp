// KVarN baseline cache types kvarn4 and kvarn2 (DESIGN.md §2.5; the method, its constants and
// the block layouts are in codecs/kvarn.h). kvarnB is the key form (b-bit keys, per-channel
// RTN over the 128-token tile) when CodecOptions::is_key, else the value form (b-bit values,
// per-token RTN over the head's d channels); the `tq compare` row `kvarn` is the authors'
// preset kvarn_k4v2_g128 = kvarn4 keys + kvarn2 values with the first 128 tokens f16.
//
// block_tokens = 128. bpv of the stored tiles (fp16 scales included; the f16 sink and the
// incomplete newest tile are counted by the cache): key b + 8·(2d + 128)/(128·d), value
// b + 8·(d + 256)/(128·d) → kvarn4 keys 4.5 (d = 64) / 4.375 (d = 128), kvarn2 values
// 2.625 / 2.375 (the other forms: kvarn4 values 4.625 / 4.375, kvarn2 keys 2.5 / 2.375). d must be
// a power of two (Sylvester Hadamard).
//
// Attention on codes, in the rotated domain (q' = H q / √d, which the Hadamard's orthogonality
// makes q'·k' = q·k): key scores per tile are T_t·(Σ_j q'_j S_j c_jt + Σ_j q'_j Z_j); values
// accumulate C_j·Σ_t w_t (S_t c_tj + Z_t) and finish() applies H/√d once (H is symmetric and
// H·H = d·I, so it is its own inverse up to the scale).
#include "codecs/kvarn.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "codecs/common.h"
#include "core/bitpack.h"
#include "core/half.h"
#include "core/rotation.h"

namespace tq {
namespace kvarn {

// The struct forms of the layouts agree with the offsets the codec uses.
template <int D, int B>
constexpr bool layout_matches() {
  using K = KeyBlock<D, B>;
  using V = ValueBlock<D, B>;
  constexpr Layout k = key_layout(D, B), v = value_layout(D, B);
  return sizeof(K) == k.bytes && offsetof(K, s_chan) == k.a && offsetof(K, z_chan) == k.b &&
         offsetof(K, s_tok) == k.c && sizeof(V) == v.bytes && offsetof(V, s_chan) == v.a &&
         offsetof(V, s_tok) == v.b && offsetof(V, z_tok) == v.c;
}
static_assert(layout_matches<64, 4>() && layout_matches<64, 2>(), "kvarn layouts, d = 64");
static_assert(layout_matches<128, 4>() && layout_matches<128, 2>(), "kvarn layouts, d = 128");
// kvarn_k4v2_g128 at d = 128: 8960-byte key and 4864-byte value records, as the authors'
// KVarNConfig.k_packed_bytes + k_scale_bytes and v_packed_bytes + v_scale_bytes.
static_assert(key_layout(128, 4).bytes == 8192 + 768 && value_layout(128, 2).bytes == 4096 + 768);

namespace {

// Unbiased standard deviation of n values `stride` apart (two passes, double).
double std_unbiased(const float* x, int n, size_t stride) {
  if (n < 2) return 0.0;
  double m = 0;
  for (int i = 0; i < n; ++i) m += x[size_t(i) * stride];
  m /= n;
  double s = 0;
  for (int i = 0; i < n; ++i) {
    const double e = x[size_t(i) * stride] - m;
    s += e * e;
  }
  return std::sqrt(s / (n - 1));
}

void apply_scales(const float* tile, int R, int C, const float* s_col, const float* s_row,
                  float* cur) {
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      cur[size_t(r) * C + c] = tile[size_t(r) * C + c] / s_col[c] / s_row[r];
}

double imbalance_of(const float* cur, int R, int C) {
  double cmax = 0, cmin = INFINITY, rmax = 0, rmin = INFINITY;
  for (int c = 0; c < C; ++c) {
    const double s = std_unbiased(cur + c, R, size_t(C));
    cmax = std::max(cmax, s), cmin = std::min(cmin, s);
  }
  for (int r = 0; r < R; ++r) {
    const double s = std_unbiased(cur + size_t(r) * C, C, 1);
    rmax = std::max(rmax, s), rmin = std::min(rmin, s);
  }
  return cmax / std::max(cmin, 1e-8) + rmax / std::max(rmin, 1e-8);
}

float clip_log(float v) { return std::clamp(v, kLogScaleMin, kLogScaleMax); }
float clip_std(double s) { return float(std::clamp(s, double(kClipStdMin), double(kClipStdMax))); }

}  // namespace

double imbalance(const float* tile, int R, int C, const float* s_col, const float* s_row) {
  std::vector<float> cur(size_t(R) * C);
  apply_scales(tile, R, C, s_col, s_row, cur.data());
  return imbalance_of(cur.data(), R, C);
}

double variance_normalize(const float* tile, int R, int C, int iters, float* s_col, float* s_row) {
  std::vector<float> log_c(C, 0.f), log_r(R, 0.f), ec(C, 1.f), er(R, 1.f);
  std::vector<float> cur(tile, tile + size_t(R) * C);
  double best = imbalance_of(cur.data(), R, C);
  std::fill(s_col, s_col + C, 1.f);
  std::fill(s_row, s_row + R, 1.f);
  for (int it = 0; it < iters; ++it) {
    for (int c = 0; c < C; ++c)  // columns: std over the rows
      log_c[c] = clip_log(log_c[c] + std::log(clip_std(std_unbiased(&cur[c], R, size_t(C)))));
    for (int c = 0; c < C; ++c) ec[c] = std::exp(log_c[c]);
    apply_scales(tile, R, C, ec.data(), er.data(), cur.data());
    for (int r = 0; r < R; ++r)  // rows: std over the columns
      log_r[r] = clip_log(log_r[r] + std::log(clip_std(std_unbiased(&cur[size_t(r) * C], C, 1))));
    for (int r = 0; r < R; ++r) er[r] = std::exp(log_r[r]);
    apply_scales(tile, R, C, ec.data(), er.data(), cur.data());
    const double imb = imbalance_of(cur.data(), R, C);
    if (imb <= best) {  // best so far, ties to the later iterate (as the authors' `<=`)
      best = imb;
      std::copy(ec.begin(), ec.end(), s_col);
      std::copy(er.begin(), er.end(), s_row);
    }
  }
  return best;
}

}  // namespace kvarn

namespace {

using kvarn::kTile;

class KvarnCodec final : public Codec {
 public:
  KvarnCodec(int dim, int bits, bool is_key)
      : dim_(dim),
        bits_(bits),
        is_key_(is_key),
        lay_(is_key ? kvarn::key_layout(dim, bits) : kvarn::value_layout(dim, bits)),
        row_len_(is_key ? kTile : dim),
        row_bytes_(packed_bytes(size_t(row_len_), bits)),
        inv_sqrt_d_(float(1.0 / std::sqrt(double(dim)))) {}

  std::string name() const override { return "kvarn" + std::to_string(bits_); }
  int dim() const override { return dim_; }
  int block_tokens() const override { return kTile; }
  size_t block_bytes() const override { return lay_.bytes; }

  void encode(const float* x, size_t n_blocks, uint8_t* codes) const override {
    check_finite(x, n_blocks * kTile * dim_, "encode");
    check_fp16_range(x, n_blocks * kTile * dim_, name());
    const int d = dim_, R = is_key_ ? d : kTile, C = is_key_ ? kTile : d;
    const int qmax = (1 << bits_) - 1;
    std::vector<float> y(size_t(kTile) * d), tile(size_t(R) * C), s_col(C), s_row(R);
    std::vector<uint8_t> q(static_cast<size_t>(C));
    for (size_t b = 0; b < n_blocks; ++b) {
      uint8_t* blk = codes + b * lay_.bytes;
      std::memset(blk, 0, lay_.bytes);
      // 1. Rotation of every token.
      for (int t = 0; t < kTile; ++t) rotate(x + (b * kTile + t) * d, &y[size_t(t) * d]);
      // The tile: keys [channel][token], values [token][channel].
      for (int t = 0; t < kTile; ++t)
        for (int j = 0; j < d; ++j)
          tile[is_key_ ? size_t(j) * C + t : size_t(t) * C + j] = y[size_t(t) * d + j];
      // 2. Variance normalisation.
      kvarn::variance_normalize(tile.data(), R, C, kvarn::kSinkhornIters, s_col.data(),
                                s_row.data());
      // 3. Per-row asymmetric RTN of the balanced tile, 4. folded into the row's scale.
      for (int r = 0; r < R; ++r) {
        float* row = &tile[size_t(r) * C];
        for (int c = 0; c < C; ++c) row[c] = row[c] / s_col[c] / s_row[r];
        const auto [mn, mx] = std::minmax_element(row, row + C);
        const float lo = *mn, scale = std::max((*mx - *mn) / float(qmax), kvarn::kMinRtnScale);
        for (int c = 0; c < C; ++c)
          q[size_t(c)] =
              uint8_t(std::clamp(std::nearbyint((row[c] - lo) / scale), 0.f, float(qmax)));
        pack_bits(q.data(), size_t(C), bits_, blk + lay_.codes + size_t(r) * row_bytes_);
        // Row scale and zero: keys' rows are channels (array a, b), values' rows tokens (b, c).
        store_f16(blk + (is_key_ ? lay_.a : lay_.b) + 2 * size_t(r), s_row[r] * scale);
        store_f16(blk + (is_key_ ? lay_.b : lay_.c) + 2 * size_t(r), s_row[r] * lo);
      }
      // The other axis' Sinkhorn scale: keys per token (array c), values per channel (a).
      for (int c = 0; c < C; ++c)
        store_f16(blk + (is_key_ ? lay_.c : lay_.a) + 2 * size_t(c), s_col[c]);
      for (size_t i = lay_.a; i < lay_.bytes; i += 2)
        if (!std::isfinite(load_f16(blk + i)))
          throw Error("cache type '" + name() +
                      "': a tile's scale or zero is outside the fp16 range (values too large)");
    }
  }

  void decode(const uint8_t* codes, size_t n_blocks, float* x) const override {
    std::vector<float> y(size_t(kTile) * dim_);
    for (size_t b = 0; b < n_blocks; ++b) {
      decode_rotated(codes + b * lay_.bytes, y.data());
      for (int t = 0; t < kTile; ++t) unrotate(&y[size_t(t) * dim_], x + (b * kTile + t) * dim_);
    }
  }

  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    auto s = std::make_unique<VecQuery>();
    s->q.resize(dim_);
    rotate(q, s->q.data());
    return s;
  }

  void score(const QueryState& qs, const uint8_t* codes, size_t n_blocks,
             float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t b = 0; b < n_blocks; ++b) score_block(codes + b * lay_.bytes, q, out + b * kTile);
  }

  void accumulate(const uint8_t* codes, size_t n_blocks, const float* w,
                  float* acc) const override {
    std::vector<uint8_t> c(static_cast<size_t>(row_len_));
    std::vector<float> sc(dim_);
    for (size_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = codes + b * lay_.bytes;
      const float* wb = w + b * kTile;
      if (is_key_) {  // acc_j += S_j Σ_t (w_t T_t) c_jt + Z_j Σ_t w_t T_t
        std::vector<float> wt(kTile);
        float wsum = 0;
        for (int t = 0; t < kTile; ++t) wsum += wt[t] = wb[t] * f16(blk, lay_.c, t);
        for (int j = 0; j < dim_; ++j) {
          unpack_bits(blk + lay_.codes + size_t(j) * row_bytes_, kTile, bits_, c.data());
          float a = 0;
          for (int t = 0; t < kTile; ++t) a += wt[t] * float(c[t]);
          acc[j] += f16(blk, lay_.a, j) * a + f16(blk, lay_.b, j) * wsum;
        }
      } else {  // acc_j += C_j Σ_t w_t (S_t c_tj + Z_t)
        std::fill(sc.begin(), sc.end(), 0.f);
        float zsum = 0;
        for (int t = 0; t < kTile; ++t) {
          unpack_bits(blk + lay_.codes + size_t(t) * row_bytes_, size_t(dim_), bits_, c.data());
          const float s = wb[t] * f16(blk, lay_.b, t);
          for (int j = 0; j < dim_; ++j) sc[j] += s * float(c[j]);
          zsum += wb[t] * f16(blk, lay_.c, t);
        }
        for (int j = 0; j < dim_; ++j) acc[j] += f16(blk, lay_.a, j) * (sc[j] + zsum);
      }
    }
  }

  void finish(const float* acc, float* out) const override { unrotate(acc, out); }

  // The rotated-domain tile of one block (kTile × d, token-major): the stored form decoded.
  void decode_rotated(const uint8_t* blk, float* y) const {
    std::vector<uint8_t> c(static_cast<size_t>(row_len_));
    if (is_key_) {
      for (int j = 0; j < dim_; ++j) {
        unpack_bits(blk + lay_.codes + size_t(j) * row_bytes_, kTile, bits_, c.data());
        const float s = f16(blk, lay_.a, j), z = f16(blk, lay_.b, j);
        for (int t = 0; t < kTile; ++t)
          y[size_t(t) * dim_ + j] = (float(c[t]) * s + z) * f16(blk, lay_.c, t);
      }
    } else {
      for (int t = 0; t < kTile; ++t) {
        unpack_bits(blk + lay_.codes + size_t(t) * row_bytes_, size_t(dim_), bits_, c.data());
        const float s = f16(blk, lay_.b, t), z = f16(blk, lay_.c, t);
        for (int j = 0; j < dim_; ++j)
          y[size_t(t) * dim_ + j] = (float(c[j]) * s + z) * f16(blk, lay_.a, j);
      }
    }
  }

 private:
  static float f16(const uint8_t* blk, size_t off, int i) {
    return load_f16(blk + off + 2 * size_t(i));
  }

  void rotate(const float* x, float* y) const {
    if (y != x) std::memcpy(y, x, sizeof(float) * dim_);
    fwht_ref(y, dim_);
    for (int j = 0; j < dim_; ++j) y[j] *= inv_sqrt_d_;
  }
  // H/√d is its own inverse.
  void unrotate(const float* y, float* x) const { rotate(y, x); }

  // The 128 scores of one block against the rotated query q'.
  void score_block(const uint8_t* blk, const float* q, float* out) const {
    std::vector<uint8_t> c(static_cast<size_t>(row_len_));
    if (is_key_) {  // T_t (Σ_j q'_j S_j c_jt + Σ_j q'_j Z_j)
      std::vector<float> a(kTile, 0.f);
      float c0 = 0;
      for (int j = 0; j < dim_; ++j) {
        unpack_bits(blk + lay_.codes + size_t(j) * row_bytes_, kTile, bits_, c.data());
        const float qs = q[j] * f16(blk, lay_.a, j);
        for (int t = 0; t < kTile; ++t) a[t] += qs * float(c[t]);
        c0 += q[j] * f16(blk, lay_.b, j);
      }
      for (int t = 0; t < kTile; ++t) out[t] = f16(blk, lay_.c, t) * (a[t] + c0);
    } else {  // S_t Σ_j (q'_j C_j) c_tj + Z_t Σ_j q'_j C_j
      std::vector<float> qc(dim_);
      float qsum = 0;
      for (int j = 0; j < dim_; ++j) qsum += qc[j] = q[j] * f16(blk, lay_.a, j);
      for (int t = 0; t < kTile; ++t) {
        unpack_bits(blk + lay_.codes + size_t(t) * row_bytes_, size_t(dim_), bits_, c.data());
        float a = 0;
        for (int j = 0; j < dim_; ++j) a += qc[j] * float(c[j]);
        out[t] = f16(blk, lay_.b, t) * a + f16(blk, lay_.c, t) * qsum;
      }
    }
  }

  int dim_, bits_;
  bool is_key_;
  kvarn::Layout lay_;
  int row_len_;
  size_t row_bytes_;
  float inv_sqrt_d_;
};

}  // namespace

void register_kvarn_codecs() {
  auto make = [](int bits) {
    return [bits](std::string_view t, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
      if (!is_pow2(d))
        unsupported_dim(t, d, "KVarN's Sylvester Hadamard rotation needs a power of two");
      return std::make_unique<KvarnCodec>(d, bits, o.is_key);
    };
  };
  // The authors keep the first 128 tokens (one tile) f16 and no newest-R window beyond the
  // incomplete tile; tq compare applies the sinks unless --sinks / @S= says otherwise.
  TypeTraits tr;
  tr.default_sinks = kvarn::kDefaultSinks;
  // A baseline, as its authors define it: keys not mean-centred by default (--center-keys or
  // @C=1 centres them; DESIGN.md §3.1).
  tr.center_keys = false;
  register_codec({"kvarn4",
                  "KVarN 4-bit (arXiv 2606.03458): Hadamard, 2-axis variance normalisation, "
                  "RTN over 128-token tiles (K per channel, V per token), fp16 scales "
                  "(K/V 4.5/4.625 bpv at d=64, 4.375 at d=128); tq compare keeps the first 128 "
                  "tokens f16 unless --sinks is given; row `kvarn` = K kvarn4 + V kvarn2",
                  make(4), 72, tr});
  register_codec({"kvarn2",
                  "KVarN 2-bit (arXiv 2606.03458): as kvarn4 with 2-bit codes "
                  "(K/V 2.5/2.625 bpv at d=64, 2.375 at d=128); the preset's values",
                  make(2), 73, tr});
}

}  // namespace tq
