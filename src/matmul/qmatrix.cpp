// turboquant — matmul() over weights in their GGUF types (qmatrix.h, DESIGN.md §8).
#include "matmul/qmatrix.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "matmul/qdot.h"
#include "tq/error.h"

namespace tq {

namespace {

std::string shape_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

const GgufTensor& checked_tensor(const GgufFile& f, const std::string& name,
                                 const std::vector<int64_t>& want) {
  const GgufTensor& t = f.tensor(name);
  std::vector<int64_t> ne = t.ne;
  while (ne.size() > want.size() && ne.back() == 1) ne.pop_back();
  if (ne != want)
    throw Error("tensor '" + name + "' has shape " + shape_str(t.ne) + ", expected " +
                shape_str(want));
  return t;
}

// A 64-byte aligned scratch buffer per thread, grown on demand (the activations of one product).
uint8_t* scratch(size_t bytes) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<uint8_t*>((p + 63) & ~uintptr_t(63));
}

// F32 weights: OpenBLAS, one thread pool only — OpenBLAS runs single-threaded (set_threads) and
// the output columns are split over the OpenMP threads: on a shared 2-core machine, OpenBLAS's
// own pthread pool spinning against OpenMP's made prefill several times slower (measured 26 vs
// 295 tok/s). One token goes through sgemv: 105 µs vs 520 µs for sgemm with M = 1 on a
// 1536×576 weight, OpenBLAS 0.3.21, 1 thread.
void matmul_f32_blas(const QMatrix& W, const float* X, int n, float* Y, bool accumulate) {
  const int in = int(W.cols), out = int(W.rows);
  const float* w = reinterpret_cast<const float*>(W.data);
  const float beta = accumulate ? 1.f : 0.f;
  const int nt = std::min(omp_get_max_threads(), std::max(1, out / 64));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int c0 = int(int64_t(out) * t / T), c1 = int(int64_t(out) * (t + 1) / T);
    if (c1 > c0) {
      const float* Wc = w + size_t(c0) * in;
      if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, c1 - c0, in, 1.f, Wc, in, X, 1, beta, Y + c0,
                    1);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, c1 - c0, in, 1.f, X, in, Wc, in,
                    beta, Y + c0, out);
    }
  }
}

// Tile sizes of the prefill product: kTileRows weight rows × kTileCols tokens per task. 16
// rows of a 1536-wide Q4_K matrix are 14 KB and 64 tokens of its activations 120 KB, so a
// tile's weights stay in L1 while the token groups stream from L2.
constexpr int kTileRows = 16;
constexpr int kTileCols = 64;

}  // namespace

bool qmatrix_supported(GgmlType t) { return mm::qkernels_ref().tile(t) != nullptr; }

QMatrix qmatrix_of(const GgufFile& f, const std::string& name, int64_t cols, int64_t rows) {
  const GgufTensor& t = checked_tensor(f, name, {cols, rows});
  if (!qmatrix_supported(t.type))
    throw Error("tensor '" + name + "' has weight type " + ggml_type_name(t.type) +
                ", which matmul does not support (supported: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 "
                "q8_0 q4_K q5_K q6_K)");
  const int64_t bs = ggml_block_size(t.type);
  if (cols % bs != 0)
    throw Error("tensor '" + name + "': row length " + std::to_string(cols) +
                " is not a multiple of the " + ggml_type_name(t.type) + " block");
  QMatrix m;
  m.type = t.type;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = size_t(cols / bs) * ggml_block_bytes(t.type);
  m.data = t.data;
  m.name = name;
  if (m.bytes() > t.nbytes) throw Error("tensor '" + name + "' is truncated");
  return m;
}

std::vector<float> vector_of(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensor& t = checked_tensor(f, name, {n});
  if (!ggml_can_dequantize(t.type))
    throw Error("tensor '" + name + "' has unsupported type " + ggml_type_name(t.type));
  const int64_t bs = ggml_block_size(t.type);
  if (n % bs != 0 || size_t(n / bs) * ggml_block_bytes(t.type) > t.nbytes)
    throw Error("tensor '" + name + "' is truncated or not a whole number of blocks");
  std::vector<float> out(static_cast<size_t>(n));
  dequantize(t.type, t.data, out.data(), n);
  return out;
}

void qmatrix_row(const QMatrix& W, int64_t r, float* out) {
  TQ_ASSERT(r >= 0 && r < W.rows);
  dequantize(W.type, W.row(r), out, W.cols);
}

void matmul(const QMatrix& W, const float* X, int n, float* Y, bool accumulate) {
  if (n <= 0 || W.rows == 0) return;
  if (W.type == GgmlType::F32) return matmul_f32_blas(W, X, n, Y, accumulate);
  const mm::QKernels& K = mm::qkernels();
  const mm::TileFn tile = K.tile(W.type);
  TQ_ASSERT(tile != nullptr);
  const int64_t cols = W.cols, rows = W.rows;
  const size_t stride = mm::act_row_bytes(W.type, cols);
  uint8_t* act = scratch(stride * size_t(n));
  // Quantized once per product: every row (weight) tile reads the same activation blocks.
#pragma omp parallel for schedule(static) if (n > 1)
  for (int t = 0; t < n; ++t) K.quantize(W.type, X + size_t(t) * cols, cols, act + t * stride);

  if (n == 1) {
    // Decode: rows split over the threads (memory-bound; chunks of ≥ 64 rows).
    const int nt = int(std::min<int64_t>(omp_get_max_threads(), std::max<int64_t>(1, rows / 64)));
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), T = omp_get_num_threads();
      const int64_t r0 = rows * t / T, r1 = rows * (t + 1) / T;
      if (r1 > r0)
        tile(W.row(r0), W.row_bytes, int(r1 - r0), act, stride, 1, cols, Y + r0, size_t(rows),
             accumulate);
    }
    return;
  }
  // Prefill: tiles of rows × tokens over the threads.
  const int64_t tr = (rows + kTileRows - 1) / kTileRows;
  const int64_t tc = (n + kTileCols - 1) / kTileCols;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int64_t ic = 0; ic < tc; ++ic)
    for (int64_t ir = 0; ir < tr; ++ir) {
      const int64_t r0 = ir * kTileRows, c0 = ic * kTileCols;
      const int nr = int(std::min<int64_t>(kTileRows, rows - r0));
      const int nc = int(std::min<int64_t>(kTileCols, n - c0));
      tile(W.row(r0), W.row_bytes, nr, act + size_t(c0) * stride, stride, nc, cols,
           Y + size_t(c0) * size_t(rows) + size_t(r0), size_t(rows), accumulate);
    }
}

}  // namespace tq
