// TurboQuant codecs (Zandieh et al., arXiv 2504.19874; DESIGN.md §2.2). Exposed inside the library
// so that SIMD/CUDA kernels and tests can reach the codebook, rotation and sketch.
#pragma once
#include <memory>
#include <vector>

#include "codecs/common.h"
#include "core/lloyd_max.h"
#include "core/rotation.h"
#include "cpu/dispatch.h"

namespace tq {

// TurboQuant_mse(b). Token layout (block_tokens = 1):
//   bytes [0, 2)          fp16 norm n  (with norm correction: n / ‖c[idx]‖)
//   bytes [2, 2 + ⌈d·b/8⌉) codes idx_j, b bits each, LSB-first bit stream (core/bitpack.h)
// Decode: x̃ = n · Πᵀ c[idx]. A zero vector stores n = 0.
// score/accumulate/encode run the dispatched SIMD kernels (src/cpu); the *_ref methods are the
// plain scalar references they are tested against.
class TurboMseCodec final : public Codec {
 public:
  TurboMseCodec(int dim, int bits, uint64_t seed, bool norm_correction);
  std::string name() const override;
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return 2 + code_bytes_; }
  void encode(const float* x, size_t n, uint8_t* codes) const override;
  void decode(const uint8_t* codes, size_t n, float* x) const override;
  std::unique_ptr<QueryState> prepare_query(const float* q) const override;
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override;
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override;
  void finish(const float* acc, float* out) const override;
  std::unique_ptr<AttnOps> attn_ops() const override;  // turbo_attn.cpp

  void encode_ref(const float* x, size_t n, uint8_t* codes) const;
  void score_ref(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const;
  void accumulate_ref(const uint8_t* codes, size_t n, const float* w, float* acc) const;
  // The kernels' view of n tokens whose rows start at base + t·stride + off.
  cpu::CodeRows rows(const uint8_t* base, size_t stride, size_t off = 0) const;
  // The rotated query Π q of a prepared query state.
  static const std::vector<float>& rotated_query(const QueryState& qs);

  int bits() const { return bits_; }
  const ScalarCodebook& codebook() const { return *cb_; }
  const Rotation& rotation() const { return rot_; }
  // Encode one vector into (norm, indices) in the rotated domain; used by prod and tests.
  float encode_one(const float* x, uint8_t* idx) const;

 private:
  int dim_, bits_;
  bool nc_;
  size_t code_bytes_;
  const ScalarCodebook* cb_;
  Rotation rot_;
};

// TurboQuant_prod(b): TurboQuant_mse(b−1) + 1-bit QJL sketch of the residual. Token layout:
//   bytes [0, 2)  fp16 norm n;  [2, 4) fp16 residual norm γ = ‖x − x̃_mse‖
//   then ⌈d·(b−1)/8⌉ bytes of mse codes, then ⌈d/8⌉ bytes of sign bits z_j = [ (S r')_j ≥ 0 ]
// The sketch S (d×d, i.i.d. N(0,1), seeded) acts in the rotated domain, r' = Π(x − x̃_mse)
// (S·Π is again i.i.d. Gaussian, so this is the paper's estimator). Inner products:
//   ⟨y, x⟩ ≈ n⟨Πy, c[idx]⟩ + γ·√(π/2)/d·⟨S Πy, z⟩  (z ∈ {±1}^d), unbiased.
class TurboProdCodec final : public Codec {
 public:
  TurboProdCodec(int dim, int bits, uint64_t seed);
  std::string name() const override;
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return 4 + mse_bytes_ + sign_bytes_; }
  void encode(const float* x, size_t n, uint8_t* codes) const override;
  void decode(const uint8_t* codes, size_t n, float* x) const override;
  std::unique_ptr<QueryState> prepare_query(const float* q) const override;
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override;
  size_t acc_size() const override { return 2 * size_t(dim_); }
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override;
  void finish(const float* acc, float* out) const override;
  std::unique_ptr<AttnOps> attn_ops() const override;  // turbo_attn.cpp

  void score_ref(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const;
  void accumulate_ref(const uint8_t* codes, size_t n, const float* w, float* acc) const;
  // Kernel views: the (b−1)-bit mse part, and the sign bits as ±1 codes scaled by γ·scale_mul.
  cpu::CodeRows mse_rows(const uint8_t* base, size_t stride) const;
  cpu::CodeRows sign_rows(const uint8_t* base, size_t stride, float scale_mul) const;
  // Rotated query Π q and sketched query S Π q (d each) for a query q.
  void prepare_vectors(const float* q, float* rq, float* sq) const;
  static double qjl_factor(int d);

  const std::vector<float>& sketch() const { return s_; }
  int bits() const { return bits_; }

 private:
  int dim_, bits_;
  size_t mse_bytes_, sign_bytes_;
  const ScalarCodebook* cb_;
  Rotation rot_;
  std::vector<float> s_;  // d×d row-major
};

// Fractional bit-widths: channels split into an outlier set O (|O| = d/4, chosen in the
// original space) and the rest; two independent TurboQuant_mse instances. Token layout: the
// TurboMse block of x[O] (bits_hi) followed by the TurboMse block of x[rest] (bits_lo).
// O is static per (layer, head): CodecOptions::outlier_channels (set from prefill or
// calibration statistics), default the first d/4 channels; it is not stored per token.
class TurboSplitCodec final : public Codec {
 public:
  TurboSplitCodec(std::string name, int dim, int bits_hi, int bits_lo, uint64_t seed,
                  std::vector<int> outliers);
  std::string name() const override { return name_; }
  int dim() const override { return dim_; }
  size_t block_bytes() const override { return hi_->block_bytes() + lo_->block_bytes(); }
  void encode(const float* x, size_t n, uint8_t* codes) const override;
  void decode(const uint8_t* codes, size_t n, float* x) const override;
  std::unique_ptr<QueryState> prepare_query(const float* q) const override;
  void score(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const override;
  void accumulate(const uint8_t* codes, size_t n, const float* w, float* acc) const override;
  void finish(const float* acc, float* out) const override;
  std::unique_ptr<AttnOps> attn_ops() const override;  // turbo_attn.cpp

  void score_ref(const QueryState& qs, const uint8_t* codes, size_t n, float* out) const;
  void accumulate_ref(const uint8_t* codes, size_t n, const float* w, float* acc) const;
  const TurboMseCodec& hi() const { return *hi_; }
  const TurboMseCodec& lo() const { return *lo_; }
  int n_hi() const { return n_hi_; }
  const std::vector<int>& perm() const { return perm_; }

 private:
  std::string name_;
  int dim_, n_hi_;
  std::vector<int> perm_;  // perm_[0..n_hi) = outlier channels, then the rest (ascending)
  std::unique_ptr<TurboMseCodec> hi_, lo_;
};

}  // namespace tq
