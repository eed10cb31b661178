// turboquant — the codec interface and the cache-type registry.
//
// A codec compresses KV vectors of one (layer, kv-head): x ∈ R^d, one per token. Codes are
// stored in blocks of block_tokens() tokens, block_bytes() bytes each; all bytes a type needs
// (codes, norms, scales, masks) live in the block, so bpv() is exact. Attention runs on codes:
// prepare_query() rotates the query once and builds lookup tables, score() computes q·x̃ for
// every token of a run of blocks, accumulate() adds Σ w_i·x̃_i into an accumulator kept in the
// codec's working (e.g. rotated) domain, and finish() maps that accumulator back once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tq/error.h"
#include "tq/gpu_format.h"

namespace tq {

// A codec's CPU attention fast path (src/codecs/attn_ops.h): the dispatched SIMD kernels that
// score and accumulate G query heads at once, straight from the codes.
class AttnOps;

// Opaque per-query state (rotated query, lookup tables).
class QueryState {
 public:
  virtual ~QueryState() = default;
};

// How the model applies RoPE to a head: pairs (2i, 2i+1) ("normal", llama.cpp LLAMA_ROPE_TYPE_NORM)
// or (i, i + d/2) (NeoX). Codecs that work on RoPE pairs need it.
enum class RopePairing { kNormal, kNeox };

// Data a codec learned offline for one (layer, kv-head) (e.g. the polar-vq codebooks); each
// codec family defines its own subclass.
class CodecCalibration {
 public:
  virtual ~CodecCalibration() = default;
};

struct CodecOptions {
  uint64_t seed = 0x5451'0001;  // rotation / sketch seed; part of the type's identity
  int layer = 0;
  int head = 0;
  bool is_key = true;
  RopePairing rope = RopePairing::kNormal;
  // Outlier channels (original space) for the fractional TurboQuant types; empty = default
  // (the first d/4 channels). The cache may set them from prefill statistics.
  std::vector<int> outlier_channels;
  // Learned data for codecs that need it (polar-vq, kvquant); null = uncalibrated defaults.
  std::shared_ptr<const CodecCalibration> calibration;
  // The model's RoPE for codecs that store keys before RoPE (kvquant): pair i of position p is
  // rotated by the angle p · rope_freq_scale · rope_inv_freq[i] (d/2 values; empty = the
  // standard base 10000, θ_i = 10000^(−2i/d)).
  std::vector<float> rope_inv_freq;
  float rope_freq_scale = 1.f;
};

class Codec {
 public:
  virtual ~Codec() = default;

  virtual std::string name() const = 0;
  virtual int dim() const = 0;
  // Tokens per block: encode/decode/score/accumulate take whole blocks.
  virtual int block_tokens() const { return 1; }
  // Exact bytes of one block.
  virtual size_t block_bytes() const = 0;
  // All-in bits per value, from the byte layout.
  double bpv() const { return 8.0 * double(block_bytes()) / (double(block_tokens()) * dim()); }

  // x: (n_blocks·block_tokens) × d floats, row-major → codes: n_blocks × block_bytes().
  // Throws tq::Error on NaN/Inf input.
  virtual void encode(const float* x, size_t n_blocks, uint8_t* codes) const = 0;
  // codes → x: (n_blocks·block_tokens) × d.
  virtual void decode(const uint8_t* codes, size_t n_blocks, float* x) const = 0;

  // Once per query vector q (d floats).
  virtual std::unique_ptr<QueryState> prepare_query(const float* q) const = 0;
  // scores[i] = q · decode(codes)_i for the n_blocks·block_tokens tokens.
  virtual void score(const QueryState& qs, const uint8_t* codes, size_t n_blocks,
                     float* scores) const = 0;

  // Floats in the accumulator (≥ d; e.g. 2d for TurboQuant_prod).
  virtual size_t acc_size() const { return size_t(dim()); }
  // acc += Σ_i w[i] · decode(codes)_i, in the working domain.
  virtual void accumulate(const uint8_t* codes, size_t n_blocks, const float* w,
                          float* acc) const = 0;
  // out (d floats) = the accumulated vector in the original domain.
  virtual void finish(const float* acc, float* out) const = 0;

