// Cross-backend decode attention (in the spirit of ggml's test-backend-ops): every registered
// cache type that needs no learned data × head dims (64, 128, 256 and the odd ones it takes) ×
// context lengths 1, 7, 33, 257, 1031 (crossing the 256-token pages) × 1..8 query heads per KV
// head; each CPU SIMD level this machine has (forced, as TQ_SIMD does), with the 8-bit
// fast-scan tables off and on, against the double-precision reference over the codec's own
// decode, by normalised error ‖out − ref‖ / ‖ref‖ (tests/backend_cases.h, shared with the CUDA
// backend's test under tests/cuda). Tolerances (tq::test::cpu_tolerance): 1e-4 for the float
// kernels (the same math in float: observed ≤ 7e-6), 0.1 with the 8-bit tables (observed
// ≤ 4.5e-2). A wrong kernel is off by O(1). One test per type (ctest runs them in parallel).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "attention/decode.h"
#include "backend_cases.h"
#include "codecs/turbo.h"
#include "cpu/dispatch.h"

using namespace tq;

namespace {

constexpr int kPageTokens = 256;  // the CPU cache's default page

// The case's codes cut into pages of kPageTokens (whole blocks), as the cache stores them.
std::vector<KvSegment> paged(const test::CaseData& d, bool keys) {
  const Codec& c = keys ? *d.k : *d.v;
  const std::vector<uint8_t>& codes = keys ? d.k_codes : d.v_codes;
  const int bt = c.block_tokens();
  EXPECT_EQ(kPageTokens % bt, 0);
  std::vector<KvSegment> segs;
  for (int pos = 0; pos < d.n_tokens; pos += kPageTokens) {
    const int n = std::min(kPageTokens, d.n_tokens - pos);
    segs.push_back({pos, n, codes.data() + size_t(pos / bt) * c.block_bytes(), nullptr});
  }
  return segs;
}

// The CPU backend at the active level: decode attention of the first G query heads.
std::vector<float> cpu_decode(const test::CaseData& d, int G, int threads) {
  const auto ks = paged(d, true), vs = paged(d, false);
  std::vector<float> out(size_t(G) * d.c.dim, -7.0f);
  const HeadTask task{d.k.get(), d.v.get(), ks, vs, size_t(d.c.ctx), d.q.data(), out.data()};
  DecodeOptions opt;
  opt.threads = threads;
  opt.min_parallel_work = 0;
  opt.min_split_tokens = 256;
  decode_attention_batch(std::span<const HeadTask>(&task, 1), G, d.scale, opt);
  return out;
}

bool on_code_rows(const Codec& c) {
  return dynamic_cast<const TurboMseCodec*>(&c) || dynamic_cast<const TurboProdCodec*>(&c) ||
         dynamic_cast<const TurboSplitCodec*>(&c);
}

}  // namespace

// The case list is the registry's: every listed type that needs no learned data is in it, at
// 64 and 128 at least.
TEST(BackendOps, CasesCoverTheRegistry) {
  std::set<std::string> want, got, at64, at128;
  for (const auto& t : list_types())
    if (!type_traits(t).needs_calibration) want.insert(t);
  for (const auto& c : test::backend_cases()) {
    got.insert(c.type);
    if (c.dim == 64) at64.insert(c.type);
    if (c.dim == 128) at128.insert(c.type);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(at64, want);
  EXPECT_EQ(at128, want);
}

std::vector<std::string> runnable_types() {
  std::vector<std::string> v;
  for (const auto& t : list_types())
    if (test::runnable_without_calibration(t)) v.push_back(t);
  return v;
}

class BackendOpsType : public ::testing::TestWithParam<std::string> {};

TEST_P(BackendOpsType, CpuLevelsMatchReference) {
  const std::string type = GetParam();
  const auto cases = test::backend_cases([&](const std::string& t) { return t == type; });
  ASSERT_FALSE(cases.empty());
  const bool int8_was = cpu::int8_scores_enabled();
  double worst_exact = 0, worst_int8 = 0;
  std::string worst_exact_case, worst_int8_case;
  size_t runs = 0;
  for (const auto& c : cases) {
    const test::CaseData data = test::make_case_data(c);
    const std::vector<float> ref8 = data.reference(8);  // rows do not depend on G
    for (int G : c.heads) {
      const std::vector<float> ref(ref8.begin(), ref8.begin() + size_t(G) * c.dim);
      for (cpu::Level l : cpu::available_levels())
        for (bool int8 : {false, true}) {
          cpu::force_level(l);
          cpu::set_int8_scores(int8);
          const bool i8 = cpu::int8_scores_active() && (on_code_rows(*data.k) ||
                                                        on_code_rows(*data.v));
          if (int8 && !cpu::int8_scores_active()) continue;  // same as int8 off
          // Threads 1, and 2 with splits where the context is long enough to split.
          for (int threads : {1, 2}) {
            if (threads == 2 && c.ctx < 512) continue;
            const std::vector<float> out = cpu_decode(data, G, threads);
            const double err = test::normalised_error(out, ref);
            const double tol = test::cpu_tolerance(c.type, i8);
            ++runs;
            EXPECT_LE(err, tol) << c.label(G) << " level=" << cpu::level_name(l)
                                << (i8 ? " int8" : "") << " threads=" << threads;
            double& worst = i8 ? worst_int8 : worst_exact;
            if (err > worst) {
              worst = err;
              (i8 ? worst_int8_case : worst_exact_case) =
                  c.label(G) + " " + cpu::level_name(l);
            }
          }
        }
    }
  }
  cpu::reset_level();
  cpu::set_int8_scores(int8_was);
  std::printf("[ info ] %s: %zu cases, %zu runs; worst normalised error: float kernels %.2e (%s)"
              ", 8-bit tables %.2e (%s)\n",
              type.c_str(), cases.size(), runs, worst_exact, worst_exact_case.c_str(), worst_int8,
              worst_int8_case.c_str());
}

INSTANTIATE_TEST_SUITE_P(Registry, BackendOpsType, ::testing::ValuesIn(runnable_types()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& ch : s)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });
