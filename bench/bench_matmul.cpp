// Quantized products (src/matmul) on the shapes of Qwen2.5-Coder-1.5B and SmolLM2-135M, one
// thread: decode (n = 1) and prefill (n = 64) per weight type and SIMD level. Random weights
// with moderate scales. Reports weight GB/s (decode) and GMAC/s (prefill).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/half.h"
#include "cpu/dispatch.h"
#include "matmul/qmatrix.h"

namespace {

using tq::GgmlType;

std::vector<uint8_t> weights(GgmlType t, int64_t rows, int64_t cols) {
  const size_t bb = tq::ggml_block_bytes(t), nb = size_t(rows * cols / tq::ggml_block_size(t));
  std::vector<uint8_t> w(nb * bb);
  std::mt19937 rng(1);
  for (auto& b : w) b = uint8_t(rng());
  // fp16 scale fields (offsets as in dequant.cpp) set to 0.01.
  std::vector<int> offs;
  if (t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q4_1) offs = {0, 2};
  if (t == GgmlType::Q8_0 || t == GgmlType::Q4_0 || t == GgmlType::Q5_0) offs = {0};
  if (t == GgmlType::Q6_K) offs = {208};
  const uint16_t h = tq::f32_to_f16(0.01f);
  for (size_t i = 0; i < nb; ++i)
    for (int o : offs) std::memcpy(&w[i * bb + o], &h, 2);
  return w;
}

void run(benchmark::State& st, GgmlType t, int64_t rows, int64_t cols, int n, tq::cpu::Level l) {
  if (int(l) > int(tq::cpu::detected_level())) return st.SkipWithError("level not available");
  tq::cpu::force_level(l);
  omp_set_num_threads(1);
  const std::vector<uint8_t> w = weights(t, rows, cols);
  tq::QMatrix m;
  m.type = t;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = size_t(cols / tq::ggml_block_size(t)) * tq::ggml_block_bytes(t);
  m.data = w.data();
  std::vector<float> x(size_t(n) * cols, 0.5f), y(size_t(n) * rows);
  for (auto _ : st) {
    tq::matmul(m, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GB/s"] = benchmark::Counter(double(m.bytes()), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GMAC/s"] =
      benchmark::Counter(double(rows) * cols * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  tq::cpu::reset_level();
}

#define TQ_BENCH(name, type, rows, cols, n, lvl)                                           \
  BENCHMARK_CAPTURE(run, name, GgmlType::type, rows, cols, n, tq::cpu::Level::lvl)         \
      ->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime()

TQ_BENCH(qwen_ffn_up_q4k_decode_avx512, Q4_K, 8960, 1536, 1, kAvx512);
TQ_BENCH(qwen_ffn_up_q4k_decode_avx2, Q4_K, 8960, 1536, 1, kAvx2);
TQ_BENCH(qwen_ffn_down_q6k_decode_avx512, Q6_K, 1536, 8960, 1, kAvx512);
TQ_BENCH(qwen_ffn_up_q4k_prefill64_avx512, Q4_K, 8960, 1536, 64, kAvx512);
TQ_BENCH(qwen_ffn_up_q4k_prefill64_avx2, Q4_K, 8960, 1536, 64, kAvx2);
TQ_BENCH(qwen_ffn_down_q6k_prefill64_avx512, Q6_K, 1536, 8960, 64, kAvx512);
TQ_BENCH(smol_ffn_up_q4_1_decode_avx512, Q4_1, 1536, 576, 1, kAvx512);
TQ_BENCH(smol_ffn_up_q4_1_prefill64_avx512, Q4_1, 1536, 576, 64, kAvx512);
TQ_BENCH(smol_embd_q8_0_prefill64_avx512, Q8_0, 49152, 576, 64, kAvx512);
TQ_BENCH(q8_0_decode_avx512, Q8_0, 8960, 1536, 1, kAvx512);
TQ_BENCH(q5_0_prefill64_avx512, Q5_0, 2048, 640, 64, kAvx512);

}  // namespace
