// Baseline cache types (DESIGN.md §2.5): fp8_e4m3, int4-g64, and KIVI (kivi2, kivi4).
//
// fp8_e4m3 — OCP E4M3FN values with a per-token fp16 scale. A per-(layer, head) or per-tensor
//   scale would need calibration data, which this data-oblivious baseline does not have, so
//   each token stores s = fp16(amax/448) (amax = max_j |x_j|) and x_j ≈ s·e4m3(x_j/s), the codes
//   rounded to nearest even and saturated at ±448 (core conversion in codecs/fp8.h).
//   Token layout: bytes [0, 2) fp16 s; [2, 2 + d) one E4M3FN byte per value.
//   block_bytes = d + 2 → 8 + 16/d bpv (8.25 at d = 64, 8.125 at d = 128).
//
// int4-g64 — 4-bit asymmetric groups of 64 channels (the closest standard scheme to the seed's
//   "AWQ-KV 4bit" row). Per group: s = fp16((max − min)/15), m = fp16(min),
//   q_j = clamp(round((x_j − m)/s), 0, 15) with round-half-even and the stored (fp16) s and m,
//   x_j ≈ s·q_j + m. Token layout: d/64 groups of 36 bytes:
//   [fp16 s][fp16 m][32 bytes: element 2i in the low nibble of byte i, 2i+1 in the high].
//   4.5 bpv; d must be a multiple of 64.
//
// KIVI (Liu et al., arXiv 2402.02750) with G = 32, b = 2 or 4 bits, asymmetric min/scale:
//   keys  — per channel over groups of 32 tokens (block_tokens = 32). Block layout:
//           [d fp16 scales s_j][d fp16 mins m_j][32 token rows of d b-bit codes, each row an
//           LSB-first bit stream of d·b/8 bytes (core/bitpack.h)];
//           s_j = (max_t − min_t)/(2^b − 1) over the 32 tokens of channel j.
//   values — per token over groups of 32 channels (block_tokens = 1). Token layout:
//           [d/32 × (fp16 s, fp16 m)][d b-bit codes, LSB-first, d·b/8 bytes].
//   Codes: q = clamp(round((x − m)/s), 0, 2^b − 1) (half to even, stored fp16 s and m), so
//   x ≈ s·q + m. Both forms: 4·8/32 = 1 bit of metadata per value → b + 1 bpv (3.0 / 5.0).
//   The registry name kivi2/kivi4 gives the key form when CodecOptions::is_key, else the value
//   form. d must be a multiple of 32. (The newest-R-tokens f16 window is a KV-cache option.)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "codecs/common.h"
#include "codecs/fp8.h"
#include "core/bitpack.h"
#include "core/half.h"

namespace tq {
namespace {



// Asymmetric uniform quantizer of n values (stride apart) with fp16 scale and min. Writes the
// fp16 scale and min, returns the codes in q[0..n).
void quantize_asym(const float* x, size_t n, size_t stride, int bits, uint8_t* scale_out,
                   uint8_t* min_out, uint8_t* q) {
  float mn = x[0], mx = x[0];
  for (size_t i = 1; i < n; ++i) {
    mn = std::min(mn, x[i * stride]);
    mx = std::max(mx, x[i * stride]);
  }
  const int qmax = (1 << bits) - 1;
  store_f16(scale_out, (mx - mn) / float(qmax));
  store_f16(min_out, mn);
  const float s = load_f16(scale_out), m = load_f16(min_out);
  for (size_t i = 0; i < n; ++i) {
    if (s > 0.0f) {
      const float v = std::nearbyint((x[i * stride] - m) / s);
      q[i] = uint8_t(std::clamp(v, 0.0f, float(qmax)));
    } else {
      q[i] = 0;
    }
  }
}

// ---------------------------------------------------------------- fp8_e4m3
class Fp8Codec final : public Codec {
 public:
  explicit Fp8Codec(int dim) : dim_(dim) {}
  std::string name() const override { return "fp8_e4m3"; }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return size_t(dim_) + 2; }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    for (size_t t = 0; t < n; ++t) {
      const float* xt = x + t * dim_;
      uint8_t* blk = codes + t * block_bytes();
      float amax = 0;
      for (int j = 0; j < dim_; ++j) amax = std::max(amax, std::fabs(xt[j]));
      store_f16(blk, amax / 448.0f);
      const float s = load_f16(blk);
      for (int j = 0; j < dim_; ++j) blk[2 + j] = s > 0 ? f32_to_e4m3fn_sat(xt[j] / s) : 0;
    }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* blk = codes + t * block_bytes();
      const float s = load_f16(blk);
      for (int j = 0; j < dim_; ++j) x[t * dim_ + j] = s * e4m3fn_to_f32(blk[2 + j]);
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t t = 0; t < n; ++t) out[t] = fp8_dot_ref(codes + t * block_bytes(), q);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* blk = codes + t * block_bytes();
      const float a = w[t] * load_f16(blk);
      for (int j = 0; j < dim_; ++j) acc[j] += a * e4m3fn_to_f32(blk[2 + j]);
    }
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

  // Scalar reference score of one token: s · Σ_j q_j·e4m3(b_j).
  float fp8_dot_ref(const uint8_t* blk, const float* q) const {
    float a = 0;
    for (int j = 0; j < dim_; ++j) a += q[j] * e4m3fn_to_f32(blk[2 + j]);
    return load_f16(blk) * a;
  }

 private:
  int dim_;
};

