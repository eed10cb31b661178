// Quantized matrix products (src/matmul): every weight type × SIMD level against the scalar
// reference kernels, and matmul() against dequantize-then-f32, on fresh random data and odd
// shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "cpu/dispatch.h"
#include "matmul/qdot.h"
#include "matmul/qmatrix.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tq/error.h"

namespace tq {
namespace {

using cpu::Level;

struct LevelGuard {
  explicit LevelGuard(Level l) { cpu::force_level(l); }
  ~LevelGuard() { cpu::reset_level(); }
};

const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                           GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// Byte offsets of the fp16 scale fields inside one block of t (random bytes there would give
// infinities and NaNs; real files hold moderate scales).
std::vector<int> scale_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0: return {0};
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q6_K: return {208};
    default: return {};
  }
}

void put_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// A random rows × cols matrix of type t.
std::vector<uint8_t> random_weights(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t bs = ggml_block_size(t);
  const size_t bb = ggml_block_bytes(t);
  const size_t nblocks = size_t(rows * cols / bs);
  std::vector<uint8_t> w(nblocks * bb);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  if (t == GgmlType::F32) {
    for (size_t i = 0; i < nblocks; ++i) {
      const float v = g(rng);
      std::memcpy(&w[4 * i], &v, 4);
    }
    return w;
  }
  if (t == GgmlType::F16 || t == GgmlType::BF16) {
    for (size_t i = 0; i < nblocks; ++i)
      put_u16(&w[2 * i], t == GgmlType::F16 ? f32_to_f16(g(rng)) : f32_to_bf16(g(rng)));
    return w;
  }
  for (auto& b : w) b = uint8_t(byte(rng));
  for (size_t i = 0; i < nblocks; ++i)
    for (int off : scale_fields(t)) {
      // Q4_1/Q5_1 min and Q4_K/Q5_K dmin are signed/positive scales alike: any sign is legal.
      const float s = scale(rng) * (byte(rng) & 1 ? 1.f : -1.f);
      put_u16(&w[i * bb + off], f32_to_f16(s));
    }
  return w;
}

std::vector<float> random_x(int n, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> g(0.f, 1.f);
  std::vector<float> x(size_t(n) * cols);
  for (auto& v : x) v = g(rng);
  // Some outliers, as real activations have.
  for (size_t i = 0; i < x.size(); i += 97) x[i] *= 8.f;
  return x;
}

QMatrix view(GgmlType t, int64_t rows, int64_t cols, const std::vector<uint8_t>& w) {
  QMatrix m;
  m.type = t;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = size_t(cols / ggml_block_size(t)) * ggml_block_bytes(t);
  m.data = w.data();
  return m;
}

// The activation values as the kernels see them (quantized, then dequantized), and for each
// value the largest rounding error of its block (d/2; 0 for f32 activations).
void act_values(GgmlType t, const uint8_t* a, int64_t cols, float* xq, float* err) {
  switch (mm::act_kind(t)) {
    case mm::ActKind::kF32:
      std::memcpy(xq, a, size_t(cols) * 4);
      for (int64_t j = 0; j < cols; ++j) err[j] = 0.f;
      return;
    case mm::ActKind::kQ8: {
      const auto* b = reinterpret_cast<const mm::BlockQ8*>(a);
      for (int64_t j = 0; j < cols; ++j) {
        xq[j] = b[j / 32].d * float(b[j / 32].qs[j % 32]);
        err[j] = 0.5f * b[j / 32].d;
      }
      return;
    }
    case mm::ActKind::kQ8K: {
      const auto* b = reinterpret_cast<const mm::BlockQ8K*>(a);
      for (int64_t j = 0; j < cols; ++j) {
        xq[j] = b[j / 256].d * float(b[j / 256].qs[j % 256]);
        err[j] = 0.5f * b[j / 256].d;
      }
      return;
    }
  }
}

std::vector<Level> matmul_levels() { return cpu::available_levels(); }

std::vector<int64_t> col_sizes(GgmlType t) {
  const int64_t bs = ggml_block_size(t);
  if (bs == 1) return {1, 13, 100, 577};
  if (bs == 32) return {32, 96, 160, 576};
  return {256, 768, 1536};
}

struct Case {
  GgmlType t;
  int64_t rows, cols;
  int n;
};

std::vector<Case> cases() {
  std::vector<Case> v;
  for (GgmlType t : kTypes)
    for (int64_t cols : col_sizes(t))
      for (int64_t rows : {1, 7, 33})
        for (int n : {1, 3, 17}) v.push_back({t, rows, cols, n});
  return v;
}

