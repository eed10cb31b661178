// Calibration of the polar-vq codebooks (SPEC §2.4) from post-RoPE key and value samples.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "codecs/polarvq_file.h"

namespace tq {

// Samples of one (layer, kv-head): n × d each, post-RoPE keys and values as the model makes them.
struct HeadSamples {
  std::vector<float> keys, values;
  size_t n = 0;
};

struct CalibrateOptions {
  uint64_t seed = 1;
  size_t max_vq_points = 4096;  // sub-vectors per stage-2 codebook fed to k-means
  int vq_iterations = 12;
  size_t max_angle_points = 8192;
  // Called after each head with (done, total); may be empty.
  std::function<void(size_t, size_t)> progress;
};

// Learns per (layer, head): angle codebooks (circular k-means, k-means++ init), the value channel
// order (descending variance), and the stage-2 codebooks (k-means++ on the stage-1 residuals).
// heads: n_layer × n_head_kv, layer-major. Deterministic for a seed.
CodebookFile calibrate_polarvq(const PolarVqParams& p, int n_layer, int n_head_kv, int dim,
                               RopePairing rope, const std::vector<HeadSamples>& heads,
                               const CalibrateOptions& opt);

}  // namespace tq
