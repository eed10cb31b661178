// Calibration of the polar-vq codebooks (DESIGN.md §2.4) from post-RoPE key and value samples.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cache/kv_cache.h"
#include "codecs/polarvq_file.h"

namespace tq {

class GgufFile;
class LlamaModel;

// Samples of one (layer, kv-head): n × d each, post-RoPE keys and values as the model makes them.
struct HeadSamples {
  std::vector<float> keys, values;
  std::vector<int32_t> pos;  // position of each sample in its window (empty: unknown)
  size_t n = 0;
};

struct CalibrateOptions {
  uint64_t seed = 1;
  size_t max_vq_points = 4096;  // sub-vectors per stage-2 codebook fed to k-means
  int vq_iterations = 12;
  size_t max_angle_points = 8192;
  // A file made earlier from the same samples and seed: the parts of it that the same k-means
  // would make again (angle codebooks for the same angle_bits; a stage-2 codebook for the same
  // stage-1 and stage-2 parameters of its side) are copied instead of recomputed. The result is
  // the same file either way; only faster (`tq calibrate` with several presets).
  std::vector<const CodebookFile*> earlier;
  // Called after each head with (done, total); may be empty.
  std::function<void(size_t, size_t)> progress;
};

// Learns per (layer, head): angle codebooks (circular k-means, k-means++ init), the value channel
// order (descending variance), and the stage-2 codebooks (k-means++ on the stage-1 residuals).
// heads: n_layer × n_head_kv, layer-major. Deterministic for a seed.
CodebookFile calibrate_polarvq(const PolarVqParams& p, int n_layer, int n_head_kv, int dim,
                               RopePairing rope, const std::vector<HeadSamples>& heads,
                               const CalibrateOptions& opt);

// Learns the kvquant data (codecs/kvquant.h) of every (layer, head): keys are un-rotated to
// pre-RoPE with the shape's RoPE (needs HeadSamples::pos); per channel the 0.5 % / 99.5 %
// quantiles give centre and half-range (keys and values); per layer, 1-D k-means (8 and 16
// levels) on the normalised dense values of all its heads. Samples at positions below
// `skip_positions` (the f16 sink tokens) are left out. The file's preset is "kvquant".
CodebookFile calibrate_kvquant(const KvShape& shape, const std::vector<HeadSamples>& heads,
                               const CalibrateOptions& opt, int skip_positions = 1);

// The model fingerprint of codebook files: GgufFile::fingerprint over every layer's
// attn_k.weight and attn_v.weight (and their biases where present), i.e. the architecture
// metadata and the tensors that make the keys and values.
uint64_t codebook_fingerprint(const GgufFile& f, int n_layer);

// Reads a codebook file and checks it against the model (fingerprint, shape, RoPE pairing) and
// the preset of every polar-vq cache type in `types`; throws tq::Error naming the file and the
// problem.
std::shared_ptr<const CodebookFile> load_codebooks(const std::string& path, const GgufFile& f,
                                                   const LlamaModel& model,
                                                   const std::vector<std::string>& types);

// A warning on stderr when a cache will hold more tokens (n_ctx) than the file's calibration
// windows had: the angle codebooks of the slow RoPE pairs have not seen those positions
// (docs/polarvq-results.md, "Calibration context"). Silent for files without a context.
void warn_if_past_calibration(const CodebookFile& cb, const std::string& path, int n_ctx);

// Sampling for `tq calibrate`: runs `n_seq` windows of `ctx` tokens (start offsets drawn
// deterministically from `seed`, distinct, non-overlapping where the text allows) through the
// model with an f32 cache and keeps, per (layer, kv-head), at most `max_per_head` of the
// post-RoPE keys and values the cache receives (an even subsample of each window's positions).
// Throws tq::Error if the text holds fewer than ctx tokens... (see .cpp).
struct SampleOptions {
  int n_seq = 128, ctx = 512;
  uint64_t seed = 1;
  size_t max_per_head = 32768;
  // Subtract each window's per-(layer, head) key mean before keeping the keys, as the cache does
  // for types whose keys are centred by default (polar-vq: TypeTraits::center_keys), so that
  // codebooks are learned on the keys the codec will see.
  bool center_keys = false;
  std::function<void(size_t, size_t)> progress;  // (windows done, total)
};
std::vector<HeadSamples> collect_kv_samples(const LlamaModel& model,
                                            const std::vector<int32_t>& tokens,
                                            const SampleOptions& opt);

}  // namespace tq