// ---------------------------------------------------------------- int4-g64
constexpr int kG64 = 64, kG64Bytes = 4 + kG64 / 2;

class Int4G64Codec final : public Codec {
 public:
  explicit Int4G64Codec(int dim) : dim_(dim), groups_(dim / kG64) {}
  std::string name() const override { return "int4-g64"; }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return size_t(groups_) * kG64Bytes; }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    uint8_t q[kG64];
    for (size_t t = 0; t < n; ++t)
      for (int g = 0; g < groups_; ++g) {
        uint8_t* gb = codes + t * block_bytes() + size_t(g) * kG64Bytes;
        quantize_asym(x + t * dim_ + g * kG64, kG64, 1, 4, gb, gb + 2, q);
        for (int i = 0; i < kG64 / 2; ++i) gb[4 + i] = uint8_t(q[2 * i] | (q[2 * i + 1] << 4));
      }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    for (size_t t = 0; t < n; ++t)
      for (int g = 0; g < groups_; ++g) {
        const uint8_t* gb = codes + t * block_bytes() + size_t(g) * kG64Bytes;
        const float s = load_f16(gb), m = load_f16(gb + 2);
        float* y = x + t * dim_ + g * kG64;
        for (int j = 0; j < kG64; ++j) y[j] = s * float(code(gb, j)) + m;
      }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t t = 0; t < n; ++t) out[t] = int4_g64_dot_ref(codes + t * block_bytes(), q);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    for (size_t t = 0; t < n; ++t)
      for (int g = 0; g < groups_; ++g) {
        const uint8_t* gb = codes + t * block_bytes() + size_t(g) * kG64Bytes;
        const float s = w[t] * load_f16(gb), m = w[t] * load_f16(gb + 2);
        float* a = acc + g * kG64;
        for (int j = 0; j < kG64; ++j) a[j] += s * float(code(gb, j)) + m;
      }
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

  // Scalar reference score of one token: Σ_g s_g·Σ_j q_j·c_j + m_g·Σ_j q_j.
  float int4_g64_dot_ref(const uint8_t* tok, const float* q) const {
    float r = 0;
    for (int g = 0; g < groups_; ++g, q += kG64) {
      const uint8_t* gb = tok + size_t(g) * kG64Bytes;
      float a = 0, qsum = 0;
      for (int j = 0; j < kG64; ++j) {
        a += q[j] * float(code(gb, j));
        qsum += q[j];
      }
      r += load_f16(gb) * a + load_f16(gb + 2) * qsum;
    }
    return r;
  }

 private:
  static int code(const uint8_t* gb, int j) { return (gb[4 + j / 2] >> (4 * (j & 1))) & 0x0F; }
  int dim_, groups_;
};

// ---------------------------------------------------------------- KIVI
constexpr int kKiviG = 32;

// Keys: per-channel quantization over blocks of 32 tokens.
class KiviKeyCodec final : public Codec {
 public:
  KiviKeyCodec(int dim, int bits)
      : dim_(dim), bits_(bits), row_bytes_(packed_bytes(dim, bits)) {}
  std::string name() const override { return "kivi" + std::to_string(bits_); }
  int dim() const override { return dim_; }
  int block_tokens() const override { return kKiviG; }
  size_t block_bytes() const override { return 4 * size_t(dim_) + kKiviG * row_bytes_; }

