// Do the decode-step GEMMs of the GPU runtime (src/gpu/runtime.cu, Impl::gemm) reach the H200's
// memory bandwidth at small batch n, and does cuBLASLt with a chosen algorithm do better?
// Standalone: links only the CUDA runtime, cuBLAS and cuBLASLt.
//   build: nvcc -O3 -std=c++17 -arch=sm_90a -o build/devgemm/gemm_sweep bench/gpu/gemm_sweep.cu
//          -lcublas -lcublasLt       (build/devgemm/run.sh runs it on the device machine)
//   usage: gemm_sweep [--quick] [--json FILE]
// Layout as in the runtime: row-major Y[n][out] = X[n][in]·Wᵀ, i.e. column-major Yᵀ (out×n) =
// op_T(W stored as in×out) · Xᵀ (in×n); bf16 X and W, fp32 accumulate. One timed sample is one
// CUDA graph of kCopies GEMMs, each over another copy of the weights (≥ 8 × 32 MiB = 256 MiB, over
// 4× the 50 MB L2), so the weights come from HBM as in a decode step (which also runs as a graph);
// time of one GEMM = sample / kCopies, median over the samples. GB/s counts weight bytes only.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "graph_timer.h"

namespace {

constexpr int kCopies = 8;
constexpr int kAlgos = 32;
constexpr uint64_t kWorkspace = uint64_t(64) << 20;  // as the runtime gives cuBLAS
constexpr double kTol = 1e-2;                        // max |ΔY| / max |Y_GemmEx|

[[noreturn]] void die(const std::string& what) { tq::bench::die("gemm_sweep", what); }
void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) die(std::string(what) + ": " + cudaGetErrorString(e));
}
void ck(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) die(std::string(what) + ": " + cublasGetStatusString(s));
}

// uniform in [-scale, scale) from a splitmix64 hash of (seed, index)
template <class T>
__global__ void fill(T* p, size_t count, uint64_t seed, float scale) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = T((float(z >> 40) * (2.f / 16777216.f) - 1.f) * scale);
  }
}
template <class T>
void fill_dev(T* p, size_t count, uint64_t seed, float scale, cudaStream_t st) {
  fill<<<1024, 256, 0, st>>>(p, count, seed, scale);
  ck(cudaGetLastError(), "fill kernel");
}

using tq::bench::median;

// D2D cudaMemcpyAsync of 1 GiB, bytes read + written per second, median of 10
double copy_gbps(cudaStream_t st, cudaEvent_t a, cudaEvent_t b) {
  const size_t bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  ck(cudaMalloc(&src, bytes), "cudaMalloc (copy source)");
  ck(cudaMalloc(&dst, bytes), "cudaMalloc (copy target)");
  ck(cudaMemsetAsync(src, 1, bytes, st), "cudaMemset");
  ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st), "cudaMemcpy");
  std::vector<double> s(10);
  for (double& t : s) {
    ck(cudaEventRecord(a, st), "event record");
    ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st), "cudaMemcpy");
    ck(cudaEventRecord(b, st), "event record");
    ck(cudaStreamSynchronize(st), "copy");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, a, b), "event time");
    t = ms * 1e-3;
  }
  ck(cudaFree(src), "cudaFree");
  ck(cudaFree(dst), "cudaFree");
  return 2.0 * bytes / median(s) / 1e9;
}

// the same product for cuBLASLt, with the heuristic's algorithms (at most kAlgos)
struct LtPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  std::vector<cublasLtMatmulHeuristicResult_t> algos;
  LtPlan(cublasLtHandle_t lt, cublasLtMatmulPreference_t pref, int out, int in, int n,
         cudaDataType_t yt) {
    ck(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "Lt desc");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    ck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA");
    ck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB");
    ck(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, in, out, in), "Lt layout W");
    ck(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, in, n, in), "Lt layout X");
    ck(cublasLtMatrixLayoutCreate(&c, yt, out, n, out), "Lt layout Y");
    algos.resize(kAlgos);
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(lt, op, a, b, c, c, pref, kAlgos, algos.data(), &found) !=
        CUBLAS_STATUS_SUCCESS)
      found = 0;  // NOT_SUPPORTED: no algorithm for this problem
    algos.resize(found);
  }
  ~LtPlan() {
    cublasLtMatrixLayoutDestroy(c);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatmulDescDestroy(op);
  }
};

