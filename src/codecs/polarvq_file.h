// Versioned codebook files for polar-vq (SPEC §2.4).
// Layout (little endian):
//   "TQCB" | u32 format version (2) | u32 payload bytes | payload | u64 xxHash64(payload)
// payload: str preset | i32 × 13 parameters | u64 model fingerprint | u64 corpus hash |
//          u64 sample count | u32 calibration context (tokens per sample) | u32 n_layer | u32 n_head_kv | u32 head_dim | u32 rope pairing |
//          per (layer, head), layer-major: f32[] angle centroids, i32[] value permutation,
//          f32[] key stage-2 codebook, f32[] value stage-2 codebook (each: u64 count + data)
// (str = u32 length + bytes). Loading checks magic, version, length, checksum, then the caller
// checks the fingerprint against the model.
// Version history: 1 = no calibration context; 2 = adds it (version 1 files are refused: the
// context decides the angle codebooks of the slow RoPE pairs, so recalibrate).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codecs/polarvq.h"

namespace tq {

constexpr uint32_t kCodebookFormatVersion = 2;

struct CodebookFile {
  PolarVqParams params;
  uint64_t model_fingerprint = 0;
  uint64_t corpus_hash = 0;
  uint64_t samples = 0;
  uint32_t ctx = 0;  // tokens per calibration sample (`tq calibrate -c`)
  uint32_t n_layer = 0, n_head_kv = 0, head_dim = 0;
  RopePairing rope = RopePairing::kNormal;
  std::vector<std::shared_ptr<PolarVqCalibration>> heads;  // n_layer × n_head_kv

  const std::shared_ptr<PolarVqCalibration>& head(int layer, int h) const {
    return heads.at(size_t(layer) * n_head_kv + h);
  }
};

void write_codebook_file(const std::string& path, const CodebookFile& f);
// Throws tq::Error naming the file and the problem (missing, not a codebook file, unknown
// format version, truncated, checksum mismatch).
CodebookFile read_codebook_file(const std::string& path);
// Throws tq::Error if the file does not fit the model (fingerprint, shape) or the preset.
void check_codebook_compatible(const CodebookFile& f, const std::string& path,
                               uint64_t model_fingerprint, int n_layer, int n_head_kv,
                               int head_dim, const std::string& preset);

}  // namespace tq