  // Position-dependent codecs. A codec whose stored form depends on the token's position (the
  // kvquant key form keeps keys before RoPE: it un-rotates a key at encode and rotates the
  // decoded key back) overrides positional() and these three; pos0 is the position of the
  // first token of the run and the positions run on consecutively. The position-free
  // encode/decode/score/accumulate of such a codec mean pos0 = 0. Everyone else ignores pos0.
  // The cache and every attention path call these forms with the stored positions.
  virtual bool positional() const { return false; }
  virtual void encode_at(const float* x, size_t n_blocks, int64_t pos0, uint8_t* codes) const {
    (void)pos0;
    encode(x, n_blocks, codes);
  }
  virtual void decode_at(const uint8_t* codes, size_t n_blocks, int64_t pos0, float* x) const {
    (void)pos0;
    decode(codes, n_blocks, x);
  }
  virtual void score_at(const QueryState& qs, const uint8_t* codes, size_t n_blocks,
                        int64_t pos0, float* scores) const {
    (void)pos0;
    score(qs, codes, n_blocks, scores);
  }

  // The CPU decode driver's fast path for this codec (SIMD kernels over the codes), or null
  // when the codec has none (the driver then runs it through the interface above). A type
  // whose TypeTraits::simd_attention is set returns non-null at every dim it accepts.
  virtual std::unique_ptr<AttnOps> attn_ops() const;
};

// Registry. Names: f32 f16 bf16 turbo1..turbo8 turbo2p..turbo8p turbo2.5 turbo3.5 polar, and
// whatever else is registered. Throws tq::Error for an unknown name or unsupported dimension.
std::unique_ptr<Codec> make_codec(std::string_view type, int dim, const CodecOptions& opts = {});
// All registered type names, in display order (types registered as unlisted are left out).
std::vector<std::string> list_types();
// One-line description of a type.
std::string describe_type(std::string_view type);

// The row layout of a type whose codes are plain values (the tiled and f16 paths read them
// directly instead of decoding).
enum class PlainLayout { kNone, kF32, kF16, kBF16 };

// Which learned data a type reads from a codebook file (codecs/polarvq_file.h).
enum class CalibrationKind {
  kNone,
  kPolarVq,  // CodebookFile::head(layer, head), the file's preset must be calibration_preset
  kKvQuant,  // CodebookFile::kvq_head(layer, head)
};

// Everything the rest of the engine needs to know about a cache type, so that no code outside
// the registry decides by its name (ggml keeps one such table per type). Set at registration,
// beside the codec (src/codecs/*.cpp).
struct TypeTraits {
  // Learned data: what the type reads from a codebook file, whether it cannot encode without
  // it, the preset the file must carry, whether the codec's parameters come from the file
  // (polar-vq:custom) and the command that makes the file (for messages).
  CalibrationKind calibration = CalibrationKind::kNone;
  bool needs_calibration = false;
  std::string calibration_preset;  // "" = takes no codebook file
  bool params_from_codebooks = false;
  std::string calibrate_command = "`tq calibrate`";
  std::string calibration_label;  // how messages name the file's preset ("kvquant")
  // Defaults of `tq compare` for the type's rows when --residual / --sinks are not given.
  int default_window = 0;
  int default_sinks = 0;
  // The cache sets CodecOptions::outlier_channels from the statistics of the first append.
  bool outliers_from_prefill = false;
  PlainLayout plain = PlainLayout::kNone;
  bool positional = false;  // the codecs are positional() (keys stored before RoPE)
  GpuFormat gpu = GpuFormat::kNone;  // the CUDA backend's format; kNone = CPU only
  // Codec::attn_ops() is non-null (the decode driver's SIMD kernels; tests check the promise).
  bool simd_attention = false;
  // The uncompressed cache `tq compare` measures every other row against (f16).
  bool reference = false;
  // Keys of this type are mean-centred by default (KvCacheOptions::key_centring, DESIGN.md
  // §3.1): set for the project's own types (turbo*, polar, polar-vq:*), which would otherwise
  // collapse on models with large key offsets (Qwen2); left off for every baseline, which stays
  // as its authors define it.
  bool center_keys = false;
};

// Registration hook used by codec source files (src/codecs/*.cpp).
using CodecFactory =
    std::function<std::unique_ptr<Codec>(std::string_view type, int dim, const CodecOptions&)>;
struct CodecRegistration {
  std::string name;
  std::string description;
  CodecFactory factory;
  int order = 1000;  // display order in `tq types`
  TypeTraits traits = {};
  bool listed = true;  // shown by list_types() (polar-vq:custom is made from a file only)
};
void register_codec(CodecRegistration reg);

// The traits of a registered type; throws tq::Error for an unknown name.
const TypeTraits& type_traits(std::string_view type);
// Whether a type needs learned data before it can encode (e.g. polar-vq:balanced).
bool type_needs_calibration(std::string_view type);
// Throws the one-line tq::Error naming the command to run when `type` needs a codebook file
// and none is given.
void check_calibration_given(std::string_view type, bool have_codebooks);
// How a codebook file's preset is named in messages ("polar-vq:balanced", "kvquant"): the
// label of the registered type that takes that preset.
std::string calibration_label(std::string_view preset);

}  // namespace tq
