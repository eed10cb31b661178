// GPU append + decode attention against the CPU codecs (DESIGN.md §7). Skipped without a GPU
// (the launch-planning tests at the end need none).
// Each case: random bf16 K/V appended on the GPU in two runs per sequence (the second starts
// mid-page), odd sequence lengths, shuffled page table; the CPU reference attends (in double)
// over the CPU codec's decode of the same vectors (turbo*) or over ggml-style q8_0/q4_0
// dequantization (fp8_e4m3: the CPU codec's decode); outputs are poisoned with NaN before every
// run. Also: the GPU codes equal the CPU codec's codes (turbo2/3/4 except for rare boundary
// ties; fp8_e4m3 byte for byte, scales included).
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "codecs/fp8.h"
#include "codecs/turbo.h"
#include "core/half.h"
#include "cuda/launch_plan.h"
#include "cuda/tq_cuda.h"
#include "tq/codec.h"

using namespace tq;
using namespace tq::cuda;

namespace {

#define CK(x)                                                                         \
  do {                                                                                \
    const cudaError_t e_ = (x);                                                       \
    if (e_ != cudaSuccess)                                                            \
      throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_));      \
  } while (0)

bool have_gpu() { return device_available(); }

// ggml reference quantizers (as quantize_row_q8_0_ref / quantize_row_q4_0_ref), one block.
void q8_block(const float* x, int* q, float* d_out) {
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < 32; ++j) q[j] = int(std::roundf(x[j] * id));
  *d_out = d;
}
void q4_block(const float* x, int* q, float* d_out) {
  float amax = 0, mx = 0;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      mx = x[j];
    }
  const float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < 32; ++j) q[j] = std::min(15, int(int8_t(x[j] * id + 8.5f)));
  *d_out = d;
}

// CPU "stored" vectors for a format: what the GPU cache must hold, decoded.
std::vector<float> cpu_decode(Fmt f, bool is_v, int D, const std::vector<float>& x, size_t n) {
  std::vector<float> y(x.size());
  if (f == Fmt::kBF16) return x;  // inputs are already bf16 values
  if (f == Fmt::kQ8_0 || f == Fmt::kQ4_0) {
    int q[32];
    float d;
    for (size_t t = 0; t < n; ++t)
      for (int b = 0; b < D / 32; ++b) {
        const float* xb = &x[t * D + b * 32];
        if (f == Fmt::kQ8_0) q8_block(xb, q, &d);
        else q4_block(xb, q, &d);
        const float d16 = round_f16(d);
        for (int j = 0; j < 32; ++j)
          y[t * D + b * 32 + j] = d16 * float(f == Fmt::kQ8_0 ? q[j] : q[j] - 8);
      }
    return y;
  }
  const char* name = fmt_name(f);
  auto codec = make_codec(name, D);
  std::vector<uint8_t> codes(codec->block_bytes() * n);
  codec->encode(x.data(), n, codes.data());
  codec->decode(codes.data(), n, y.data());
  return y;
}

float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

struct Case {
  Fmt kf, vf;
  int D, Hkv, G;
  std::vector<int> lens;  // per sequence
  double tol;
  bool exact = false;     // turbo3: exact two-byte codebook tables
  DecodeGrid grid = DecodeGrid::kAuto;
  int stream_ctas = 0;    // DecodeGrid::kStream: CTAs (0: one per resident slot)
};