std::string case_name(const Case& c, Level l) {
  return std::string(ggml_type_name(c.t)) + " " + std::to_string(c.rows) + "x" +
         std::to_string(c.cols) + " n=" + std::to_string(c.n) + " " + cpu::level_name(l);
}

// The SIMD quantization of the activations writes the same bytes as the reference.
TEST(Matmul, ActivationQuantizationMatchesReference) {
  std::mt19937 rng(101);
  for (GgmlType t : kTypes)
    for (int64_t cols : col_sizes(t)) {
      std::vector<float> x = random_x(1, cols, rng);
      x[0] = 0.f;
      const size_t bytes = mm::act_row_bytes(t, cols);
      std::vector<uint8_t> ref(bytes), got(bytes);
      mm::quantize_act_ref(t, x.data(), cols, ref.data());
      for (Level l : matmul_levels()) {
        std::fill(got.begin(), got.end(), 0xAB);
        mm::qkernels_for(l).quantize(t, x.data(), cols, got.data());
        EXPECT_EQ(0, std::memcmp(ref.data(), got.data(), bytes))
            << ggml_type_name(t) << " cols " << cols << " " << cpu::level_name(l);
      }
      // An all-zero block quantizes to zeros with d = 0 (no division by zero).
      std::vector<float> z(size_t(cols), 0.f);
      mm::quantize_act_ref(t, z.data(), cols, ref.data());
      std::vector<float> xq(static_cast<size_t>(cols)), err(static_cast<size_t>(cols));
      act_values(t, ref.data(), cols, xq.data(), err.data());
      for (float v : xq) EXPECT_EQ(v, 0.f);
    }
}

// Each level's tile kernel against the scalar reference kernel on the same quantized
// activations: the integer parts are exact, only the order of the float block sums differs, so
// the tolerance is 1e-5 of Σ|w_j·x_j| (float rounding over ≤ 48 block terms is ~1e-6 of it).
TEST(Matmul, TileKernelsMatchReference) {
  std::mt19937 rng(202);
  for (const Case& c : cases()) {
    const std::vector<uint8_t> w = random_weights(c.t, c.rows, c.cols, rng);
    const std::vector<float> x = random_x(c.n, c.cols, rng);
    const QMatrix W = view(c.t, c.rows, c.cols, w);
    const size_t stride = mm::act_row_bytes(c.t, c.cols);
    std::vector<uint8_t> act(stride * c.n);
    for (int i = 0; i < c.n; ++i)
      mm::quantize_act_ref(c.t, &x[size_t(i) * c.cols], c.cols, &act[i * stride]);
    std::vector<float> ref(size_t(c.n) * c.rows), got(ref.size());
    mm::qkernels_ref().tile(c.t)(w.data(), W.row_bytes, int(c.rows), act.data(), stride, c.n,
                                 c.cols, ref.data(), size_t(c.rows), false);
    // Magnitudes Σ|ŵ_j·x̂_j| from the dequantized values.
    std::vector<float> wrow(static_cast<size_t>(c.cols)), xq(static_cast<size_t>(c.cols)), err(static_cast<size_t>(c.cols));
    std::vector<double> mag(ref.size());
    for (int i = 0; i < c.n; ++i) {
      act_values(c.t, &act[i * stride], c.cols, xq.data(), err.data());
      for (int64_t r = 0; r < c.rows; ++r) {
        qmatrix_row(W, r, wrow.data());
        double m = 0;
        for (int64_t j = 0; j < c.cols; ++j) m += std::fabs(double(wrow[j]) * xq[j]);
        mag[size_t(i) * c.rows + r] = m;
      }
    }
    for (Level l : matmul_levels()) {
      const mm::TileFn fn = mm::qkernels_for(l).tile(c.t);
      ASSERT_NE(fn, nullptr) << case_name(c, l);
      std::fill(got.begin(), got.end(), 1.f);
      fn(w.data(), W.row_bytes, int(c.rows), act.data(), stride, c.n, c.cols, got.data(),
         size_t(c.rows), true);  // add: 1 + value
      for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_NEAR(got[i] - 1.f, ref[i], 1e-5 * mag[i] + 1e-6) << case_name(c, l) << " @" << i;
    }
  }
}