std::string algo_desc(const cublasLtMatmulAlgo_t& algo) {
  int32_t v[4] = {0, 0, 0, 0};
  const cublasLtMatmulAlgoConfigAttributes_t attr[4] = {
      CUBLASLT_ALGO_CONFIG_ID, CUBLASLT_ALGO_CONFIG_TILE_ID, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
      CUBLASLT_ALGO_CONFIG_STAGES_ID};
  size_t w = 0;
  for (int i = 0; i < 4; ++i) cublasLtMatmulAlgoConfigGetAttribute(&algo, attr[i], &v[i], 4, &w);
  char s[96];
  std::snprintf(s, sizeof s, "id %d tile %d splitk %d stages %d", v[0], v[1], v[2], v[3]);
  return s;
}

struct Shape {
  const char* name;
  int out, in;
  int per_step;  // times in one decode step: 32 layers, or once (logits)
  bool beta1;    // accumulated into the residual in the runtime
};
const Shape kShapes[] = {{"qkv", 6144, 4096, 32, false},
                         {"o", 4096, 4096, 32, true},
                         {"gate_up", 28672, 4096, 32, false},
                         {"down", 4096, 14336, 32, true},
                         {"logits", 128256, 4096, 1, false}};
const int kNs[] = {1, 16, 32, 64, 154, 256};
enum { kEx0, kEx1, kLt0, kLt1, kLtBf, kVariants };
const char* const kVariant[kVariants] = {"gemmex_b0", "gemmex_b1", "lt_b0", "lt_b1", "lt_bf16_b0"};

struct Row {
  int shape, n;
  double us[kVariants], err[kVariants];
  int alg[kVariants], nalg[kVariants];
  std::string desc[kVariants];
  bool pass;
};