double run_case(const Case& c, int splits, bool check_codes, std::mt19937& rng) {
  const int D = c.D, Hkv = c.Hkv, Hq = c.Hkv * c.G, B = int(c.lens.size());
  int max_len = *std::max_element(c.lens.begin(), c.lens.end());
  const int max_pages = (max_len + 31) / 32;
  const int n_pages = B * max_pages + 3;
  CacheConfig cfg;
  cfg.kfmt = c.kf;
  cfg.vfmt = c.vf;
  cfg.head_dim = D;
  cfg.n_kv_heads = Hkv;
  cfg.n_pages = n_pages;
  cfg.exact_codebook = c.exact;
  GpuCache cache(cfg);
  cache.set_decode_grid(c.grid, c.stream_ctas);

  // shuffled page table
  std::vector<int> perm(n_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int> bt(size_t(B) * max_pages);
  for (size_t i = 0; i < bt.size(); ++i) bt[i] = perm[i];

  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.3f, 3.0f);
  // K/V per sequence [len][Hkv][D], bf16 values; per-channel scales make outliers
  std::vector<float> chan(D);
  for (auto& v : chan) v = ud(rng);
  std::vector<std::vector<float>> K(B), V(B);
  for (int b = 0; b < B; ++b) {
    K[b].resize(size_t(c.lens[b]) * Hkv * D);
    V[b].resize(K[b].size());
    for (size_t i = 0; i < K[b].size(); ++i) {
      K[b][i] = bf16_round(nd(rng) * chan[i % D] + 0.5f);
      V[b][i] = bf16_round(nd(rng));
    }
    if (c.lens[b] > 5)  // one all-zero key and value vector
      for (int j = 0; j < D; ++j) K[b][size_t(5 * Hkv) * D + j] = V[b][size_t(5 * Hkv) * D + j] = 0;
  }
  int *d_bt, *d_start, *d_lens;
  CK(cudaMalloc(&d_bt, bt.size() * 4));
  CK(cudaMemcpy(d_bt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&d_start, B * 4));
  CK(cudaMalloc(&d_lens, B * 4));
  CK(cudaMemcpy(d_lens, c.lens.data(), B * 4, cudaMemcpyHostToDevice));
  uint16_t *d_k, *d_v;
  const size_t maxv = size_t(max_len) * Hkv * D;
  CK(cudaMalloc(&d_k, maxv * 2));
  CK(cudaMalloc(&d_v, maxv * 2));
  for (int b = 0; b < B; ++b) {
    const int L = c.lens[b];
    if (L == 0) continue;  // an empty sequence: its output rows must be zeros
    const int first = std::max(1, L * 3 / 5);  // second run starts mid-page
    for (int run = 0; run < 2; ++run) {
      const int s = run == 0 ? 0 : first, n = run == 0 ? first : L - first;
      if (n <= 0) continue;
      std::vector<uint16_t> hk(size_t(n) * Hkv * D), hv(hk.size());
      for (size_t i = 0; i < hk.size(); ++i) {
        hk[i] = f32_to_bf16(K[b][size_t(s) * Hkv * D + i]);
        hv[i] = f32_to_bf16(V[b][size_t(s) * Hkv * D + i]);
      }
      CK(cudaMemcpy(d_k, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_v, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_start + b, &s, 4, cudaMemcpyHostToDevice));
      cache.append(d_k, d_v, 1, n, d_bt + size_t(b) * max_pages, max_pages, d_start + b);
      CK(cudaGetLastError());
    }
  }
  CK(cudaDeviceSynchronize());

  // CPU "stored" vectors, per (b, kvh)
  std::vector<std::vector<float>> Kq(B * Hkv), Vq(B * Hkv);
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
      Kq[b * Hkv + h] = cpu_decode(c.kf, false, D, xk, L);
      Vq[b * Hkv + h] = cpu_decode(c.vf, true, D, xv, L);
      if (check_codes && c.kf == Fmt::kFp8E4M3) {
        // GPU bytes and fp16 scales vs the CPU codec's token blocks [s][D codes]: identical
        auto codec = make_codec(fmt_name(c.kf), D);
        std::vector<uint8_t> blk(codec->block_bytes());
        size_t mism = 0;
        for (int t = 0; t < L; ++t) {
          const int page = bt[size_t(b) * max_pages + t / 32];
          for (int kv = 0; kv < 2; ++kv) {
            const auto tv = cache.read_tile(page, h, kv == 1);
            codec->encode((kv ? xv : xk).data() + size_t(t) * D, 1, blk.data());
            uint16_t s16;
            std::memcpy(&s16, blk.data(), 2);
            mism += tv.scalars[0][t % 32] != s16;
            for (int j = 0; j < D; ++j)
              mism += tv.codes[0][size_t(t % 32) * D + j] != int(blk[2 + j]);
          }
        }
        EXPECT_EQ(mism, 0u) << "fp8_e4m3 bytes differ from the CPU codec's";
      }
      if (check_codes && (c.kf == Fmt::kTurbo2 || c.kf == Fmt::kTurbo3 || c.kf == Fmt::kTurbo4)) {
        // GPU codes vs the CPU codec's indices (norms within one fp16 step)
        auto codec = make_codec(fmt_name(c.kf), D);
        auto* mse = dynamic_cast<TurboMseCodec*>(codec.get());
        EXPECT_NE(mse, nullptr);
        if (!mse) continue;
        size_t mism = 0, total = 0;
        std::vector<uint8_t> idx(D);
        for (int t = 0; t < L; ++t) {
          const int page = bt[size_t(b) * max_pages + t / 32];
          for (int kv = 0; kv < 2; ++kv) {
            const auto tv = cache.read_tile(page, h, kv == 1);
            const float n = mse->encode_one((kv ? xv : xk).data() + size_t(t) * D, idx.data());
            const float gn = f16_to_f32(tv.scalars[0][t % 32]);
            EXPECT_NEAR(gn, n, std::fabs(n) * 2e-3 + 1e-6) << "norm t=" << t;
            for (int j = 0; j < D; ++j) {
              mism += tv.codes[0][size_t(t % 32) * D + j] != idx[j];
              ++total;
            }
          }
        }
        EXPECT_LE(double(mism), 1e-3 * double(total) + 2) << "code mismatches " << mism;
      }
    }

  // queries, reference attention (double)
  std::vector<float> q(size_t(B) * Hq * D);
  for (auto& v : q) v = nd(rng);
  const float scale = 1.0f / std::sqrt(float(D));
  std::vector<double> ref(q.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int qh = 0; qh < Hq; ++qh) {
      const int h = qh / c.G, L = c.lens[b];
      if (L == 0) continue;  // ref stays 0
      const float* qq = &q[(size_t(b) * Hq + qh) * D];
      const auto& kk = Kq[b * Hkv + h];
      const auto& vv = Vq[b * Hkv + h];
      std::vector<double> s(L);
      double mx = -1e300;
      for (int t = 0; t < L; ++t) {
        double a = 0;
        for (int j = 0; j < D; ++j) a += double(qq[j]) * kk[size_t(t) * D + j];
        s[t] = a * scale;
        mx = std::max(mx, s[t]);
      }
      double l = 0;
      for (int t = 0; t < L; ++t) l += (s[t] = std::exp(s[t] - mx));
      for (int j = 0; j < D; ++j) {
        double o = 0;
        for (int t = 0; t < L; ++t) o += s[t] * vv[size_t(t) * D + j];
        ref[(size_t(b) * Hq + qh) * D + j] = o / l;
      }
    }
  float *d_q, *d_out;
  CK(cudaMalloc(&d_q, q.size() * 4));
  CK(cudaMalloc(&d_out, q.size() * 4));
  CK(cudaMemcpy(d_q, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(d_out, 0xFF, q.size() * 4));  // NaN poison
  cache.decode(d_q, d_out, B, Hq, d_bt, max_pages, d_lens, max_len, scale, splits);
  CK(cudaDeviceSynchronize());
  std::vector<float> out(q.size());
  CK(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  size_t bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) ++bad;
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  EXPECT_EQ(bad, 0u) << "non-finite outputs";
  const double err = std::sqrt(num / std::max(den, 1e-300));
  EXPECT_LT(err, c.tol) << fmt_name(c.kf) << "/" << fmt_name(c.vf) << " D=" << D
                        << " splits=" << splits;
  cudaFree(d_bt);
  cudaFree(d_start);
  cudaFree(d_lens);
  cudaFree(d_k);
  cudaFree(d_v);
  cudaFree(d_q);
  cudaFree(d_out);
  return err;
}

class CudaAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

struct Named {
  Fmt kf, vf;
  int D;
  double tol;
};

void run_all(const std::vector<Named>& list, int G, std::vector<int> lens, bool codes) {
  std::mt19937 rng(12345);
  for (const auto& n : list) {
    Case c{n.kf, n.vf, n.D, 2, G, lens, n.tol};
    for (int splits : {0, 1, 3}) {
      const double err = run_case(c, splits, codes && splits == 0, rng);
      std::printf("  %-9s/%-8s D=%-3d G=%d splits=%d  rel.err %.2e\n", fmt_name(n.kf),
                  fmt_name(n.vf), n.D, G, splits, err);
    }
  }
}

}  // namespace

TEST_F(CudaAttention, AllTypesHeadDim128) {
  run_all({{Fmt::kBF16, Fmt::kBF16, 128, 1e-2},
           {Fmt::kQ8_0, Fmt::kQ8_0, 128, 1e-2},
           {Fmt::kQ4_0, Fmt::kQ4_0, 128, 1e-2},
           {Fmt::kTurbo2, Fmt::kTurbo2, 128, 1e-2},
           {Fmt::kTurbo3, Fmt::kTurbo3, 128, 1e-2},
           {Fmt::kTurbo4, Fmt::kTurbo4, 128, 1e-2},
           {Fmt::kTurbo2_5, Fmt::kTurbo2_5, 128, 1e-2},
           {Fmt::kTurbo3_5, Fmt::kTurbo3_5, 128, 1e-2},
           {Fmt::kTurbo3p, Fmt::kTurbo3, 128, 1e-2},
           {Fmt::kFp8E4M3, Fmt::kFp8E4M3, 128, 1e-2}},
          4, {1, 77, 300, 33}, true);
}

