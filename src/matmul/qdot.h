// turboquant — the kernels behind matmul() (qmatrix.h): activation quantization and tile dot
// products per weight type and SIMD level (DESIGN.md §8).
//
// Activations of a quantized weight type are quantized once per product, per row (token), to
//  - BlockQ8  for the legacy 32-element types (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0): x ≈ d·q, sum = Σq;
//  - BlockQ8K for the 256-element K types (Q4_K Q5_K Q6_K): x ≈ d·q, bsums[i] = Σ of the 16
//    values 16i..16i+15 (the K types' sub-block minimums / the −32 of Q6_K need these sums).
// q = round(x · id) with id = 127 / max|x| and d ≈ 1 / id, so |q| ≤ 127 and each value is off
// by at most d/2 (act_scale: d rounded as llama.cpp rounds it, so the integers agree with it).
// F32/F16/BF16 weights take the activations as f32.
//
// A tile kernel computes out[c·ldo + r] (= or +=) Σ_j W[r][j]·X[c][j] for r < nr rows of W
// (row r at w + r·row_bytes) and c < nc activation rows (row c at act + c·act_stride).
// The integer parts (Σ q_w·q_x per sub-block, times the integer sub-block scales) are exact in
// int32 at every level; the levels differ only in the order of the float sums of the blocks.
// Levels: scalar (the `_ref` kernels, qdot_ref.cpp), AVX2 (qdot_avx2.cpp) and AVX-512 with VNNI
// (qdot_avx512.cpp), chosen from src/cpu's active level (TQ_SIMD / force_level).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/half.h"
#include "cpu/dispatch.h"
#include "model/gguf.h"

namespace tq::mm {

struct BlockQ8 {
  int8_t qs[32];
  float d;
  int32_t sum;
};
static_assert(sizeof(BlockQ8) == 40);

struct BlockQ8K {
  int8_t qs[256];
  int16_t bsums[16];
  float d;
  float pad[7];  // 320 bytes: every block starts 32-byte aligned in an aligned buffer
};
static_assert(sizeof(BlockQ8K) == 320);

enum class ActKind { kF32, kQ8, kQ8K };

// The activation scale d of a block with max|x| = amax and id = 127 / amax, as llama.cpp
// computes it on x86: block_q8_0 stores amax / 127 in f16; block_q8_K stores 1 / id.
inline float act_scale(float amax, float id, ActKind kind) {
  if (!(amax > 0.f)) return 0.f;
  return kind == ActKind::kQ8 ? round_f16(amax / 127.f) : 1.f / id;
}

// Which activation format type t multiplies with (throws tq::Error for an unsupported type).
ActKind act_kind(GgmlType t);
// Bytes of one quantized activation row of `cols` values (cols a multiple of the block).
size_t act_row_bytes(GgmlType t, int64_t cols);
// Quantizes one row of `cols` floats into the activation format of t (for kF32: a copy).
void quantize_act_ref(GgmlType t, const float* x, int64_t cols, uint8_t* out);

using TileFn = void (*)(const uint8_t* w, size_t row_bytes, int nr, const uint8_t* act,
                        size_t act_stride, int nc, int64_t cols, float* out, size_t ldo,
                        bool add);
using QuantFn = void (*)(GgmlType t, const float* x, int64_t cols, uint8_t* out);

struct QKernels {
  TileFn (*tile)(GgmlType t);  // nullptr: the type has no kernel at this level
  QuantFn quantize;
};

const QKernels& qkernels_ref();
const QKernels& qkernels_avx2();
const QKernels& qkernels_avx512();  // needs AVX-512 VNNI (avx512_vnni_available())
bool avx512_vnni_available();

// The table for a level: kAvx512 without VNNI runs the AVX2 kernels.
const QKernels& qkernels_for(cpu::Level l);
// The active level's table (cpu::active_level()).
const QKernels& qkernels();

}  // namespace tq::mm