double rel_err(const std::vector<float>& ref, const std::vector<float>& got) {
  double top = 0, diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    top = std::max(top, double(std::fabs(ref[i])));
    diff = std::max(diff, double(std::fabs(ref[i] - got[i])));
  }
  return top > 0 ? diff / top : diff;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  const char* json = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
      json = argv[++i];
    } else {
      die(std::string("unknown argument ") + argv[i] +
          " (usage: gemm_sweep [--quick] [--json FILE])");
    }
  }
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0)
    die(std::string("no CUDA device: ") + (e != cudaSuccess ? cudaGetErrorString(e) : "0 found"));
  cudaDeviceProp prop;
  ck(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device %s, %d SMs, L2 %.0f MB, %.0f GB; %s: %d warm-up + %d timed graphs of %d\n",
              prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6,
              prop.totalGlobalMem / 1e9, quick ? "quick" : "full", quick ? 2 : 5, quick ? 10 : 50,
              kCopies);

  cudaStream_t st = nullptr;
  ck(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
  tq::bench::GraphTimer T("gemm_sweep", st, kCopies, quick ? 2 : 5, quick ? 10 : 50);
  const double copy = copy_gbps(st, T.event(0), T.event(1));
  std::printf("device-to-device copy: %.0f GB/s (read + write, 1 GiB, median of 10)\n", copy);

  // buffers for the largest shape: kCopies weight copies, X, Y (fp32 and bf16), workspace
  size_t wmax = 0, xmax = 0, ymax = 0;
  const int nmax = kNs[sizeof kNs / sizeof kNs[0] - 1];
  for (const Shape& s : kShapes) {
    wmax = std::max(wmax, size_t(s.out) * s.in);
    xmax = std::max(xmax, size_t(nmax) * s.in);
    ymax = std::max(ymax, size_t(nmax) * s.out);
  }
  __nv_bfloat16 *W = nullptr, *X = nullptr, *Ybf = nullptr;
  float* Y = nullptr;
  void* ws = nullptr;
  ck(cudaMalloc(&W, kCopies * wmax * 2), "cudaMalloc (weights)");
  ck(cudaMalloc(&X, xmax * 2), "cudaMalloc (X)");
  ck(cudaMalloc(&Y, ymax * 4), "cudaMalloc (Y)");
  ck(cudaMalloc(&Ybf, ymax * 2), "cudaMalloc (Y bf16)");
  ck(cudaMalloc(&ws, kWorkspace), "cudaMalloc (workspace)");
  fill_dev(X, xmax, 1, 1.f, st);

  cublasHandle_t blas = nullptr;  // set up as the runtime's
  ck(cublasCreate(&blas), "cublasCreate");
  ck(cublasSetStream(blas, st), "cublasSetStream");
  ck(cublasSetWorkspace(blas, ws, kWorkspace), "cublasSetWorkspace");
  cublasLtHandle_t lt = nullptr;
  ck(cublasLtCreate(&lt), "cublasLtCreate");
  cublasLtMatmulPreference_t pref = nullptr;
  ck(cublasLtMatmulPreferenceCreate(&pref), "Lt preference");
  ck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                          &kWorkspace, sizeof kWorkspace),
     "Lt workspace preference");

  std::printf("\n%-8s %4s %7s", "shape", "n", "W MB");
  for (const char* v : kVariant) std::printf(" | %-17s", v);
  std::printf(" | best Lt alg b0 b1 bf | check (max rel err, tol %.0e)\n", kTol);
  std::printf("%-8s %4s %7s", "", "", "");
  for (int v = 0; v < kVariants; ++v) std::printf(" | %7s %4s %4s", "us", "GB/s", "%cp");
  std::printf(" |\n");

  std::vector<Row> rows;
  const float one = 1.f;
  for (int si = 0; si < int(sizeof kShapes / sizeof kShapes[0]); ++si) {
    const Shape& s = kShapes[si];
    const size_t welems = size_t(s.out) * s.in;
    fill_dev(W, kCopies * welems, 100 + si, 1.f / std::sqrt(float(s.in)), st);
    auto Wc = [&](int c) { return W + size_t(c) * welems; };
    for (const int n : kNs) {
      // exactly the runtime's call (Impl::gemm)
      auto ex = [&](float beta) {
        return [&, beta](int c) {
          return cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, s.out, n, s.in, &one, Wc(c),
                              CUDA_R_16BF, s.in, X, CUDA_R_16BF, s.in, &beta, Y, CUDA_R_32F, s.out,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
        };
      };
      auto lt_call = [&](const LtPlan& p, int a, float beta, void* y) {
        return [&, a, beta, y](int c) {
          return cublasLtMatmul(lt, p.op, &one, Wc(c), p.a, X, p.b, &beta, y, p.c, y, p.c,
                                &p.algos[a].algo, ws, kWorkspace, st) == CUBLAS_STATUS_SUCCESS;
        };
      };
      Row r{si, n, {}, {}, {}, {}, {}, true};
      r.us[kEx0] = T.time(ex(0.f));
      r.us[kEx1] = T.time(ex(1.f));
      r.alg[kEx0] = r.alg[kEx1] = -1;
      LtPlan p32(lt, pref, s.out, s.in, n, CUDA_R_32F), pbf(lt, pref, s.out, s.in, n, CUDA_R_16BF);
      auto best = [&](int v, const LtPlan& p, float beta, void* y) {
        r.us[v] = -1;
        r.alg[v] = -1;
        r.nalg[v] = int(p.algos.size());
        for (int a = 0; a < r.nalg[v]; ++a) {
          const double t = T.time(lt_call(p, a, beta, y));
          if (t > 0 && (r.us[v] < 0 || t < r.us[v])) {
            r.us[v] = t;
            r.alg[v] = a;
          }
        }
        if (r.alg[v] >= 0) r.desc[v] = algo_desc(p.algos[r.alg[v]].algo);
      };
      best(kLt0, p32, 0.f, Y);
      best(kLt1, p32, 1.f, Y);
      best(kLtBf, pbf, 0.f, Ybf);

      // the best Lt results against GemmEx's on weight copy 0 (beta 1: from the same Y)
      const size_t ny = size_t(n) * s.out;
      auto result = [&](bool ok, bool bf16) {
        if (!ok) die(std::string("GEMM failed in the check of ") + s.name);
        ck(cudaStreamSynchronize(st), "check GEMM");  // cudaMemcpy: legacy stream, no sync
        std::vector<float> h(ny);
        std::vector<uint16_t> hb(bf16 ? ny : 0);
        ck(bf16 ? cudaMemcpy(hb.data(), Ybf, ny * 2, cudaMemcpyDeviceToHost)
                : cudaMemcpy(h.data(), Y, ny * 4, cudaMemcpyDeviceToHost),
           "download Y");
        for (size_t i = 0; i < hb.size(); ++i) {
          const uint32_t bits = uint32_t(hb[i]) << 16;
          std::memcpy(&h[i], &bits, 4);
        }
        return h;
      };
      const std::vector<float> ref = result(ex(0.f)(0), false);
      if (r.alg[kLt0] >= 0)
        r.err[kLt0] = rel_err(ref, result(lt_call(p32, r.alg[kLt0], 0.f, Y)(0), false));
      if (r.alg[kLtBf] >= 0)
        r.err[kLtBf] = rel_err(ref, result(lt_call(pbf, r.alg[kLtBf], 0.f, Ybf)(0), true));
      if (r.alg[kLt1] >= 0) {
        fill_dev(Y, ny, 7, 1.f, st);
        const std::vector<float> ref1 = result(ex(1.f)(0), false);
        fill_dev(Y, ny, 7, 1.f, st);
        r.err[kLt1] = rel_err(ref1, result(lt_call(p32, r.alg[kLt1], 1.f, Y)(0), false));
      }
      double worst = 0;
      for (int v = 0; v < kVariants; ++v) {
        if (r.us[v] < 0) r.pass = false;
        worst = std::max(worst, r.err[v]);
      }
      r.pass = r.pass && worst <= kTol;

      const double mb = welems * 2 / 1e6;
      std::printf("%-8s %4d %7.1f", s.name, n, mb);
      for (int v = 0; v < kVariants; ++v) {
        if (r.us[v] < 0) {
          std::printf(" | %7s %4s %4s", "n/a", "", "");
        } else {
          const double gbps = mb * 1e6 / (r.us[v] * 1e-6) / 1e9;
          std::printf(" | %7.1f %4.0f %3.0f%%", r.us[v], gbps, 100 * gbps / copy);
        }
      }
      std::printf(" | %2d/%-2d %2d/%-2d %2d/%-2d | %.1e %s\n", r.alg[kLt0], r.nalg[kLt0],
                  r.alg[kLt1], r.nalg[kLt1], r.alg[kLtBf], r.nalg[kLtBf], worst,
                  r.pass ? "PASS" : "FAIL");
      std::fflush(stdout);
      rows.push_back(r);
    }
  }

  // one decode step: 32 × (qkv + o + gate_up + down) + logits, with the runtime's betas
  std::printf("\ndecode step (32 x (qkv + o + gate_up + down) + logits, o/down at beta 1):\n");
  std::vector<double> sum_ex(std::size(kNs)), sum_lt(std::size(kNs)), floor_ms(std::size(kNs));
  double step_bytes = 0;
  for (const Shape& s : kShapes) step_bytes += s.per_step * 2.0 * s.out * s.in;
  for (size_t ni = 0; ni < std::size(kNs); ++ni) {
    for (const Row& r : rows) {
      if (r.n != kNs[ni]) continue;
      const Shape& s = kShapes[r.shape];
      const double ex = r.us[s.beta1 ? kEx1 : kEx0], lt = r.us[s.beta1 ? kLt1 : kLt0];
      sum_ex[ni] = ex < 0 || sum_ex[ni] < 0 ? -1 : sum_ex[ni] + s.per_step * ex * 1e-3;
      sum_lt[ni] = lt < 0 || sum_lt[ni] < 0 ? -1 : sum_lt[ni] + s.per_step * lt * 1e-3;
    }  // -1: a GEMM of the step had no working algorithm
    floor_ms[ni] = step_bytes / (copy * 1e9) * 1e3;
    std::printf(
        "n %4d: GemmEx %7.3f ms, best Lt %7.3f ms (%.2fx), weight floor %.3f ms (%.0f MB "
        "at %.0f GB/s): GemmEx at %.0f%%, Lt at %.0f%% of the floor's speed\n",
        kNs[ni], sum_ex[ni], sum_lt[ni], sum_ex[ni] / sum_lt[ni], floor_ms[ni], step_bytes / 1e6,
        copy, 100 * floor_ms[ni] / sum_ex[ni], 100 * floor_ms[ni] / sum_lt[ni]);
  }
  bool all = true;
  for (const Row& r : rows) all = all && r.pass;
  std::printf("check, best Lt vs GemmEx (max |dY| / max |Y| <= %.0e): %s\n", kTol,
              all ? "PASS" : "FAIL");

  if (json) {
    FILE* f = std::fopen(json, "w");
    if (!f) die(std::string("cannot write ") + json);
    std::fprintf(f, "{\"device\": \"%s\", \"quick\": %s, \"copies\": %d, \"copy_gbps\": %.1f,\n",
                 prop.name, quick ? "true" : "false", kCopies, copy);
    std::fprintf(f, " \"tolerance\": %g, \"pass\": %s,\n \"rows\": [", kTol,
                 all ? "true" : "false");
    const char* sep = "\n";
    for (const Row& r : rows) {
      const Shape& s = kShapes[r.shape];
      const double bytes = 2.0 * s.out * s.in;
      for (int v = 0; v < kVariants; ++v) {
        const double gbps = r.us[v] > 0 ? bytes / (r.us[v] * 1e-6) / 1e9 : 0;
        std::fprintf(
            f,
            "%s  {\"shape\": \"%s\", \"out\": %d, \"in\": %d, \"n\": %d, \"weight_bytes\": "
            "%.0f, \"variant\": \"%s\", \"us\": %.3f, \"gbps\": %.1f, \"pct_copy\": %.1f, "
            "\"algo_index\": %d, \"algo_count\": %d, \"algo\": \"%s\", \"rel_err\": %.3g, "
            "\"pass\": %s}",
            sep, s.name, s.out, s.in, r.n, bytes, kVariant[v], r.us[v], gbps, 100 * gbps / copy,
            r.alg[v], r.nalg[v], r.desc[v].c_str(), r.err[v], r.pass ? "true" : "false");
        sep = ",\n";
      }
    }
    std::fprintf(f, "\n ],\n \"step\": [");
    for (size_t ni = 0; ni < std::size(kNs); ++ni)
      std::fprintf(f, "%s\n  {\"n\": %d, \"gemmex_ms\": %.4f, \"lt_ms\": %.4f, \"floor_ms\": %.4f}",
                   ni ? "," : "", kNs[ni], sum_ex[ni], sum_lt[ni], floor_ms[ni]);
    std::fprintf(f, "\n ]}\n");
    std::fclose(f);
  }
  return all ? 0 : 2;
}