TEST_F(CudaAttention, HeadDims64And256) {
  run_all({{Fmt::kBF16, Fmt::kBF16, 64, 1e-2},
           {Fmt::kQ8_0, Fmt::kQ8_0, 64, 1e-2},
           {Fmt::kFp8E4M3, Fmt::kFp8E4M3, 64, 1e-2},
           {Fmt::kTurbo3, Fmt::kTurbo3, 64, 1e-2},
           {Fmt::kTurbo4, Fmt::kTurbo4, 64, 1e-2},
           {Fmt::kTurbo3p, Fmt::kTurbo3, 64, 1e-2},
           {Fmt::kBF16, Fmt::kBF16, 256, 1e-2},
           {Fmt::kQ4_0, Fmt::kQ4_0, 256, 1e-2},
           {Fmt::kFp8E4M3, Fmt::kFp8E4M3, 256, 1e-2},
           {Fmt::kTurbo2, Fmt::kTurbo2, 256, 1e-2},
           {Fmt::kTurbo3, Fmt::kTurbo3, 256, 1e-2},
           {Fmt::kTurbo3_5, Fmt::kTurbo3_5, 256, 1e-2}},
          3, {65, 129, 2}, true);
}

TEST_F(CudaAttention, LongContextManySplits) {
  run_all({{Fmt::kTurbo3, Fmt::kTurbo3, 128, 1e-2}, {Fmt::kBF16, Fmt::kBF16, 128, 1e-2}}, 8, {4099, 1500},
          false);
}

