// Cross-backend test, CUDA half (DESIGN.md §7), in the spirit of ggml's test-backend-ops: every
// GPU format × head dims 64/128/256 × 1..8 query heads per KV head × odd sequence lengths (an
// empty sequence, single tokens, page-boundary ± 1, a few hundred), the CUDA cache's decode
// attention against the CPU backend on the same bf16 inputs — the CPU codec of the same name
// encodes the keys and values, and its attention-on-codes path (prepare_query / score /
// accumulate / finish) with a float64 softmax gives the reference. Compared by the normalised
// error ‖gpu − cpu‖ / ‖cpu‖. Outputs are NaN-poisoned before every call; every output must be
// written and finite. Format pairs the GPU does not store at a head dim must be a tq::Error.
// Skipped (reported skipped) without a GPU.
//
// The case generator is this file's own, with the context lengths of tests/backend_cases.h (the
// CPU side's cases): that header asks the registry's traits table (type_traits), which had not
// landed when this was written; once it has, the CUDA cases can come from backend_cases()
// filtered by type_traits(t).gpu.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/half.h"
#include "cuda/tq_cuda.h"
#include "tq/codec.h"

using namespace tq;
using namespace tq::cuda;

namespace {

#define CK(x)                                                                    \
  do {                                                                           \
    const cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess)                                                       \
      throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_)); \
  } while (0)

// Device buffer freed at scope exit.
template <class T>
struct DevBuf {
  T* p = nullptr;
  explicit DevBuf(size_t n) { CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

struct Pair {
  Fmt kf, vf;
};
// Every (K, V) format pair the GPU cache stores (formats.cuh: pair_supported).
const Pair kPairs[] = {{Fmt::kBF16, Fmt::kBF16},     {Fmt::kQ8_0, Fmt::kQ8_0},
                       {Fmt::kQ4_0, Fmt::kQ4_0},     {Fmt::kTurbo2, Fmt::kTurbo2},
                       {Fmt::kTurbo3, Fmt::kTurbo3}, {Fmt::kTurbo4, Fmt::kTurbo4},
                       {Fmt::kTurbo2_5, Fmt::kTurbo2_5}, {Fmt::kTurbo3_5, Fmt::kTurbo3_5},
                       {Fmt::kTurbo3p, Fmt::kTurbo3}, {Fmt::kFp8E4M3, Fmt::kFp8E4M3}};

struct BackendCase {
  Pair pair;
  int D, G, Hkv;
  std::vector<int> lens;  // per sequence (0: an empty sequence, its output rows are zeros)
  DecodeGrid grid;
};

// The contexts of tests/backend_cases.h (1, 7, 33, 257, 1031: odd, across the GPU's 32-token
// and the CPU's 256-token pages), an empty sequence and a few more lengths next to page
// boundaries, grouped into batches and rotated over the cases so that each (format, D) meets
// all of them across G.
std::vector<int> case_lens(int i) {
  static const std::vector<std::vector<int>> sets = {
      {1, 33, 0, 1031}, {7, 257, 31}, {65, 1, 257, 0}, {1031, 7, 2, 97}};
  return sets[size_t(i) % sets.size()];
}

std::vector<BackendCase> all_cases() {
  std::vector<BackendCase> cases;
  int i = 0;
  for (const Pair& pr : kPairs)
    for (int D : {64, 128, 256})
      for (int G = 1; G <= 8; ++G, ++i) {
        // the stream mode forced on every other case (it serves the ring types; for the
        // others, and for an explicit split count, the split grid runs)
        const DecodeGrid grid = i % 2 ? DecodeGrid::kStream : DecodeGrid::kAuto;
        cases.push_back({pr, D, G, 2 + (i % 2), case_lens(i), grid});
      }
  return cases;
}

float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// The CPU backend for one (sequence, KV head): codes of the L tokens, then for each query head
// softmax(q·k̃ / √D) · ṽ through the codec's attention-on-codes path.
struct CpuHead {
  std::vector<uint8_t> kc, vc;
};

struct Result {
  double err = 0;    // ‖gpu − cpu‖ / ‖cpu‖
  double dist = 0;   // ‖cpu − exact‖ / ‖exact‖: the codec's own error (exact = bf16 K/V, double)
  double other = 0;  // the same normalised error with the other decode grid (split ↔ stream)
  double rerun = 0;  // max |gpu − gpu again|, same inputs and grid: a race shows here
  size_t bad = 0;
};

double norm_err(const std::vector<float>& out, const std::vector<double>& ref, size_t* bad) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) {
      if (bad) ++*bad;
      continue;
    }
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

Result run_backend_case(const BackendCase& c, int splits, std::mt19937& rng) {
  const int D = c.D, Hkv = c.Hkv, G = c.G, Hq = Hkv * G, B = int(c.lens.size());
  const int max_len = std::max(1, *std::max_element(c.lens.begin(), c.lens.end()));
  const int max_pages = (max_len + kPageTokens - 1) / kPageTokens;
  const int n_pages = B * max_pages + 2;
  CacheConfig cfg;
  cfg.kfmt = c.pair.kf;
  cfg.vfmt = c.pair.vf;
  cfg.head_dim = D;
  cfg.n_kv_heads = Hkv;
  cfg.n_pages = n_pages;
  GpuCache cache(cfg);
  cache.set_decode_grid(c.grid, 3);
  const auto kcodec = make_codec(fmt_name(c.pair.kf), D);
  const auto vcodec = make_codec(fmt_name(c.pair.vf), D);
  EXPECT_EQ(kcodec->block_tokens(), 1);
  EXPECT_EQ(vcodec->block_tokens(), 1);

  // shuffled page table
  std::vector<int> perm(n_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int> bt(size_t(B) * max_pages);
  for (size_t i = 0; i < bt.size(); ++i) bt[i] = perm[i];

  // inputs: bf16 values, keys with per-channel scales and an offset (outlier channels)
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.3f, 3.0f);
  std::vector<float> chan(D);
  for (auto& v : chan) v = ud(rng);
  std::vector<std::vector<float>> K(B), V(B);  // [len][Hkv][D]
  for (int b = 0; b < B; ++b) {
    K[b].resize(size_t(c.lens[b]) * Hkv * D);
    V[b].resize(K[b].size());
    for (size_t i = 0; i < K[b].size(); ++i) {
      K[b][i] = bf16_round(nd(rng) * chan[i % D] + 0.5f);
      V[b][i] = bf16_round(nd(rng));
    }
  }

  DevBuf<int> d_bt(bt.size()), d_start(B), d_lens(B);
  CK(cudaMemcpy(d_bt.p, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_lens.p, c.lens.data(), B * 4, cudaMemcpyHostToDevice));
  const size_t maxv = size_t(max_len) * Hkv * D;
  DevBuf<uint16_t> d_k(maxv), d_v(maxv);
  // two appends per sequence, the second starting mid-page
  for (int b = 0; b < B; ++b) {
    const int L = c.lens[b], first = std::max(1, L / 2 + 1);
    for (int run = 0; run < 2; ++run) {
      const int s = run == 0 ? 0 : first, n = run == 0 ? std::min(first, L) : L - first;
      if (n <= 0) continue;
      std::vector<uint16_t> hk(size_t(n) * Hkv * D), hv(hk.size());
      for (size_t i = 0; i < hk.size(); ++i) {
        hk[i] = f32_to_bf16(K[b][size_t(s) * Hkv * D + i]);
        hv[i] = f32_to_bf16(V[b][size_t(s) * Hkv * D + i]);
      }
      CK(cudaMemcpy(d_k.p, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_v.p, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_start.p + b, &s, 4, cudaMemcpyHostToDevice));
      cache.append(d_k.p, d_v.p, 1, n, d_bt.p + size_t(b) * max_pages, max_pages, d_start.p + b);
    }
  }

  // queries; the CPU backend's output
  std::vector<float> q(size_t(B) * Hq * D);
  for (auto& v : q) v = nd(rng);
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> ref(q.size(), 0.0), exact(q.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hkv; ++h) {
      const int L = c.lens[b];
      if (L == 0) continue;
      std::vector<float> xk(size_t(L) * D), xv(xk.size());
      for (int t = 0; t < L; ++t)
        for (int j = 0; j < D; ++j) {
          xk[size_t(t) * D + j] = K[b][(size_t(t) * Hkv + h) * D + j];
          xv[size_t(t) * D + j] = V[b][(size_t(t) * Hkv + h) * D + j];
        }
      std::vector<uint8_t> kc(kcodec->block_bytes() * L), vc(vcodec->block_bytes() * L);
      kcodec->encode(xk.data(), L, kc.data());
      vcodec->encode(xv.data(), L, vc.data());
      for (int g = 0; g < G; ++g) {
        const size_t row = size_t(b) * Hq + h * G + g;
        const auto qs = kcodec->prepare_query(&q[row * D]);
        std::vector<float> s(L), w(L);
        kcodec->score(*qs, kc.data(), L, s.data());
        double mx = -1e300, l = 0;
        for (int t = 0; t < L; ++t) mx = std::max(mx, double(s[t]) * scale);
        std::vector<double> e(L);
        for (int t = 0; t < L; ++t) l += (e[t] = std::exp(double(s[t]) * scale - mx));
        for (int t = 0; t < L; ++t) w[t] = float(e[t] / l);
        std::vector<float> acc(vcodec->acc_size(), 0.f), o(D);
        vcodec->accumulate(vc.data(), L, w.data(), acc.data());
        vcodec->finish(acc.data(), o.data());
        for (int j = 0; j < D; ++j) ref[row * D + j] = o[j];
        // exact attention over the bf16 inputs (the codec's own error, for scale)
        mx = -1e300;
        for (int t = 0; t < L; ++t) {
          double a = 0;
          for (int j = 0; j < D; ++j) a += double(q[row * D + j]) * xk[size_t(t) * D + j];
          e[t] = a * scale;
          mx = std::max(mx, e[t]);
        }
        l = 0;
        for (int t = 0; t < L; ++t) l += (e[t] = std::exp(e[t] - mx));
        for (int j = 0; j < D; ++j) {
          double a = 0;
          for (int t = 0; t < L; ++t) a += e[t] * xv[size_t(t) * D + j];
          exact[row * D + j] = a / l;
        }
      }
    }

  DevBuf<float> d_q(q.size()), d_out(q.size());
  CK(cudaMemcpy(d_q.p, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
  auto run = [&](std::vector<float>& out) {
    CK(cudaMemset(d_out.p, 0xFF, q.size() * 4));  // NaN poison
    cache.decode(d_q.p, d_out.p, B, Hq, d_bt.p, max_pages, d_lens.p, max_len, float(scale),
                 splits);
    CK(cudaDeviceSynchronize());
    out.resize(q.size());
    CK(cudaMemcpy(out.data(), d_out.p, out.size() * 4, cudaMemcpyDeviceToHost));
  };
  std::vector<float> out, again, other;
  run(out);
  run(again);
  cache.set_decode_grid(c.grid == DecodeGrid::kStream ? DecodeGrid::kSplit : DecodeGrid::kStream,
                        3);
  run(other);
  Result r;
  r.err = norm_err(out, ref, &r.bad);
  r.other = norm_err(other, ref, &r.bad);
  std::vector<float> ref_f(ref.begin(), ref.end());
  r.dist = norm_err(ref_f, exact, nullptr);
  for (size_t i = 0; i < out.size(); ++i)
    if (std::isfinite(out[i]) && std::isfinite(again[i]))
      r.rerun = std::max(r.rerun, double(std::fabs(out[i] - again[i])));
  return r;
}

std::string lens_str(const std::vector<int>& lens) {
  std::string s;
  for (int l : lens) s += (s.empty() ? "" : ",") + std::to_string(l);
  return s;
}

class CudaBackendOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

}  // namespace

// Normalised error per format (automatic splits and an explicit split count of 3). Measured on
// the H200 (2026-12-03, these cases): bf16 ≤ 3.0e-3 and q8_0 ≤ 4.9e-4 (fp16 queries and
// probabilities); the turbo formats ≤ 1.72e-2 whatever their width (their fp16 score arithmetic,
// turbo3's one-byte tables; 3-11 % of the codec's own error, which the test prints), the same
// with the split and the stream grid, bit-identical on a re-run; q4_0 ≤ 9e-3 but 2.7e-2 in one
// case (D = 64, G = 1: a rounding tie quantized the other way). A wrong layout, page table or
// rotation gives errors of order 1. TQ_CUDA_CASE_STRIDE=n runs every n-th case only (for the
// slow compute-sanitizer runs); TQ_CUDA_CASE_LOG=1 prints every case.
//
// fp8_e4m3: 5e-3, as q8_0. Its GPU codes and scales are the CPU codec's bytes (the same IEEE
// divisions and RNE saturating conversion), keys are decoded exactly and scaled per token in
// fp32, so the error is the fp16 arithmetic q8_0 has too (fp16 queries, fp16 probabilities,
// values s·e4m3 rounded to fp16: ~5e-4 relative each). One code off by one E4M3 step is 6-12 %
// of that element, so a wrong byte order, scale slot or conversion is far above it.
double tolerance(Fmt f) {
  switch (f) {
    case Fmt::kBF16:
    case Fmt::kQ8_0:
    case Fmt::kFp8E4M3: return 5e-3;
    case Fmt::kQ4_0: return 4e-2;
    default: return 2.5e-2;
  }
}

TEST_F(CudaBackendOps, EveryFormatHeadDimAndGroupAgainstTheCpu) {
  std::mt19937 rng(20261203);
  std::map<std::string, double> worst;  // per "kf/vf D"
  int ran = 0, refused = 0, index = 0;
  const char* stride_env = std::getenv("TQ_CUDA_CASE_STRIDE");
  const int stride = stride_env ? std::max(1, std::atoi(stride_env)) : 1;
  for (const BackendCase& c : all_cases()) {
    if (index++ % stride != 0) continue;
    const std::string key = std::string(fmt_name(c.pair.kf)) + "/" + fmt_name(c.pair.vf) +
                            " D=" + std::to_string(c.D);
    if (!pair_supported(c.pair.kf, c.pair.vf, c.D)) {
      CacheConfig cfg;
      cfg.kfmt = c.pair.kf;
      cfg.vfmt = c.pair.vf;
      cfg.head_dim = c.D;
      cfg.n_pages = 1;
      EXPECT_THROW(GpuCache{cfg}, tq::Error) << key;
      ++refused;
      continue;
    }
    for (int splits : {0, 3}) {
      const Result r = run_backend_case(c, splits, rng);
      EXPECT_EQ(r.bad, 0u) << key << " G=" << c.G << " splits=" << splits << ": non-finite";
      const double tol = std::max(tolerance(c.pair.kf), tolerance(c.pair.vf));
      EXPECT_LT(r.err, tol) << key << " G=" << c.G << " splits=" << splits;
      EXPECT_LT(r.other, tol) << key << " G=" << c.G << " splits=" << splits << " (other grid)";
      EXPECT_EQ(r.rerun, 0.0) << key << " G=" << c.G << ": a re-run differs (a race?)";
      if (r.err > 5e-3 || std::getenv("TQ_CUDA_CASE_LOG"))
        std::printf("  case %-22s G=%d grid=%s splits=%d lens=%s: err %.2e (other grid %.2e), "
                    "codec's own error %.2e, rerun max diff %.1e\n",
                    key.c_str(), c.G, c.grid == DecodeGrid::kStream ? "stream" : "auto", splits,
                    lens_str(c.lens).c_str(), r.err, r.other, r.dist, r.rerun);
      worst[key] = std::max(worst[key], r.err);
      ++ran;
    }
  }
  for (const auto& [k, e] : worst) std::printf("  %-22s max normalised error %.2e\n", k.c_str(), e);
  std::printf("  %d GPU decodes compared, %d unsupported (format, head dim) cases refused\n", ran,
              refused);
  if (stride == 1) EXPECT_EQ(refused, 2 * 8);  // turbo2.5 and turbo3.5 at D = 64, each G
}
