// Device benchmark: decode attention over the compressed cache (and our bf16 kernel), append
// throughput, and the device-to-device copy bandwidth. Writes JSON (one object) to --out.
// Shapes as issue 7: B ∈ {1, 8, 32}, ctx ∈ {8192, 32768, 131072}, 32 query / 8 KV heads,
// d = 128. Small shapes rotate over distinct sequences so that repeats do not hit the L2.
// Times: CUDA events around each call (query rotation + decode + split merge), median.
//   usage: bench_gpu_decode [--out FILE] [--types a,b,c] [--quick] [--reps N] [--no-variants]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/tq_cuda.h"
#include "decode_variants.h"

using namespace tq::cuda;

#define CK(x)                                                                       \
  do {                                                                              \
    cudaError_t e_ = (x);                                                           \
    if (e_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "CUDA error %s at %s\n", cudaGetErrorString(e_), #x);    \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

__global__ void fill_bf16(uint16_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
    // sum of 4 bytes: roughly normal, mean 0
    const float v = (float(h & 255) + float((h >> 8) & 255) + float((h >> 16) & 255) +
                     float(h >> 24) - 510.f) / 148.f;
    p[i] = uint16_t(__float_as_uint(v) >> 16);
  }
}
__global__ void fill_f32(float* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x85EBCA6Bu ^ seed;
    h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
    p[i] = (float(h & 0xFFFF) - 32768.f) / 16384.f;
  }
}