// Stream mode (forced: these cases are small enough for the split grid): 1 and 3 CTAs (4 / 12
// warps, so a warp's page range spans several segments and a segment several warps, merged by
// the last one) and one CTA per resident slot, on the same data as the split grid; an empty
// sequence (zero rows) among odd lengths. Then turbo3 variants and the exact two-byte tables.
TEST_F(CudaAttention, StreamModePiecesAndTables) {
  const std::vector<int> lens = {1, 300, 0, 33, 1025, 64};
  const Named types[] = {{Fmt::kTurbo3, Fmt::kTurbo3, 128, 1e-2},
                         {Fmt::kTurbo2, Fmt::kTurbo2, 128, 1e-2},
                         {Fmt::kQ4_0, Fmt::kQ4_0, 128, 2e-2},
                         {Fmt::kTurbo3p, Fmt::kTurbo3, 128, 1e-2},
                         {Fmt::kTurbo3, Fmt::kTurbo3, 64, 1e-2}};
  for (const auto& n : types) {
    Case c{n.kf, n.vf, n.D, 3, 4, lens, n.tol};
    // the same data for every grid (the split grid as the comparison)
    double e_split = 0;
    {
      std::mt19937 rng(777);
      e_split = run_case(c, 1, false, rng);
    }
    for (int ctas : {1, 3, 0}) {  // 0: one CTA per resident slot
      c.grid = DecodeGrid::kStream;
      c.stream_ctas = ctas;
      std::mt19937 rng(777);
      const double err = run_case(c, 0, false, rng);
      std::printf("  %-9s/%-8s D=%-3d stream ctas=%d  rel.err %.2e (split grid %.2e)\n",
                  fmt_name(n.kf), fmt_name(n.vf), n.D, ctas, err, e_split);
    }
  }
  // turbo3 on the split grid with the automatic split count (the stream mode's options)
  {
    Case c{Fmt::kTurbo3, Fmt::kTurbo3, 128, 3, 4, lens, 1e-2};
    c.grid = DecodeGrid::kSplit;
    std::mt19937 rng(777);
    const double err = run_case(c, 0, false, rng);
    std::printf("  turbo3 split grid, automatic splits  rel.err %.2e\n", err);
  }
  // turbo3 keys and values with the exact two-byte tables (the default is one byte), both grids
  for (const auto& n : {Named{Fmt::kTurbo3, Fmt::kTurbo3, 128, 1e-2},
                        Named{Fmt::kTurbo3p, Fmt::kTurbo3, 128, 1e-2}})
    for (int splits : {0, 3}) {
      Case c{n.kf, n.vf, n.D, 3, 4, lens, n.tol, true, DecodeGrid::kStream};
      std::mt19937 rng(777);
      const double err = run_case(c, splits, false, rng);
      std::printf("  %-9s/%-8s D=%-3d exact tables splits=%d  rel.err %.2e\n", fmt_name(n.kf),
                  fmt_name(n.vf), n.D, splits, err);
    }
}

