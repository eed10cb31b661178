// ggml/llama.cpp block formats (DESIGN.md §2.5), byte for byte as ggml defines them
// (ggml/src/ggml-common.h, ggml-quants.c): blocks of 32 consecutive values, each block a packed
// struct whose first field is an fp16 scale. Facts taken from upstream; the code is our own.
//
// Scalar reference kernels, one set per format, on whole rows of n_blocks blocks:
//   quantize_row_<fmt>_ref(x, blocks, n)   — the same bytes as ggml's reference quantizer
//   dequantize_row_<fmt>_ref(blocks, y, n) — the same floats as ggml's dequantize_row_<fmt>
//   <fmt>_dot_ref(blocks, q, n)            — Σ_j q_j · dequant_j (float, per-block scale factored)
//   <fmt>_axpy_ref(blocks, w, acc, n)      — acc_j += w · dequant_j
// The SIMD helper replaces the dot/axpy kernels; these stay as the reference they test against.
#pragma once
#include <cstddef>
#include <cstdint>

namespace tq::ggml {

// Packed (alignment 1) so that blocks may sit at any byte offset of a cache buffer.
#define TQ_GGML_PACKED __attribute__((packed))

constexpr int kBlock = 32;  // QK8_0 = QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK4_NL = 32

// q8_0: d = amax/127, qs_j = roundf(x_j/d) (half away from zero). 34 bytes = 8.5 bpv.
struct TQ_GGML_PACKED BlockQ8_0 {
  uint16_t d;      // fp16 scale
  int8_t qs[32];   // x_j ≈ d · qs_j
};
// q4_0: d = max/−8 where max is the signed value of largest magnitude (first one on ties);
// q_j = min(15, (int8)(x_j/d + 8.5)); x_j ≈ d·(q_j − 8). Nibbles: byte j (0..15) holds element
// j in its low nibble and element j+16 in its high nibble. 18 bytes = 4.5 bpv.
struct TQ_GGML_PACKED BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
// q4_1: d = (max − min)/15, m = min; q_j = min(15, (int8)((x_j − min)/d + 0.5));
// x_j ≈ d·q_j + m. Nibble order as q4_0. 20 bytes = 5.0 bpv.
struct TQ_GGML_PACKED BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
// q5_0: d = max/−16; q_j = min(31, (int8)(x_j/d + 16.5)); x_j ≈ d·(q_j − 16). Low 4 bits in
// qs (nibble order as q4_0); bit 4 of element j (0..31) is bit j of the little-endian uint32
// qh. 22 bytes = 5.5 bpv.
struct TQ_GGML_PACKED BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
// q5_1: d = (max − min)/31, m = min; q_j = (uint8)((x_j − min)/d + 0.5) (no clamp upstream);
// x_j ≈ d·q_j + m. Bits as q5_0. 24 bytes = 6.0 bpv.
struct TQ_GGML_PACKED BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
// iq4_nl: x_j ≈ d · kIq4nlValues[q_j], nibble order as q4_0. 18 bytes = 4.5 bpv. The scale is
// ggml's weighted (w_j = x_j²) least-squares fit, see quantize_row_iq4_nl_ref below.
struct TQ_GGML_PACKED BlockIq4Nl {
  uint16_t d;
  uint8_t qs[16];
};

static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block is 18 bytes");
static_assert(sizeof(BlockQ4_1) == 20, "q4_1 block is 20 bytes");
static_assert(sizeof(BlockQ5_0) == 22, "q5_0 block is 22 bytes");
static_assert(sizeof(BlockQ5_1) == 24, "q5_1 block is 24 bytes");
static_assert(sizeof(BlockIq4Nl) == 18, "iq4_nl block is 18 bytes");

// ggml's kvalues_iq4nl: the 16 non-linear levels of iq4_nl.
inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// iq4_nl scale search width. ggml's quantize_row_iq4_nl_ref — what llama.cpp writes into an
// iq4_nl KV cache on CPU, CUDA and Metal alike since ggml commit f5fc72a1 (2024-03, "same IQ4_NL
// quantization for CPU/CUDA/Metal") — uses ntry = −1: start from d = max/−127, pick the nearest
// levels, refit d by weighted least squares, keep those levels; no search. ggml's model-file
// quantizer quantize_iq4_nl uses ntry = 7: it also tries the 15 scales (itry − 127)/max and
// re-picks the levels with the best scale. The cache type follows the cache (ntry = −1).
constexpr int kIq4nlNtryCache = -1;
constexpr int kIq4nlNtrySearch = 7;

void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, size_t n_blocks);
void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, size_t n_blocks);
void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, size_t n_blocks);
void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, size_t n_blocks);
void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, size_t n_blocks);
// ntry ≤ 0 (default): ggml's quantize_row_iq4_nl_ref; ntry > 0: quantize_iq4_nl's search.
void quantize_row_iq4_nl_ref(const float* x, BlockIq4Nl* y, size_t n_blocks,
                             int ntry = kIq4nlNtryCache);

void dequantize_row_q8_0_ref(const BlockQ8_0* b, float* y, size_t n_blocks);
void dequantize_row_q4_0_ref(const BlockQ4_0* b, float* y, size_t n_blocks);
void dequantize_row_q4_1_ref(const BlockQ4_1* b, float* y, size_t n_blocks);
void dequantize_row_q5_0_ref(const BlockQ5_0* b, float* y, size_t n_blocks);
void dequantize_row_q5_1_ref(const BlockQ5_1* b, float* y, size_t n_blocks);
void dequantize_row_iq4_nl_ref(const BlockIq4Nl* b, float* y, size_t n_blocks);

float q8_0_dot_ref(const BlockQ8_0* b, const float* q, size_t n_blocks);
float q4_0_dot_ref(const BlockQ4_0* b, const float* q, size_t n_blocks);
float q4_1_dot_ref(const BlockQ4_1* b, const float* q, size_t n_blocks);
float q5_0_dot_ref(const BlockQ5_0* b, const float* q, size_t n_blocks);
float q5_1_dot_ref(const BlockQ5_1* b, const float* q, size_t n_blocks);
float iq4_nl_dot_ref(const BlockIq4Nl* b, const float* q, size_t n_blocks);

void q8_0_axpy_ref(const BlockQ8_0* b, float w, float* acc, size_t n_blocks);
void q4_0_axpy_ref(const BlockQ4_0* b, float w, float* acc, size_t n_blocks);
void q4_1_axpy_ref(const BlockQ4_1* b, float w, float* acc, size_t n_blocks);
void q5_0_axpy_ref(const BlockQ5_0* b, float w, float* acc, size_t n_blocks);
void q5_1_axpy_ref(const BlockQ5_1* b, float w, float* acc, size_t n_blocks);
void iq4_nl_axpy_ref(const BlockIq4Nl* b, float w, float* acc, size_t n_blocks);

// ggml's best_index_int8 for the 16 iq4_nl levels: the index whose level is nearest to x,
// ties to the upper level (x + x compared with the sum of neighbouring levels, exact).
int iq4_nl_best_index(float x);

}  // namespace tq::ggml