static float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  std::string out_path = "gpu-ours.json";
  std::vector<std::string> types = {"bf16",   "q8_0",   "q4_0",     "fp8_e4m3", "turbo2",
                                    "turbo3", "turbo4", "turbo2.5", "turbo3.5", "turbo3p"};
  std::vector<int> Bs = {1, 8, 32}, ctxs = {8192, 32768, 131072};
  int reps = 20;
  bool variants = true;
  int reps_arg = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--types" && i + 1 < argc) {
      types.clear();
      std::string s = argv[++i];
      size_t p = 0;
      while (p <= s.size()) {
        const size_t q = s.find(',', p);
        types.push_back(s.substr(p, q == std::string::npos ? std::string::npos : q - p));
        if (q == std::string::npos) break;
        p = q + 1;
      }
    } else if (a == "--no-variants") {
      variants = false;
    } else if (a == "--reps" && i + 1 < argc) {
      reps_arg = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--quick") {
      Bs = {32};
      ctxs = {32768};
      reps = 10;
    }
  }
  if (reps_arg > 0) reps = reps_arg;
  if (!device_available()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 1;
  }
  const int D = 128, Hkv = 8, Hq = 32, Bmax = 32;
  const int ctx_max = *std::max_element(ctxs.begin(), ctxs.end());
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));

  // copy bandwidth (bytes read + written)
  double copy_tbps = 0;
  {
    const size_t n = size_t(4) << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    std::vector<float> ts;
    for (int r = 0; r < 12; ++r) {
      CK(cudaEventRecord(e0));
      CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (r >= 2) ts.push_back(ms);
    }
    copy_tbps = 2.0 * n / (median(ts) * 1e-3) / 1e12;
    CK(cudaFree(a));
    CK(cudaFree(b));
    std::fprintf(stderr, "copy bandwidth %.3f TB/s (read+write)\n", copy_tbps);
  }

  FILE* fo = std::fopen(out_path.c_str(), "w");
  if (!fo) return 1;
  std::fprintf(fo, "{\"gpu\": \"%s\", \"copy_tbps\": %.4f, \"rows\": [", device_name().c_str(),
               copy_tbps);
  bool first_row = true;
  std::string append_json;

  const int max_pages = ctx_max / kPageTokens;
  std::vector<int> bt(size_t(Bmax) * max_pages);
  for (size_t i = 0; i < bt.size(); ++i) bt[i] = int(i);
  int *d_bt, *d_start, *d_lens;
  CK(cudaMalloc(&d_bt, bt.size() * 4));
  CK(cudaMemcpy(d_bt, bt.data(), bt.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&d_start, Bmax * 4));
  CK(cudaMalloc(&d_lens, Bmax * 4));
  const int chunk = 2048;
  uint16_t *d_k, *d_v;
  const size_t chunk_vals = size_t(Bmax) * chunk * Hkv * D;
  CK(cudaMalloc(&d_k, chunk_vals * 2));
  CK(cudaMalloc(&d_v, chunk_vals * 2));
  float *d_q, *d_out;
  CK(cudaMalloc(&d_q, size_t(Bmax) * Hq * D * 4));
  CK(cudaMalloc(&d_out, size_t(Bmax) * Hq * D * 4));
  fill_f32<<<1024, 256>>>(d_q, size_t(Bmax) * Hq * D, 7);

  for (const auto& tname : types) {
    CacheConfig cfg;
    cfg.kfmt = parse_fmt(tname);
    cfg.vfmt = cfg.kfmt == Fmt::kTurbo3p ? Fmt::kTurbo3 : cfg.kfmt;
    cfg.head_dim = D;
    cfg.n_kv_heads = Hkv;
    cfg.n_pages = Bmax * max_pages;
    GpuCache cache(cfg);
    const double bytes_per_token = double(cache.page_bytes()) / kPageTokens;  // all KV heads
    // fill: append chunks of `chunk` tokens to all sequences; time the appends
    std::vector<float> ats;
    for (int s = 0; s < ctx_max; s += chunk) {
      std::vector<int> st(Bmax, s);
      CK(cudaMemcpy(d_start, st.data(), Bmax * 4, cudaMemcpyHostToDevice));
      fill_bf16<<<2048, 256>>>(d_k, chunk_vals, 1000 + s);
      fill_bf16<<<2048, 256>>>(d_v, chunk_vals, 5000 + s);
      CK(cudaEventRecord(e0));
      cache.append(d_k, d_v, Bmax, chunk, d_bt, max_pages, d_start);
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (s > 0) ats.push_back(ms);
    }
    const double in_bytes = 2.0 * chunk_vals * 2;
    const double app_ms = ats.empty() ? 0 : median(ats);
    const double app_tbps = ats.empty() ? 0 : in_bytes / (app_ms * 1e-3) / 1e12;
    std::fprintf(stderr, "%-9s append %d tok x %d seq: %.3f ms, %.3f TB/s of bf16 input\n",
                 tname.c_str(), chunk, Bmax, app_ms, app_tbps);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s{\"type\": \"%s\", \"tokens\": %d, \"ms\": %.4f, \"tbps\": %.4f}",
                  append_json.empty() ? "" : ", ", tname.c_str(), chunk * Bmax, app_ms, app_tbps);
    append_json += buf;

    for (int ctx : ctxs)
      for (int B : Bs) {
        std::vector<int> lens(Bmax, ctx);
        CK(cudaMemcpy(d_lens, lens.data(), Bmax * 4, cudaMemcpyHostToDevice));
        const int nsets = Bmax / B;
        std::vector<float> ts;
        for (int r = 0; r < reps + 3; ++r) {
          const int set = r % nsets;
          CK(cudaEventRecord(e0));
          cache.decode(d_q + size_t(set) * B * Hq * D, d_out, B, Hq,
                       d_bt + size_t(set) * B * max_pages, max_pages, d_lens, ctx,
                       1.0f / std::sqrt(float(D)));
          CK(cudaEventRecord(e1));
          CK(cudaEventSynchronize(e1));
          float ms;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          if (r >= 3) ts.push_back(ms);
        }
        CK(cudaGetLastError());
        std::vector<float> ho(size_t(B) * Hq * D);
        CK(cudaMemcpy(ho.data(), d_out, ho.size() * 4, cudaMemcpyDeviceToHost));
        size_t bad = 0;
        for (float v : ho) bad += !std::isfinite(v);
        const double ms = median(ts);
        const double bytes = bytes_per_token * double(B) * ctx;
        const double tbps = bytes / (ms * 1e-3) / 1e12;
        std::fprintf(stderr, "%-9s B=%-2d ctx=%-6d %8.4f ms  %6.3f TB/s  %5.1f%% of copy%s\n",
                     tname.c_str(), B, ctx, ms, tbps, 100.0 * tbps / copy_tbps,
                     bad ? "  NON-FINITE OUTPUT" : "");
        std::fprintf(fo,
                     "%s\n  {\"type\": \"%s\", \"B\": %d, \"ctx\": %d, \"ms\": %.5f, "
                     "\"tbps\": %.4f, \"bytes\": %.0f, \"bpv\": %.4f, \"pct_copy\": %.2f, "
                     "\"nonfinite\": %zu}",
                     first_row ? "" : ",", tname.c_str(), B, ctx, ms, tbps, bytes,
                     fmt_bpv(cfg.kfmt, D) / 2 + fmt_bpv(cfg.vfmt, D) / 2,
                     100.0 * tbps / copy_tbps, bad);
        first_row = false;
      }
  }
  // Variants of the turbo3 kernel at B = 32, ctx = 32768 (stderr only): production options
  // (split grid, exact two-byte tables) and the experiments of decode_variants.cu, each with
  // its normalised difference from the default's output.
  if (variants && std::find(types.begin(), types.end(), "turbo3") != types.end() &&
      ctx_max >= 32768) {
    std::vector<int> lens(Bmax, 32768);
    CK(cudaMemcpy(d_lens, lens.data(), Bmax * 4, cudaMemcpyHostToDevice));
    const size_t nout = size_t(Bmax) * Hq * D;
    std::vector<float> ref(nout), cur(nout);
    for (bool exact : {false, true}) {
      CacheConfig cfg;
      cfg.head_dim = D;
      cfg.n_kv_heads = Hkv;
      cfg.n_pages = Bmax * max_pages;
      cfg.exact_codebook = exact;
      GpuCache cache(cfg);
      for (int s = 0; s < 32768; s += chunk) {
        std::vector<int> st(Bmax, s);
        CK(cudaMemcpy(d_start, st.data(), Bmax * 4, cudaMemcpyHostToDevice));
        fill_bf16<<<2048, 256>>>(d_k, chunk_vals, 1000 + s);
        fill_bf16<<<2048, 256>>>(d_v, chunk_vals, 5000 + s);
        cache.append(d_k, d_v, Bmax, chunk, d_bt, max_pages, d_start);
      }
      struct Run {
        const char* name;
        DecodeGrid grid;
        bench::DecodeVariant variant;
      };
      const Run runs[] = {{"default", DecodeGrid::kAuto, bench::DecodeVariant::kProduction},
                          {"split grid", DecodeGrid::kSplit, bench::DecodeVariant::kProduction},
                          {"no lookups", DecodeGrid::kAuto, bench::DecodeVariant::kNoLookups},
                          {"<= 128 registers", DecodeGrid::kAuto, bench::DecodeVariant::kRegs128}};
      for (const Run& run : runs) {
        if (exact && run.variant != bench::DecodeVariant::kProduction) continue;
        cache.set_decode_grid(run.grid);
        bench::use_decode_variant(run.variant);
        std::vector<float> ts;
        for (int r = 0; r < 23; ++r) {
          CK(cudaEventRecord(e0));
          cache.decode(d_q, d_out, Bmax, Hq, d_bt, max_pages, d_lens, 32768, 0.088f);
          CK(cudaEventRecord(e1));
          CK(cudaEventSynchronize(e1));
          float ms;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          if (r >= 3) ts.push_back(ms);
        }
        CK(cudaGetLastError());
        CK(cudaMemcpy(cur.data(), d_out, nout * 4, cudaMemcpyDeviceToHost));
        if (!exact && run.grid == DecodeGrid::kAuto &&
            run.variant == bench::DecodeVariant::kProduction)
          ref = cur;
        double num = 0, den = 0;
        for (size_t i = 0; i < nout; ++i) {
          num += double(cur[i] - ref[i]) * (cur[i] - ref[i]);
          den += double(ref[i]) * ref[i];
        }
        std::fprintf(stderr,
                     "variant %-16s%s: turbo3 B=32 ctx=32768 %.4f ms, rel. diff from default "
                     "%.2e%s\n",
                     run.name, exact ? " (exact tables)" : "", median(ts),
                     std::sqrt(num / std::max(den, 1e-300)),
                     run.variant == bench::DecodeVariant::kNoLookups ? " (wrong by design)" : "");
      }
      bench::use_decode_variant(bench::DecodeVariant::kProduction);
    }
  }
  std::fprintf(fo, "\n], \"append\": [%s]}\n", append_json.c_str());
  std::fclose(fo);
  return 0;
}
