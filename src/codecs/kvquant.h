// KVQuant-style cache types kvquant3 / kvquant4 (Hooper et al., arXiv 2401.18079; DESIGN.md §2.5).
//
// Keys (the key form, CodecOptions::is_key) are quantized before RoPE: encode_at() un-rotates
// each post-RoPE key by its position (the model's pairing and frequencies, CodecOptions::rope*),
// decode_at()/score_at() rotate the decoded key back at the same position — the same as storing
// pre-RoPE keys and applying RoPE after decoding. Per channel j they use a range c_j ± r_j
// learned offline from calibration keys (pre-RoPE, per (layer, head, channel): the 0.5 % and
// 99.5 % quantiles over the calibration tokens), as KVQuant does for keys (per-channel
// statistics computed offline; no per-block scale bytes): z_j = (k_j − c_j)/r_j.
// Values (the value form) are quantized per token: after the outliers are taken out, the
// token's min m and max M give an fp16 centre o = (M+m)/2 and half-range s = (M−m)/2 (stored),
// z_j = (v_j − o)/s.
// Both: z is mapped to the nearest of 2^b non-uniform levels in [−1, 1] learned per layer (one
// set for the layer's keys, one for its values) by plain 1-D k-means on the normalised
// calibration values (KVQuant weights k-means by Fisher information; we have no gradients in
// this engine, so the weighting is left out).
// Dense-and-sparse outliers: per token the n_out = max(1, round(d/100)) values farthest outside
// the calibrated per-channel range (largest |x_j − c_j|/r_j; c, r from the keys' or the values'
// calibration) are kept exactly as fp16 with their channel index (values beyond the range that
// exceed this fixed budget are clamped to the outer levels). Fixed per token, so bpv is exact
// from the layout. The first tokens stay f16 through the cache's sink option (KVQuant keeps the
// first token; `tq compare` gives kvquant rows S = 1 unless --sinks or @S= says otherwise).
//
// Token layout (block_tokens = 1), little endian:
//   value form only: [fp16 o][fp16 s]
//   [n_out channel indices, 1 byte each for d ≤ 256, else 2][n_out fp16 outlier values]
//   [d b-bit level codes, LSB-first bit stream (core/bitpack.h)]
// d = 64: kvquant3 K 27 B (3.375 bpv), V 31 B (3.875); kvquant4 K 35 B (4.375), V 39 B (4.875).
// Uncalibrated (no CodecOptions::calibration) the codec still reports its layout, but encode,
// decode and score refuse with a one-line tq::Error naming `tq calibrate --preset kvquant`.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "codecs/common.h"

namespace tq {

// The preset of a kvquant codebook file (TypeTraits::calibration_preset of kvquant3/4).
constexpr const char* kKvqPreset = "kvquant";

// Tail probability of the calibrated per-channel ranges (each side).
constexpr double kKvqRangeTail = 0.005;
// Sinks `tq compare` gives kvquant rows by default.
constexpr int kKvqDefaultSinks = 1;
inline int kvq_outliers(int d) { return std::max(1, int(d / 100.0 + 0.5)); }

// Learned data of one (layer, kv-head) (the level sets are the layer's, repeated per head).
struct KvQuantCalibration : CodecCalibration {
  std::vector<float> key_center, key_range;      // d each, pre-RoPE keys
  std::vector<float> value_center, value_range;  // d each
  std::vector<float> key_levels3, key_levels4;   // 8 / 16 ascending levels in [−1, 1]
  std::vector<float> value_levels3, value_levels4;

  // The arrays in file order (codecs/polarvq_file.h).
  std::vector<std::vector<float>*> arrays() {
    return {&key_center, &key_range, &value_center, &value_range,
            &key_levels3, &key_levels4, &value_levels3, &value_levels4};
  }
  bool valid(int d) const;
};

// RoPE of one head vector x (d values) at position pos, as the model applies it (pairs (2i,
// 2i+1) or (i, i + d/2), angle pos · freq_scale · inv_freq[i], cos/sin rounded to float);
// inverse = true applies the transpose (un-rotation). inv_freq empty = base 10000.
void rope_rotate(float* x, int d, int64_t pos, const std::vector<float>& inv_freq,
                 float freq_scale, RopePairing pairing, bool inverse);

// The per-layer levels: plain k-means (k = 2^bits) on the normalised values, ascending.
std::vector<float> kvq_fit_levels(const std::vector<float>& z, int bits, uint64_t seed);

// Normalised dense values of one vector x as the codec sees them (outliers left out), for the
// level calibration: keys z = (x − c)/r clamped to [−1, 1]; values by the token's own range.
void kvq_normalised(const float* x, int d, const float* center, const float* range, bool is_key,
                    std::vector<float>& out);

}  // namespace tq
