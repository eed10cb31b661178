// The seed's two-stage pipeline, "polar-vq" (DESIGN.md §2.4: the original description's pipeline).
//
// Keys (post-RoPE), stage 1: each RoPE pair (k_a, k_b) → magnitude r = √(k_a² + k_b²) and angle
// θ = atan2(k_b, k_a). r: uniform mag_bits codes with an fp16 (min, scale) per group of
// group_size magnitudes — grouped within a token, or per pair-channel across a block of
// block_tokens tokens (r does not depend on position). θ: nearest of 2^angle_bits centroids of
// that pair-channel (circular k-means on calibration angles; uniform on [−π, π) uncalibrated).
// Values, stage 1: channels permuted by calibrated variance (descending; identity uncalibrated),
// then uniform value_bits codes with an fp16 (min, scale) per group of value_group channels.
// Stage 2 (both): the stage-1 residual, split into `subspaces` channel ranges, each cut into
// sub-vectors of vq_dim values, each mapped to the nearest of vq_size entries of that range's
// k-means codebook (log2(vq_size) bits per sub-vector).
// Scores come from codes: per query a table T_i[c] = q_a cos θ_c + q_b sin θ_c per pair-channel
// and a table L_p[k] = q_p · C[k] per sub-vector, so q·k̂ = Σ_i r̂_i T_i[idx_i] + Σ_p L_p[code_p].
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "codecs/common.h"

namespace tq {

struct PolarVqParams {
  std::string preset = "quality";
  // keys
  int mag_bits = 4, angle_bits = 2, group_size = 64;
  int key_block_tokens = 1;  // 1 = groups within a token; > 1 = per pair-channel over the block
  // values
  int value_bits = 4, value_group = 64;
  // stage 2 (vq_size = 0: none)
  int vq_size = 0, vq_dim = 8, subspaces = 4;
  int key_vq_dim = 0;    // 0 = vq_dim (keys and values may use different sub-vector sizes)
  bool vq_keys = true, vq_values = true;

  bool has_vq(bool is_key) const { return vq_size > 0 && (is_key ? vq_keys : vq_values); }
  int vq_dim_for(bool is_key) const { return is_key && key_vq_dim > 0 ? key_vq_dim : vq_dim; }
};

// The preset's parameters; throws tq::Error for an unknown preset.
PolarVqParams polarvq_preset(const std::string& name);
// Throws tq::Error ("<where>: <parameter> = <value> must be ...") unless every parameter is in
// its range: bit widths 1..8, group sizes and key_block_tokens 1..65536, vq_size 0 or a power of
// two 2..65536, vq_dim / subspaces 1..65536 and key_vq_dim 0..65536 when stage 2 is on. Called
// where parameters enter: `tq calibrate --preset NAME+KEY=VALUE`, a codebook file being read,
// and the codec itself (a group of 0 divided by zero, value_group=-64 crashed every later use).
void validate_polarvq_params(const PolarVqParams& p, const std::string& where);
std::vector<std::string> polarvq_preset_names();

// Learned data of one (layer, kv-head).
struct PolarVqCalibration : CodecCalibration {
  int dim = 0;
  std::vector<float> angle_centroids;  // (d/2) × 2^angle_bits, per pair-channel, ascending
  std::vector<int> value_perm;         // d: stored channel j holds original channel perm[j]
  std::vector<float> key_vq;           // subspaces × vq_size × vq_dim (empty: no stage 2)
  std::vector<float> value_vq;
};

class PolarVqCodec final : public Codec {
 public:
  PolarVqCodec(const PolarVqParams& p, int dim, const CodecOptions& opts);
  std::string name() const override { return "polar-vq:" + p_.preset; }
  int dim() const override { return dim_; }
  int block_tokens() const override { return key_ ? p_.key_block_tokens : 1; }
  size_t block_bytes() const override { return block_bytes_; }
  void encode(const float* x, size_t n_blocks, uint8_t* codes) const override;
  void decode(const uint8_t* codes, size_t n_blocks, float* x) const override;
  std::unique_ptr<QueryState> prepare_query(const float* q) const override;
  void score(const QueryState& qs, const uint8_t* codes, size_t n_blocks,
             float* out) const override;
  void accumulate(const uint8_t* codes, size_t n_blocks, const float* w,
                  float* acc) const override;
  void finish(const float* acc, float* out) const override;

  const PolarVqParams& params() const { return p_; }

 private:
  struct Unpacked;  // one token's stage-1 and stage-2 values
  void pair_index(int i, int& a, int& b) const;
  void encode_block(const float* x, uint8_t* blk) const;
  void unpack_token(const uint8_t* blk, int t, Unpacked& u) const;
  void reconstruct(const Unpacked& u, float* x) const;  // original (key) / permuted (value) order
  int vq_count() const { return vq_ ? dim_ / vq_dim_ : 0; }
  const float* vq_entry(int sub, int code) const;

  PolarVqParams p_;
  int dim_;
  bool key_;
  RopePairing rope_;
  int half_, groups_, vq_dim_ = 0, vq_bits_ = 0, sub_per_space_ = 1;
  bool vq_ = false, missing_books_ = false;
  void require_books() const;
  size_t block_bytes_ = 0, token_bits_ = 0, header_bytes_ = 0;
  std::shared_ptr<const PolarVqCalibration> calib_;
  std::vector<float> angles_;  // (d/2) × A
  std::vector<int> perm_;
};

}  // namespace tq
