// Versioned codebook files for polar-vq (DESIGN.md §2.4) and kvquant (DESIGN.md §2.5).
// Layout (little endian):
//   "TQCB" | u32 format version (3) | u32 payload bytes | payload | u64 xxHash64(payload)
// payload: str preset | i32 × 13 parameters | u64 model fingerprint | u64 corpus hash |
//          u64 sample count | u32 calibration context (tokens per sample) | u32 n_layer |
//          u32 n_head_kv | u32 head_dim | u32 rope pairing |
//          per (layer, head), layer-major: f32[] angle centroids, i32[] value permutation,
//          f32[] key stage-2 codebook, f32[] value stage-2 codebook (each: u64 count + data) |
//          u32 kvquant head count (0, or n_layer × n_head_kv) and per (layer, head) the 8 f32[]
//          arrays of KvQuantCalibration (codecs/kvquant.h), in its field order
// (str = u32 length + bytes). A kvquant file has preset "kvquant", empty polar-vq arrays and
// the kvquant section; a polar-vq file an empty kvquant section. Loading checks magic,
// version, length, checksum, then the caller checks the fingerprint against the model.
// Version history: 1 = polar-vq only; 2 = two development variants (one added the
// calibration context, the other the kvquant section); 3 = both. Older versions are refused
// (recalibrate: the context decides the angle codebooks of the slow RoPE pairs).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codecs/kvquant.h"
#include "codecs/polarvq.h"

namespace tq {

constexpr uint32_t kCodebookFormatVersion = 3;

// The preset of the codebook file a cache type takes ("balanced" for polar-vq:balanced,
// "kvquant" for kvquant3/kvquant4), or "" for types that take none.
inline std::string codebook_preset_of(const std::string& type) {
  return type_traits(type).calibration_preset;
}
// How a file's preset is named in messages: "polar-vq:balanced", "kvquant".
inline std::string preset_label(const std::string& preset) { return calibration_label(preset); }

struct CodebookFile {
  PolarVqParams params;
  uint64_t model_fingerprint = 0;
  uint64_t corpus_hash = 0;
  uint64_t samples = 0;
  uint32_t ctx = 0;  // tokens per calibration sample (`tq calibrate -c`)
  uint32_t n_layer = 0, n_head_kv = 0, head_dim = 0;
  RopePairing rope = RopePairing::kNormal;
  std::vector<std::shared_ptr<PolarVqCalibration>> heads;  // n_layer × n_head_kv

  std::vector<std::shared_ptr<KvQuantCalibration>> kvq;    // kvquant files, else empty

  const std::shared_ptr<PolarVqCalibration>& head(int layer, int h) const {
    return heads.at(size_t(layer) * n_head_kv + h);
  }
  const std::shared_ptr<KvQuantCalibration>& kvq_head(int layer, int h) const {
    return kvq.at(size_t(layer) * n_head_kv + h);
  }
};

void write_codebook_file(const std::string& path, const CodebookFile& f);
// Throws tq::Error naming the file and the problem (missing, not a codebook file, unknown
// format version, truncated, checksum mismatch).
CodebookFile read_codebook_file(const std::string& path);
// The same for the bytes of a file (`path` only names it in messages; the fuzz target's entry).
CodebookFile parse_codebook_file(const uint8_t* data, size_t size, const std::string& path);
// Throws tq::Error if the file does not fit the model (fingerprint, shape) or the preset.
void check_codebook_compatible(const CodebookFile& f, const std::string& path,
                               uint64_t model_fingerprint, int n_layer, int n_head_kv,
                               int head_dim, const std::string& preset);

}  // namespace tq