  void encode(const float* x, size_t n_blocks, uint8_t* codes) const override {
    check_finite(x, n_blocks * kKiviG * dim_, "encode");
    check_fp16_range(x, n_blocks * kKiviG * dim_, name());
    std::vector<uint8_t> q(size_t(kKiviG) * dim_), col(kKiviG);
    for (size_t b = 0; b < n_blocks; ++b) {
      const float* xb = x + b * kKiviG * dim_;
      uint8_t* blk = codes + b * block_bytes();
      for (int j = 0; j < dim_; ++j) {
        quantize_asym(xb + j, kKiviG, dim_, bits_, blk + 2 * j, blk + 2 * (dim_ + j),
                      col.data());
        for (int t = 0; t < kKiviG; ++t) q[size_t(t) * dim_ + j] = col[t];
      }
      for (int t = 0; t < kKiviG; ++t)
        pack_bits(&q[size_t(t) * dim_], dim_, bits_, row(blk, t));
    }
  }
  void decode(const uint8_t* codes, size_t n_blocks, float* x) const override {
    std::vector<uint8_t> c(dim_);
    for (size_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = codes + b * block_bytes();
      for (int t = 0; t < kKiviG; ++t) {
        unpack_bits(row(blk, t), dim_, bits_, c.data());
        float* y = x + (b * kKiviG + t) * dim_;
        for (int j = 0; j < dim_; ++j) y[j] = scale(blk, j) * float(c[j]) + zero(blk, j);
      }
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  // Per block: q̂_j = q_j·s_j and c0 = Σ_j q_j·m_j once, then each token is Σ_j q̂_j·c_tj + c0.
  void score(const QueryState& qs, const uint8_t* codes, size_t n_blocks,
             float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t b = 0; b < n_blocks; ++b)
      kivi_key_score_ref(codes + b * block_bytes(), q, out + b * kKiviG);
  }
  void accumulate(const uint8_t* codes, size_t n_blocks, const float* w,
                  float* acc) const override {
    std::vector<uint8_t> c(dim_);
    std::vector<float> sc(dim_);
    for (size_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = codes + b * block_bytes();
      std::fill(sc.begin(), sc.end(), 0.0f);
      float wsum = 0;
      for (int t = 0; t < kKiviG; ++t) {
        const float wt = w[b * kKiviG + t];
        unpack_bits(row(blk, t), dim_, bits_, c.data());
        for (int j = 0; j < dim_; ++j) sc[j] += wt * float(c[j]);
        wsum += wt;
      }
      for (int j = 0; j < dim_; ++j) acc[j] += scale(blk, j) * sc[j] + zero(blk, j) * wsum;
    }
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

  // Scalar reference: the 32 scores of one block.
  void kivi_key_score_ref(const uint8_t* blk, const float* q, float* out) const {
    std::vector<float> qs(dim_);
    std::vector<uint8_t> c(dim_);
    float c0 = 0;
    for (int j = 0; j < dim_; ++j) {
      qs[j] = q[j] * scale(blk, j);
      c0 += q[j] * zero(blk, j);
    }
    for (int t = 0; t < kKiviG; ++t) {
      unpack_bits(row(blk, t), dim_, bits_, c.data());
      float a = 0;
      for (int j = 0; j < dim_; ++j) a += qs[j] * float(c[j]);
      out[t] = a + c0;
    }
  }

 private:
  float scale(const uint8_t* blk, int j) const { return load_f16(blk + 2 * j); }
  float zero(const uint8_t* blk, int j) const { return load_f16(blk + 2 * (dim_ + j)); }
  uint8_t* row(uint8_t* blk, int t) const { return blk + 4 * size_t(dim_) + t * row_bytes_; }
  const uint8_t* row(const uint8_t* blk, int t) const {
    return blk + 4 * size_t(dim_) + t * row_bytes_;
  }
  int dim_, bits_;
  size_t row_bytes_;
};

// Values: per-token quantization over groups of 32 channels.
class KiviValueCodec final : public Codec {
 public:
  KiviValueCodec(int dim, int bits) : dim_(dim), bits_(bits), groups_(dim / kKiviG) {}
  std::string name() const override { return "kivi" + std::to_string(bits_); }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return 4 * size_t(groups_) + packed_bytes(dim_, bits_); }

  void encode(const float* x, size_t n, uint8_t* codes) const override {
    check_finite(x, n * dim_, "encode");
    check_fp16_range(x, n * dim_, name());
    std::vector<uint8_t> q(dim_);
    for (size_t t = 0; t < n; ++t) {
      uint8_t* blk = codes + t * block_bytes();
      for (int g = 0; g < groups_; ++g)
        quantize_asym(x + t * dim_ + g * kKiviG, kKiviG, 1, bits_, blk + 4 * g, blk + 4 * g + 2,
                      &q[g * kKiviG]);
      pack_bits(q.data(), dim_, bits_, blk + 4 * groups_);
    }
  }
  void decode(const uint8_t* codes, size_t n, float* x) const override {
    std::vector<uint8_t> c(dim_);
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* blk = codes + t * block_bytes();
      unpack_bits(blk + 4 * groups_, dim_, bits_, c.data());
      for (int j = 0; j < dim_; ++j) {
        const int g = j / kKiviG;
        x[t * dim_ + j] = load_f16(blk + 4 * g) * float(c[j]) + load_f16(blk + 4 * g + 2);
      }
    }
  }
  std::unique_ptr<QueryState> prepare_query(const float* q) const override {
    return plain_query(q, dim_);
  }
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override {
    const float* q = plain_query_data(qs);
    for (size_t t = 0; t < n; ++t) out[t] = kivi_value_dot_ref(codes + t * block_bytes(), q);
  }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override {
    std::vector<uint8_t> c(dim_);
    for (size_t t = 0; t < n; ++t) {
      const uint8_t* blk = codes + t * block_bytes();
      unpack_bits(blk + 4 * groups_, dim_, bits_, c.data());
      for (int g = 0; g < groups_; ++g) {
        const float s = w[t] * load_f16(blk + 4 * g), m = w[t] * load_f16(blk + 4 * g + 2);
        for (int j = g * kKiviG; j < (g + 1) * kKiviG; ++j) acc[j] += s * float(c[j]) + m;
      }
    }
  }
  void finish(const float* acc, float* out) const override {
    std::memcpy(out, acc, sizeof(float) * dim_);
  }

