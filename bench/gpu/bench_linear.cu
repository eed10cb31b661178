// Decode-step linear layers of the GPU runtime at small batch: cuBLAS (cublasGemmEx as
// Impl::gemm calls it, plus the separate norm / convert / SwiGLU kernel the unfused path runs)
// against the small-batch kernel of src/gpu/linear.h with the same step folded in, per
// llama3-8b shape, n = 1, 8, 16, rows per block 16 / 32 / 64, with and without programmatic
// dependent launch. One timed sample is a CUDA graph of kCopies launches over as many weight
// copies (≥ 256 MiB, over 4× the L2), so the weights come from HBM as in a decode step;
// µs per launch = sample / kCopies, median of the samples. GB/s counts weight bytes.
//   usage: bench_gpu_linear [--quick] [--json FILE]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gpu/linear.h"
#include "gpu/ops.h"
#include "graph_timer.h"

using namespace tq::gpu;

namespace {

constexpr int kCopies = 8;

[[noreturn]] void die(const std::string& what) { tq::bench::die("bench_gpu_linear", what); }
void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) die(std::string(what) + ": " + cudaGetErrorString(e));
}
void ck(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) die(std::string(what) + ": " + cublasGetStatusString(s));
}

struct Shape {
  const char* name;
  int in, out;
  LinearArgs::Epilogue epi;
  int input;  // 0 bf16, 1 fp32, 2 fp32 normalised
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string json;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      json = argv[++i];
    else
      die(std::string("unknown argument ") + argv[i] + " (--quick, --json FILE)");
  }
  const int reps = quick ? 15 : 40;
  const Shape shapes[] = {{"qkv", 4096, 6144, LinearArgs::kStore, 2},
                          {"o", 4096, 4096, LinearArgs::kResidual, 1},
                          {"gate_up", 4096, 28672, LinearArgs::kSwiglu, 2},
                          {"down", 14336, 4096, LinearArgs::kResidual, 0},
                          {"logits", 4096, 128256, LinearArgs::kStore, 0}};
  cudaStream_t st;
  ck(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
  cublasHandle_t blas;
  ck(cublasCreate(&blas), "cublasCreate");
  ck(cublasSetStream(blas, st), "cublasSetStream");
  void* ws = nullptr;
  ck(cudaMalloc(&ws, 64 << 20), "workspace");
  ck(cublasSetWorkspace(blas, ws, 64 << 20), "cublasSetWorkspace");

  tq::bench::GraphTimer timer("bench_gpu_linear", st, kCopies, 3, reps);
  FILE* jf = json.empty() ? nullptr : std::fopen(json.c_str(), "w");
  if (!json.empty() && !jf) die("cannot write " + json);
  if (jf) std::fprintf(jf, "{\"rows\": [\n");
  bool first = true;
  std::printf("%-8s %3s %-26s %9s %8s\n", "shape", "n", "variant", "us", "GB/s");
  for (const Shape& s : shapes) {
    const size_t wn = size_t(s.in) * s.out;
    const int copies = kCopies;
    std::vector<uint16_t*> W(copies);
    for (auto& w : W) {
      ck(cudaMalloc(&w, wn * 2), "weights");
      launch_init_bf16(w, wn, 7, 0.02f, 0.f, st);
    }
    const int N = 16;
    float *xf, *y, *gu, *nw, *ss;
    uint16_t *xb, *h;
    ck(cudaMalloc(&xf, sizeof(float) * N * s.in), "x");
    ck(cudaMalloc(&xb, 2 * size_t(N) * std::max(s.in, s.out)), "xb");
    ck(cudaMalloc(&y, sizeof(float) * N * s.out), "y");
    ck(cudaMalloc(&gu, sizeof(float) * N * s.out), "gu");
    ck(cudaMalloc(&h, 2 * size_t(N) * s.out), "h");
    ck(cudaMalloc(&nw, sizeof(float) * s.in), "norm");
    ck(cudaMalloc(&ss, sizeof(float) * 4096 * kLinearMaxRows), "ss");
    launch_init_f32(xf, size_t(N) * s.in, 3, 1.f, 0.f, st);
    launch_init_bf16(xb, size_t(N) * s.in, 4, 1.f, 0.f, st);
    launch_init_f32(nw, s.in, 5, 0.1f, 1.f, st);
    launch_init_f32(ss, 4096 * kLinearMaxRows, 6, 0.5f, 1.f, st);
    launch_init_f32(y, size_t(N) * s.out, 8, 1.f, 0.f, st);
    for (int n : {1, 8, 16}) {
      auto row = [&](const std::string& variant, double us) {
        const double gbps = double(wn) * 2 / (us * 1e-6) / 1e9;
        std::printf("%-8s %3d %-26s %9.2f %8.0f\n", s.name, n, variant.c_str(), us, gbps);
        if (jf)
          std::fprintf(jf,
                       "%s{\"shape\": \"%s\", \"n\": %d, \"variant\": \"%s\", \"us\": %.3f, "
                       "\"weight_gbps\": %.1f}",
                       first ? "" : ",\n", s.name, n, variant.c_str(), us, gbps);
        first = false;
      };
      // cuBLAS plus the unfused step around it
      const double us_blas = timer.time([&](int c) {
        if (s.input == 2) launch_rmsnorm_bf16(xf, nw, xb, n, s.in, 1e-5f, st);
        if (s.input == 1) launch_f32_to_bf16(xf, xb, size_t(n) * s.in, st);
        const float alpha = 1.f, beta = s.epi == LinearArgs::kResidual ? 1.f : 0.f;
        float* out = s.epi == LinearArgs::kSwiglu ? gu : y;
        ck(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, s.out, n, s.in, &alpha, W[c], CUDA_R_16BF,
                        s.in, xb, CUDA_R_16BF, s.in, &beta, out, CUDA_R_32F, s.out,
                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmEx");
        if (s.epi == LinearArgs::kSwiglu) launch_swiglu_bf16(gu, h, n, s.out / 2, st);
        return true;
      });
      row("cublas+unfused", us_blas);
      for (int R : {16, 32, 64})
        for (int pdl : {0, 1}) {
          if (s.out % R) continue;
          LinearArgs a;
          a.in = s.in;
          a.out = s.out;
          a.n = n;
          a.epi = s.epi;
          a.rows_per_block = R;
          a.eps = 1e-5f;
          if (s.input == 0)
            a.x_bf16 = xb;
          else
            a.x_f32 = xf;
          if (s.input == 2) {
            a.norm_w = nw;
            a.ss_parts = ss;
            a.ss_blocks = 256;
          }
          a.y = y;
          a.h = h;
          a.ss_out = s.epi == LinearArgs::kResidual ? ss + 2048 * kLinearMaxRows : nullptr;
          const double us = timer.time([&](int c) {
            a.W = W[c];
            launch_linear_small(a, st, pdl != 0);
            return true;
          });
          row("small rows" + std::to_string(R) + (pdl ? " pdl" : ""), us);
        }
    }
    for (auto& w : W) cudaFree(w);
    cudaFree(xf);
    cudaFree(xb);
    cudaFree(y);
    cudaFree(gu);
    cudaFree(h);
    cudaFree(nw);
    cudaFree(ss);
  }
  if (jf) {
    std::fprintf(jf, "\n]}\n");
    std::fclose(jf);
  }
  return 0;
}