// Prefill: T new tokens (already appended) attend causally to the cache.
double run_prefill(Fmt kf, Fmt vf, int D, int L, int T, std::mt19937& rng) {
  const int Hkv = 2, G = 4, Hq = Hkv * G;
  const int max_pages = (L + 31) / 32;
  CacheConfig cfg;
  cfg.kfmt = kf;
  cfg.vfmt = vf;
  cfg.head_dim = D;
  cfg.n_kv_heads = Hkv;
  cfg.n_pages = max_pages + 2;
  GpuCache cache(cfg);
  std::vector<int> bt(max_pages);
  for (int i = 0; i < max_pages; ++i) bt[i] = max_pages + 1 - i;  // reversed pages
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> K(size_t(L) * Hkv * D), V(K.size());
  for (size_t i = 0; i < K.size(); ++i) {
    K[i] = bf16_round(nd(rng) + 0.3f);
    V[i] = bf16_round(nd(rng));
  }
  std::vector<uint16_t> hk(K.size()), hv(V.size());
  for (size_t i = 0; i < K.size(); ++i) {
    hk[i] = f32_to_bf16(K[i]);
    hv[i] = f32_to_bf16(V[i]);
  }
  int *d_bt, *d_start;
  uint16_t *d_k, *d_v;
  CK(cudaMalloc(&d_bt, max_pages * 4));
  CK(cudaMemcpy(d_bt, bt.data(), max_pages * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&d_start, 4));
  CK(cudaMemset(d_start, 0, 4));
  CK(cudaMalloc(&d_k, hk.size() * 2));
  CK(cudaMalloc(&d_v, hv.size() * 2));
  CK(cudaMemcpy(d_k, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_v, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice));
  cache.append(d_k, d_v, 1, L, d_bt, max_pages, d_start);
  std::vector<std::vector<float>> Kq(Hkv), Vq(Hkv);
  for (int h = 0; h < Hkv; ++h) {
    std::vector<float> xk(size_t(L) * D), xv(xk.size());
    for (int t = 0; t < L; ++t)
      for (int j = 0; j < D; ++j) {
        xk[size_t(t) * D + j] = K[(size_t(t) * Hkv + h) * D + j];
        xv[size_t(t) * D + j] = V[(size_t(t) * Hkv + h) * D + j];
      }
    Kq[h] = cpu_decode(kf, false, D, xk, L);
    Vq[h] = cpu_decode(vf, true, D, xv, L);
  }
  const int pos0 = L - T;
  std::vector<float> q(size_t(T) * Hq * D);
  for (auto& v : q) v = nd(rng);
  const float scale = 1.0f / std::sqrt(float(D));
  std::vector<double> ref(q.size(), 0.0);
  for (int i = 0; i < T; ++i)
    for (int qh = 0; qh < Hq; ++qh) {
      const int h = qh / G, n = pos0 + i + 1;
      const float* qq = &q[(size_t(i) * Hq + qh) * D];
      std::vector<double> sc(n);
      double mx = -1e300, l = 0;
      for (int t = 0; t < n; ++t) {
        double a = 0;
        for (int j = 0; j < D; ++j) a += double(qq[j]) * Kq[h][size_t(t) * D + j];
        mx = std::max(mx, sc[t] = a * scale);
      }
      for (int t = 0; t < n; ++t) l += (sc[t] = std::exp(sc[t] - mx));
      for (int j = 0; j < D; ++j) {
        double o = 0;
        for (int t = 0; t < n; ++t) o += sc[t] * Vq[h][size_t(t) * D + j];
        ref[(size_t(i) * Hq + qh) * D + j] = o / l;
      }
    }
  float *d_q, *d_out;
  CK(cudaMalloc(&d_q, q.size() * 4));
  CK(cudaMalloc(&d_out, q.size() * 4));
  CK(cudaMemcpy(d_q, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(d_out, 0xFF, q.size() * 4));
  cache.prefill(d_q, d_out, T, Hq, d_bt, max_pages, pos0, scale);
  CK(cudaDeviceSynchronize());
  std::vector<float> out(q.size());
  CK(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  size_t bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    bad += !std::isfinite(out[i]);
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  EXPECT_EQ(bad, 0u);
  for (void* ptr : {(void*)d_bt, (void*)d_start, (void*)d_k, (void*)d_v, (void*)d_q, (void*)d_out})
    cudaFree(ptr);
  return std::sqrt(num / std::max(den, 1e-300));
}

TEST_F(CudaAttention, PrefillCausal) {
  std::mt19937 rng(777);
  for (Fmt f : {Fmt::kTurbo3, Fmt::kBF16, Fmt::kQ4_0, Fmt::kTurbo2_5, Fmt::kFp8E4M3}) {
    const double err = run_prefill(f, f, 128, 151, 37, rng);
    std::printf("  prefill %-8s D=128 L=151 T=37  rel.err %.2e\n", fmt_name(f), err);
    EXPECT_LT(err, 1e-2) << fmt_name(f);
  }
}

TEST(CudaCache, BadConfigIsAnError) {
  CacheConfig cfg;
  cfg.head_dim = 96;
  cfg.n_pages = 1;
  EXPECT_THROW(GpuCache{cfg}, tq::Error);
  cfg.head_dim = 128;
  cfg.kfmt = cfg.vfmt = Fmt::kNone;
  EXPECT_THROW(GpuCache{cfg}, tq::Error);
  cfg.kfmt = Fmt::kTurbo3;
  cfg.vfmt = Fmt::kTurbo3p;
  EXPECT_THROW(GpuCache{cfg}, tq::Error);
  EXPECT_THROW(parse_fmt("turbo9"), tq::Error);
  EXPECT_EQ(parse_fmt("turbo3"), Fmt::kTurbo3);
  EXPECT_NEAR(fmt_bpv(Fmt::kTurbo3, 128), 3.125, 1e-12);
  EXPECT_NEAR(fmt_bpv(Fmt::kQ8_0, 128), 8.5, 1e-12);
  EXPECT_EQ(parse_fmt("fp8_e4m3"), Fmt::kFp8E4M3);  // through the registry's traits
  EXPECT_STREQ(fmt_name(Fmt::kFp8E4M3), "fp8_e4m3");
  // 8 bits + one fp16 scale per token: 8 + 16/D, the CPU codec's block_bytes (D + 2) per token
  for (int D : {64, 128, 256}) {
    EXPECT_NEAR(fmt_bpv(Fmt::kFp8E4M3, D), 8.0 + 16.0 / D, 1e-12);
    EXPECT_EQ(size_t(tile_bytes(Fmt::kFp8E4M3, D)), size_t(kPageTokens) *
                                                        make_codec("fp8_e4m3", D)->block_bytes());
  }
  EXPECT_NEAR(fmt_bpv(Fmt::kQ4_0, 128), 4.5, 1e-12);
  EXPECT_NEAR(fmt_bpv(Fmt::kTurbo2_5, 128), 2.5, 1e-12);
}

// The fp8_e4m3 conversions of the GPU format against codecs/fp8.h (host arithmetic only: no
// GPU needed). Decode: the software path's bit move (e4m3x2_to_f16x2_div256) × 2^8 gives every
// non-NaN code's value exactly (the sm_89+ hardware conversion is exact by definition, the
// device test compares its results). Encode: cuda_fp8.h's __nv_cvt_float_to_fp8 (SATFINITE,
// E4M3), the append's conversion, gives f32_to_e4m3fn_sat's byte on its software path (the
// compute_80 PTX one) for every E4M3 value, the midpoints between neighbours (ties to even),
// values just off the midpoints, subnormals, the saturation range and random floats.
TEST(CudaFp8, ConversionsMatchTheCpuCodec) {
  for (uint32_t b = 0; b < 256; ++b) {
    if ((b & 0x7F) == 0x7F) continue;  // NaN
    for (int hi = 0; hi < 2; ++hi) {
      const uint32_t h2 = e4m3x2_to_f16x2_div256(hi ? b << 8 : b);
      const uint16_t h = uint16_t(hi ? h2 >> 16 : h2 & 0xFFFF);
      EXPECT_EQ(uint16_t(hi ? h2 & 0xFFFF : h2 >> 16), 0) << b;  // the other half: +0
      EXPECT_EQ(f16_to_f32(h) * 256.0f, e4m3fn_to_f32(uint8_t(b))) << "code " << b;
    }
  }
  std::vector<float> xs = {0.f, -0.f, 448.f, -448.f, 449.f, 463.9f, 464.f, 500.f, 1e6f, -1e6f,
                           0x1p-9f, 0x1p-10f, 0x1.8p-10f, 0x1p-11f, 1e-30f};
  for (int b = 0; b < 0x7E; ++b) {
    const float lo = e4m3fn_to_f32(uint8_t(b)), hi = e4m3fn_to_f32(uint8_t(b + 1));
    const float mid = 0.5f * (lo + hi);
    for (float x : {lo, mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  std::mt19937 rng(8);
  std::normal_distribution<float> nd(0.f, 100.f);
  for (int i = 0; i < 20000; ++i) xs.push_back(nd(rng));
  size_t mism = 0;
  for (float x : xs) {
    const uint8_t g = uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
    const uint8_t c = f32_to_e4m3fn_sat(x);
    if (g != c && ++mism < 10) ADD_FAILURE() << "x=" << x << " gpu " << int(g) << " cpu " << int(c);
  }
  EXPECT_EQ(mism, 0u);
}

// Launch planning (host arithmetic only: no GPU needed). Occupancy and warps as the H200's
// turbo3 kernels report them: stream mode 3 CTAs/SM, split grid 2, 4 warps each.
namespace {
DecodeKernelInfo h200_info(bool stream) { return {stream ? 3 : 2, 4}; }
DecodePlanInput t3_input(int B, int ctx) {
  DecodePlanInput in;
  in.B = B;
  in.Hq = 32;
  in.Hkv = 8;
  in.D = 128;
  in.pages = (ctx + kPageTokens - 1) / kPageTokens;
  in.stream_eligible = true;
  in.sms = 132;
  return in;
}
}  // namespace

TEST(CudaLaunchPlan, StreamModeOnlyForLargeCalls) {
  // B = 32 × 8 heads × 1024 pages ≥ 32 pages × 132 SMs × 3 CTAs × 4 warps: stream mode,
  // one CTA per resident slot, one piece per segment and warp at most
  const DecodePlan big = plan_decode(t3_input(32, 32768), h200_info);
  EXPECT_TRUE(big.stream);
  EXPECT_EQ(big.stream_ctas, 132 * 3);
  EXPECT_EQ(big.splits, 1);
  EXPECT_EQ(big.part_o_floats, (size_t(32) * 8 + size_t(132) * 3 * 4) * 8 * 128);
  EXPECT_EQ(big.part_ml_floats, (size_t(32) * 8 + size_t(132) * 3 * 4) * 16);
  // B = 1: the split grid; every split has pages and the splits cover the sequence
  const DecodePlan small = plan_decode(t3_input(1, 8193), h200_info);
  EXPECT_FALSE(small.stream);
  EXPECT_GT(small.splits, 1);
  EXPECT_GE(small.splits * small.pages_per_split, 257);
  EXPECT_LT((small.splits - 1) * small.pages_per_split, 257);
  EXPECT_EQ(small.part_o_floats, size_t(32) * small.splits * 128);
  EXPECT_EQ(small.part_ml_floats, size_t(32) * small.splits * 2);
}

TEST(CudaLaunchPlan, GridOverridesAndLimits) {
  DecodePlanInput in = t3_input(2, 300);
  in.grid = DecodeGrid::kStream;
  in.stream_ctas = 3;
  const DecodePlan forced = plan_decode(in, h200_info);
  EXPECT_TRUE(forced.stream);
  EXPECT_EQ(forced.stream_ctas, 3);
  in.splits = 3;  // an explicit split count always runs the split grid
  const DecodePlan split3 = plan_decode(in, h200_info);
  EXPECT_FALSE(split3.stream);
  EXPECT_EQ(split3.splits, 3);
  EXPECT_EQ(split3.pages_per_split, 4);  // 10 pages
  in.splits = 0;
  in.shared_table = true;  // prefill: never the stream mode
  EXPECT_FALSE(plan_decode(in, h200_info).stream);
  in.shared_table = false;
  in.stream_eligible = false;  // e.g. turbo2.5
  EXPECT_FALSE(plan_decode(in, h200_info).stream);
  DecodePlanInput big = t3_input(32, 32768);
  big.grid = DecodeGrid::kSplit;
  EXPECT_FALSE(plan_decode(big, h200_info).stream);
  // more splits than pages are clamped
  DecodePlanInput one = t3_input(1, 5);
  one.splits = 7;
  const DecodePlan p1 = plan_decode(one, h200_info);
  EXPECT_EQ(p1.splits, 1);
  EXPECT_EQ(p1.pages_per_split, 1);
  // a call too large for one stream-mode launch is a user error
  DecodePlanInput huge = t3_input(1 << 16, 1 << 22);
  EXPECT_THROW(plan_decode(huge, h200_info), tq::Error);
}