  // Scalar reference score of one token: Σ_g s_g·Σ_j q_j·c_j + m_g·Σ_j q_j.
  float kivi_value_dot_ref(const uint8_t* blk, const float* q) const {
    std::vector<uint8_t> c(dim_);
    unpack_bits(blk + 4 * groups_, dim_, bits_, c.data());
    float r = 0;
    for (int g = 0; g < groups_; ++g) {
      float a = 0, qsum = 0;
      for (int j = g * kKiviG; j < (g + 1) * kKiviG; ++j) {
        a += q[j] * float(c[j]);
        qsum += q[j];
      }
      r += load_f16(blk + 4 * g) * a + load_f16(blk + 4 * g + 2) * qsum;
    }
    return r;
  }

 private:
  int dim_, bits_, groups_;
};

}  // namespace

void register_baseline_codecs() {
  TypeTraits fp8;
  fp8.gpu = GpuFormat::kFp8E4M3;  // the same scale and codes on the GPU (src/cuda/formats.cuh)
  register_codec({"fp8_e4m3",
                  "OCP FP8 E4M3FN (round-to-nearest-even, saturating) with a per-token fp16 "
                  "scale amax/448 (8 + 16/d bpv)",
                  [](std::string_view, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
                    return std::make_unique<Fp8Codec>(d);
                  },
                  5, fp8});
  register_codec({"int4-g64",
                  "4-bit asymmetric groups of 64 channels, fp16 scale and min per group "
                  "(4.5 bpv)",
                  [](std::string_view t, int d, const CodecOptions&) -> std::unique_ptr<Codec> {
                    if (d % kG64 != 0)
                      unsupported_dim(t, d, "needs a multiple of 64 (groups of 64)");
                    return std::make_unique<Int4G64Codec>(d);
                  },
                  60});
  auto kivi = [](int bits) {
    return [bits](std::string_view t, int d, const CodecOptions& o) -> std::unique_ptr<Codec> {
      if (d % kKiviG != 0) unsupported_dim(t, d, "KIVI needs a multiple of 32 (groups of 32)");
      if (o.is_key) return std::make_unique<KiviKeyCodec>(d, bits);
      return std::make_unique<KiviValueCodec>(d, bits);
    };
  };
  // KIVI keeps the newest R = 128 tokens in f16; tq compare applies that by default.
  TypeTraits kivi_traits;
  kivi_traits.default_window = 128;
  register_codec({"kivi2",
                  "KIVI 2-bit: keys per channel over 32-token blocks, values per token over "
                  "32-channel groups, fp16 scale and min (3.0 bpv); KIVI keeps the newest "
                  "R=128 tokens f16: tq compare applies that unless --residual is given",
                  kivi(2), 70, kivi_traits});
  register_codec({"kivi4",
                  "KIVI 4-bit: keys per channel over 32-token blocks, values per token over "
                  "32-channel groups, fp16 scale and min (5.0 bpv); KIVI keeps the newest "
                  "R=128 tokens f16: tq compare applies that unless --residual is given",
                  kivi(4), 71, kivi_traits});
}

}  // namespace tq
