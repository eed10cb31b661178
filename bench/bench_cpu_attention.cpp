// Google Benchmark micro-benchmarks of the CPU kernels (issue 6): decode attention of one KV
// head with 4 query heads at d = 128 over 32k tokens per cache type and SIMD level, and the
// encode (append) kernels. The end-to-end table with the baselines measured in the same run is
// `tq bench attention` / `tq bench encode`.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "attention/decode.h"
#include "cpu/dispatch.h"
#include "tq/codec.h"

namespace {

const char* kTypes[] = {"f32",    "f16",      "q8_0",     "q4_0",    "turbo2", "turbo3",
                        "turbo4", "turbo2.5", "turbo3.5", "turbo3p", "polar"};

std::vector<float> randn(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(g);
  return v;
}

// Forces the SIMD level of this run; marks the run skipped where the CPU lacks it.
bool force_level_or_skip(benchmark::State& st, tq::cpu::Level level) {
  if (int(level) > int(tq::cpu::detected_level())) {
    st.SkipWithError("SIMD level not available");
    return false;
  }
  tq::cpu::force_level(level);
  return true;
}

void BM_DecodeAttention(benchmark::State& st) {
  const std::string type = kTypes[st.range(0)];
  const auto level = tq::cpu::Level(st.range(1));
  if (!force_level_or_skip(st, level)) return;
  const int d = 128, G = 4;
  const size_t ctx = size_t(st.range(2));
  auto k = tq::make_codec(type, d), v = tq::make_codec(type, d);
  const auto kx = randn(ctx * d, 1), vx = randn(ctx * d, 2), q = randn(size_t(G) * d, 3);
  std::vector<uint8_t> kc(ctx * k->block_bytes()), vc(ctx * v->block_bytes());
  k->encode(kx.data(), ctx, kc.data());
  v->encode(vx.data(), ctx, vc.data());
  const tq::cpu::KvPage page{kc.data(), vc.data(), ctx};
  std::vector<float> out(size_t(G) * d);
  tq::cpu::DecodeOptions opt;
  opt.threads = 1;
  for (auto _ : st) {
    tq::cpu::decode_attention(*k, *v, {&page, 1}, q.data(), G, 1.0f / std::sqrt(float(d)),
                              out.data(), opt);
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(kc.size() + vc.size()));
  st.SetLabel(type + " " + tq::cpu::level_name(level));
  tq::cpu::reset_level();
}
BENCHMARK(BM_DecodeAttention)
    ->ArgsProduct({benchmark::CreateDenseRange(0, 10, 1), {0, 1, 2}, {32768}})
    ->Unit(benchmark::kMicrosecond);

void BM_Encode(benchmark::State& st) {
  const std::string type = kTypes[st.range(0)];
  const auto level = tq::cpu::Level(st.range(1));
  if (!force_level_or_skip(st, level)) return;
  const int d = 128;
  const size_t n = 4096;
  auto c = tq::make_codec(type, d);
  const auto x = randn(n * d, 4);
  std::vector<uint8_t> codes(n * c->block_bytes());
  for (auto _ : st) {
    c->encode(x.data(), n, codes.data());
    benchmark::DoNotOptimize(codes.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(n * d * sizeof(float)));
  st.SetLabel(type + " " + tq::cpu::level_name(level));
  tq::cpu::reset_level();
}
BENCHMARK(BM_Encode)->ArgsProduct({{1, 2, 4, 5, 6, 7}, {0, 1, 2}})->Unit(benchmark::kMicrosecond);

}  // namespace
