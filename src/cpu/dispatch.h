// Runtime SIMD dispatch for the CPU kernels (SPEC §5, issue 6).
//
// Three levels: scalar (portable C++), AVX2 (+FMA, F16C, BMI2) and AVX-512 (F, BW, VL, DQ).
// The active level is the best one the CPU supports, unless the environment variable
// TQ_SIMD=scalar|avx2|avx512 or force_level() says otherwise (tests use force_level to run
// every level against the scalar reference). Kernels of one instruction set live in files
// named *_avx2.cpp / *_avx512.cpp, compiled with those flags only and reached through the
// Kernels table below, so the rest of the library runs on any x86-64 CPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tq::cpu {

enum class Level { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* level_name(Level l);
// Parses "scalar" / "avx2" / "avx512"; throws tq::Error otherwise.
Level parse_level(const char* s);
// Best level this CPU (and OS) supports.
Level detected_level();
// Every level this CPU supports, scalar first.
std::vector<Level> available_levels();
// The level kernels() currently dispatches to.
Level active_level();
// Force a level (throws tq::Error if the CPU lacks it); reset_level() returns to TQ_SIMD or
// the detected level. Not meant to be called while kernels run on other threads.
void force_level(Level l);
void reset_level();

// A run of tokens stored as TurboQuant-style rows: token t's row starts at base + t·stride;
// an fp16 scale (the norm) at scale_off, multiplied by scale_mul; `dim` codes of `bits` bits
// (LSB-first stream, core/bitpack.h) at code_off. Value of coordinate j:
//   scale_mul · f16(scale) · table[code_j].
// TurboQuant_mse uses it with its codebook; TurboQuant_prod's sign bits use bits = 1 and
// table = {−1, +1}.
struct CodeRows {
  const uint8_t* base;
  size_t stride;
  size_t scale_off;
  size_t code_off;
  int dim;
  int bits;  // 1..4 in the SIMD kernels; larger widths take the scalar kernel
  float scale_mul;
  const float* table;  // 2^bits entries
};

// PolarQuant decode tables (codecs/polar.cpp): cos/sin of the level-1 centroids (16) and of the
// level-2, -3, -4 centroids (4 each).
struct PolarTables {
  float l1c[16], l1s[16];
  float lc[3][4], ls[3][4];
};

// The kernel table. "G" query heads share one KV head (GQA); their queries are stored G × d
// (row-major), their scores out[g·ldo + t], their weights w[g·ldw + t], their accumulators
// acc[g·lda + j]. All kernels accept any n ≥ 0 and any d ≥ 1.
struct Kernels {
  Level level;
  // Scores of n tokens. add: out += score (else out = score).
  void (*score_rows)(const CodeRows& r, size_t n, const float* q, int G, float* out, size_t ldo,
                     bool add);
  // acc_g[j] += Σ_t w_g[t] · value_t[j].
  void (*acc_rows)(const CodeRows& r, size_t n, const float* w, size_t ldw, int G, float* acc,
                   size_t lda);
  // Plain float caches: f32 (4 bytes/value) and f16 (2 bytes/value); token t at codes + t·d·size.
  void (*score_f32)(const uint8_t* codes, size_t n, int d, const float* q, int G, float* out,
                    size_t ldo);
  void (*acc_f32)(const uint8_t* codes, size_t n, int d, const float* w, size_t ldw, int G,
                  float* acc, size_t lda);
  void (*score_f16)(const uint8_t* codes, size_t n, int d, const float* q, int G, float* out,
                    size_t ldo);
  void (*acc_f16)(const uint8_t* codes, size_t n, int d, const float* w, size_t ldw, int G,
                  float* acc, size_t lda);
  // ggml block formats along the head dimension (d % 32 == 0): q8_0 blocks of 34 bytes
  // (fp16 d, int8 qs[32]; x = d·q) and q4_0 blocks of 18 bytes (fp16 d, 16 bytes; x = d·(q−8),
  // low nibbles elements 0..15, high nibbles 16..31). Token t at codes + t·(d/32)·block bytes.
  void (*score_q8_0)(const uint8_t* codes, size_t n, int d, const float* q, int G, float* out,
                     size_t ldo);
  void (*acc_q8_0)(const uint8_t* codes, size_t n, int d, const float* w, size_t ldw, int G,
                   float* acc, size_t lda);
  void (*score_q4_0)(const uint8_t* codes, size_t n, int d, const float* q, int G, float* out,
                     size_t ldo);
  void (*acc_q4_0)(const uint8_t* codes, size_t n, int d, const float* w, size_t ldw, int G,
                   float* acc, size_t lda);
  // Online-softmax step: s[i] = exp(s[i] − m) for i < n, returns Σ s[i].
  float (*exp_sum)(float* s, size_t n, float m);
  // y = a·y for n floats.
  void (*scale)(float* y, size_t n, float a);
  // y = a·y for n ≥ 1 floats; returns max_i y[i].
  float (*scale_max)(float* y, size_t n, float a);
  // In-place unnormalised Walsh-Hadamard transform of n = 2^k floats (same operation order
  // as fwht_ref, so results are bit-identical).
  void (*fwht)(float* x, int n);
  // TurboQuant_mse encode of n vectors with a Hadamard rotation (signs, 1/√d) and a codebook
  // given by its 2^bits − 1 boundaries (and centroids, for norm correction): writes fp16 norm
  // at row + scale_off and packed codes at row + code_off, row = out + t·stride.
  void (*encode_mse)(const float* x, size_t n, int d, const float* signs, int bits,
                     const float* boundaries, const float* centroids, bool norm_correction,
                     uint8_t* out, size_t stride, size_t scale_off, size_t code_off);
  // PolarQuant decode into the rotated domain: token t's codes at codes + t·stride (groups of
  // 16 coordinates, 62 bits each, LSB-first: fp16 radius, 8×4-bit level-1, 4×2 level-2, 2×2
  // level-3, 1×2 level-4 angles) → y + t·16·groups. Same products in the same order as the
  // codec's scalar decode, so results are bit-identical.
  void (*polar_decode)(const uint8_t* codes, size_t n, size_t stride, int groups,
                       const PolarTables& t, float* y);
};

// 8-bit fast-scan scores for code tables (AVX-512 level with VBMI + VNNI; see
// kernels_avx512.cpp): on by default; TQ_INT8_SCORES=0 or set_int8_scores(false) keeps the
// exact float kernels. int8_scores_active(): whether the active level uses them now.
bool int8_scores_enabled();
void set_int8_scores(bool on);
bool int8_scores_active();
// Whether the CPU (and OS) has AVX-512 VBMI and VNNI (the 8-bit fast-scan kernels).
bool cpu_has_vbmi_vnni();

const Kernels& kernels();             // the active level
const Kernels& kernels_for(Level l);  // a given level (must be available)

// Per-level tables (defined in kernels_scalar.cpp, kernels_avx2.cpp, kernels_avx512.cpp).
const Kernels& kernels_scalar();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();

}  // namespace tq::cpu
