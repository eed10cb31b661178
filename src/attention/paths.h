// turboquant — internals shared by the attention paths of src/attention (not public).
#pragma once
#include <vector>

#include "attention/attention.h"

namespace tq::attn {

// f16 → f32 through a 64 Ki-entry table (built once).
const float* f16_table();
// f16 kernels: AVX2+F16C+FMA when the CPU has them and d is a multiple of 8, else the table.
bool use_avx2(int d);
float dot_f16(const float* q, const uint16_t* h, int d, bool simd);
void axpy_f16(float w, const uint16_t* h, float* acc, int d, bool simd);

// Whether a codec's codes are plain f16 / f32 rows, so that the float loops can read them.
enum class Plain { kNo, kF16, kF32 };
Plain plain_kind(const Codec& c);
// x (n × d floats) = the decoded segment.
void decode_segment(const Codec& cd, Plain pk, const KvSegment& sg, int d, float* x);

struct HeadSegs {
  std::vector<KvSegment> k, v;
};
std::vector<HeadSegs> collect(const KvCache& cache, int seq, int layer);

// The paths (attention.cpp dispatches).
void attention_reference(const KvCache& cache, int seq, int layer, int n_head, const float* q,
                         int T, int pos0, float scale, float* out);
void attention_tiled(const KvCache& cache, int seq, int layer, int n_head, const float* q, int T,
                     int pos0, float scale, float* out);

}  // namespace tq::attn
