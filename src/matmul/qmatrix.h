// turboquant — matrix products with GGUF weights kept in their own types (DESIGN.md §8).
//
// A QMatrix is a view of a weight tensor inside the memory-mapped GGUF file: `rows` output
// features, each a row of `cols` input features stored as ggml blocks of its type. Nothing is
// copied or dequantized at load; the products read the blocks where they lie.
//
// Quantized types (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K) multiply with the activations
// quantized to int8 per block — 32-blocks for the legacy types, 256-superblocks with sums per 16
// for the K types, as each format's sub-block scales require — and integer dot products
// (AVX-512 VNNI, AVX2, or the scalar references in qdot_ref.cpp; runtime dispatch follows
// src/cpu's level, see qdot.h). F16/BF16 rows are converted on the fly and multiplied in f32;
// F32 weights go through OpenBLAS (it wins there).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/gguf.h"

namespace tq {

struct QMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;           // bytes of one row (cols / block elements × block bytes)
  const uint8_t* data = nullptr;  // rows × row_bytes, into the mmap (or owned storage)
  std::string name;               // for error messages

  bool empty() const { return data == nullptr; }
  const uint8_t* row(int64_t r) const { return data + size_t(r) * row_bytes; }
  size_t bytes() const { return size_t(rows) * row_bytes; }
};

// Whether matmul() handles weights of type t.
bool qmatrix_supported(GgmlType t);

// The view of tensor `name` as a matrix of `rows` × `cols` (ggml ne = {cols, rows}; trailing
// ones ignored). Throws tq::Error naming the tensor for a missing tensor, a wrong shape, a row
// that is not a whole number of blocks, a truncated tensor, or a type matmul() cannot multiply
// (the message names the type).
QMatrix qmatrix_of(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows);
// The same for a 1-D tensor (norm weights, biases): dequantized to f32 (they are small).
std::vector<float> vector_of(const GgufFile& f, const std::string& name, int64_t n);

// Y (n × W.rows) = X (n × W.cols) · Wᵀ; accumulate: Y += instead of Y =. n = 1 is a matrix-vector
// product (OpenMP over rows), n > 1 a tiled product (OpenMP over tiles of rows × tokens).
void matmul(const QMatrix& W, const float* X, int n, float* Y, bool accumulate = false);

// Row r of W as f32 (cols floats): the embedding lookup.
void qmatrix_row(const QMatrix& W, int64_t r, float* out);

}  // namespace tq