// matmul() at every level against the f32 product of the dequantized weights and the exact
// activations. The only approximation is the int8 activation rounding: each value is off by at
// most d/2 of its block, so |Δ| ≤ Σ_j |w_j|·d_j/2 (plus float rounding, 1e-5 of Σ|w_j·x_j|).
TEST(Matmul, MatmulMatchesDequantizedProduct) {
  std::mt19937 rng(303);
  for (const Case& c : cases()) {
    const std::vector<uint8_t> w = random_weights(c.t, c.rows, c.cols, rng);
    const std::vector<float> x = random_x(c.n, c.cols, rng);
    const QMatrix W = view(c.t, c.rows, c.cols, w);
    std::vector<float> wd(size_t(c.rows) * c.cols);
    for (int64_t r = 0; r < c.rows; ++r) qmatrix_row(W, r, &wd[size_t(r) * c.cols]);
    std::vector<double> want(size_t(c.n) * c.rows), bound(want.size());
    const size_t stride = mm::act_row_bytes(c.t, c.cols);
    std::vector<uint8_t> act(stride);
    std::vector<float> xq(static_cast<size_t>(c.cols)), err(static_cast<size_t>(c.cols));
    for (int i = 0; i < c.n; ++i) {
      const float* xi = &x[size_t(i) * c.cols];
      mm::quantize_act_ref(c.t, xi, c.cols, act.data());
      act_values(c.t, act.data(), c.cols, xq.data(), err.data());
      for (int64_t r = 0; r < c.rows; ++r) {
        double s = 0, b = 0, m = 0;
        for (int64_t j = 0; j < c.cols; ++j) {
          const double wj = wd[size_t(r) * c.cols + j];
          s += wj * xi[j];
          b += std::fabs(wj) * err[j];
          m += std::fabs(wj * xi[j]);
        }
        want[size_t(i) * c.rows + r] = s;
        bound[size_t(i) * c.rows + r] = 1.001 * b + 1e-5 * m + 1e-6;
      }
    }
    for (Level l : matmul_levels()) {
      LevelGuard g(l);
      std::vector<float> y(want.size());
      matmul(W, x.data(), c.n, y.data());
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_NEAR(y[i], want[i], bound[i]) << case_name(c, l) << " @" << i;
    }
  }
}

// Prefill shapes that cross the tile boundaries (16 rows × 64 tokens), two threads, and
// accumulate = true: the same values as the single-token products.
TEST(Matmul, TiledProductEqualsRowByRow) {
  std::mt19937 rng(404);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q4_1,
                     GgmlType::F16, GgmlType::F32}) {
    const int64_t rows = 37, cols = ggml_block_size(t) == 1 ? 75 : 512;
    const int n = 70;
    const std::vector<uint8_t> w = random_weights(t, rows, cols, rng);
    const std::vector<float> x = random_x(n, cols, rng);
    const QMatrix W = view(t, rows, cols, w);
    std::vector<float> y(size_t(n) * rows, 0.5f), one(static_cast<size_t>(rows));
    matmul(W, x.data(), n, y.data(), true);
    for (int i = 0; i < n; ++i) {
      matmul(W, &x[size_t(i) * cols], 1, one.data());
      for (int64_t r = 0; r < rows; ++r)
        ASSERT_NEAR(y[size_t(i) * rows + r] - 0.5f, one[r], 1e-4f * (1.f + std::fabs(one[r])))
            << ggml_type_name(t) << " token " << i << " row " << r;
    }
  }
  omp_set_num_threads(saved);
}

// A weight type the products do not support is refused by name; a good one maps in place.
TEST(Matmul, QMatrixOfChecksTypeAndShape) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "tq_test_matmul.gguf").string();
  GgufWriter wr;
  wr.set_string("general.architecture", "llama");
  std::vector<uint8_t> q2(84 * 2, 0), q8(34 * 16, 0);
  wr.add_tensor("w_q2k", GgmlType::Q2_K, {256, 2}, q2.data(), q2.size());
  wr.add_tensor("w_q8", GgmlType::Q8_0, {64, 8}, q8.data(), q8.size());
  wr.write(path);
  auto f = GgufFile::open(path);
  try {
    qmatrix_of(*f, "w_q2k", 256, 2);
    FAIL() << "q2_K accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q2_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("w_q2k"), std::string::npos) << e.what();
  }
  EXPECT_THROW(qmatrix_of(*f, "w_q8", 64, 9), Error);  // wrong shape
  EXPECT_THROW(qmatrix_of(*f, "absent", 64, 8), Error);
  const QMatrix m = qmatrix_of(*f, "w_q8", 64, 8);
  EXPECT_EQ(m.type, GgmlType::Q8_0);
  EXPECT_EQ(m.row_bytes, 68u);
  EXPECT_EQ(m.data, f->tensor("w_q8").data);  // a view into the mapping, not a copy
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tq
