// turboquant — a Llama-family model's configuration read from GGUF metadata and validated
// before any weight is touched (issue 17): every size is range-checked and derived sizes are
// computed in 64 bits, the metadata is checked against the shapes of the tensors, and the
// weights are scanned for NaN/Inf. A model file is untrusted input: a crafted head_count of
// 2^29 + 2 wrapped n_head · head_dim to 16 in int arithmetic and the forward pass then walked
// far past its buffers.
#pragma once
#include <cstdint>

#include "model/llama.h"

namespace tq {

class GgufFile;
struct GgufTensor;

// The hyperparameters of a llama/qwen2 (mistral, smollm) model, n_vocab, has_qkv_bias and
// tied_output included. Throws tq::Error naming the metadata key (or the tensor whose shape
// contradicts it) when a value is missing, out of range or inconsistent.
LlamaHparams read_llama_hparams(const GgufFile& f);

// Throws tq::Error naming the first tensor that holds a NaN or an infinity. Only what can be
// non-finite is read: every element of f32/f16/bf16 tensors, the f16/f32 scales of quantized
// blocks (their integer codes times finite scales are always finite).
void check_tensors_finite(const GgufFile& f);
// Index of the first block (element, for float types) of t holding a NaN/Inf, or -1. Types the
// loader cannot dequantize give -1 (it refuses them anyway).
int64_t first_nonfinite_block(const GgufTensor& t);

}  // namespace tq
