// Host side of the GPU cache: format constants (codebooks → prmt tables, rotations), memory,
// the query-preparation and split-merge kernels, and the launches.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "codecs/turbo.h"
#include "core/half.h"
#include "core/lloyd_max.h"
#include "core/rng.h"
#include "core/rotation.h"
#include "cuda/consts.cuh"
#include "cuda/append_kernels.cuh"
#include "cuda/dispatch.h"
#include "cuda/tq_cuda.h"
#include "tq/error.h"

namespace tq::cuda {

void check_cuda(int err, const char* what) {
  if (err != cudaSuccess)
    throw Error(std::string("CUDA error: ") + cudaGetErrorString(cudaError_t(err)) + " (" + what +
                ")");
}

namespace {
int g_decode_variant = 0;
int g_stream_ctas = 0;
}
int decode_variant() { return g_decode_variant; }
void set_decode_variant(int v) { g_decode_variant = v; }
void set_decode_stream_ctas(int n) { g_stream_ctas = std::max(-1, n); }

bool device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

std::string device_name() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "none";
  return prop.name;
}

namespace {
const char* kNames[] = {"bf16", "q8_0", "q4_0", "turbo2", "turbo3", "turbo4",
                        "turbo2.5", "turbo3.5", "turbo3p"};
}

Fmt parse_fmt(const std::string& name) {
  for (int i = 0; i < int(Fmt::kCount); ++i)
    if (name == kNames[i]) return Fmt(i);
  throw Error("CUDA cache: unsupported cache type '" + name +
              "' (bf16 q8_0 q4_0 turbo2 turbo3 turbo4 turbo2.5 turbo3.5 turbo3p)");
}
const char* fmt_name(Fmt f) { return kNames[int(f)]; }
double fmt_bpv(Fmt f, int D) { return 8.0 * tile_bytes(f, D) / (double(kPageTokens) * D); }

namespace {

constexpr uint64_t kRotationTag = 1, kSplitHiTag = 3, kSplitLoTag = 4;  // as codecs/turbo.cpp

// fp16 codebook entries → low/high byte tables for prmt.
void make_lut(const std::vector<float>& entries, uint32_t lo[2], uint32_t hi[2]) {
  lo[0] = lo[1] = hi[0] = hi[1] = 0;
  for (size_t i = 0; i < entries.size() && i < 8; ++i) {
    const uint16_t h = f32_to_f16(entries[i]);
    lo[i / 4] |= uint32_t(h & 0xFF) << (8 * (i % 4));
    hi[i / 4] |= uint32_t(h >> 8) << (8 * (i % 4));
  }
  if (entries.size() <= 4) {
    lo[1] = lo[0];
    hi[1] = hi[0];
  }
}

// turbo3 keys go through the int8 tensor cores: every fp16 centroid h is an exact multiple of
// α = ulp(smallest |h|) (a power of two; larger entries have coarser ulps), and h/α =
// 256·K1 + K2 with K1, K2 int8. Tables: byte c of t[0] (codes 0-3) / t[1] (4-7) = K1 (K2) of
// code c, for prmt lookups. Returns α.
float make_i8_tables(const float* cent, uint32_t t1[2], uint32_t t2[2]) {
  float h[8], mn = INFINITY;
  for (int i = 0; i < 8; ++i) {
    h[i] = f16_to_f32(f32_to_f16(cent[i]));
    if (h[i] != 0.f) mn = std::min(mn, std::fabs(h[i]));
  }
  int e = 0;
  std::frexp(mn, &e);                              // mn = m·2^e, m in [0.5, 1)
  const float alpha = std::ldexp(1.0f, std::max(e - 11, -24));  // fp16 ulp of mn
  t1[0] = t1[1] = t2[0] = t2[1] = 0;
  for (int i = 0; i < 8; ++i) {
    const double c = double(h[i]) / alpha;
    const long ci = std::lround(c);
    const long k1 = (ci + 128) >> 8, k2 = ci - 256 * k1;  // k2 in [-128, 127]
    TQ_ASSERT(double(ci) == c && k1 >= -128 && k1 <= 127);
    t1[i / 4] |= uint32_t(uint8_t(int8_t(k1))) << (8 * (i % 4));
    t2[i / 4] |= uint32_t(uint8_t(int8_t(k2))) << (8 * (i % 4));
  }
  return alpha;
}

// One int8 table for the 8 centroids: c ≈ s·T (|T| ≤ 127), s chosen among the scales that
// map the largest |centroid| to 100..127 to minimise Σ (c − s·T)². Returns s.
float make_i8_table1(const float* cent, uint32_t t[2]) {
  float h[8], mx = 0.f;
  for (int i = 0; i < 8; ++i) {
    h[i] = f16_to_f32(f32_to_f16(cent[i]));
    mx = std::max(mx, std::fabs(h[i]));
  }
  double best = 1e300, s_best = mx / 127.0;
  for (int k = 0; k <= 2700 && mx > 0.f; ++k) {
    const double sc = mx / (127.0 - k * 0.01);
    double err = 0;
    for (int i = 0; i < 8; ++i) {
      const double r = h[i] - sc * std::nearbyint(h[i] / sc);
      err += r * r;
    }
    if (err < best) {
      best = err;
      s_best = sc;
    }
  }
  t[0] = t[1] = 0;
  for (int i = 0; i < 8; ++i) {
    const long ti = std::lround(h[i] / s_best);
    TQ_ASSERT(ti >= -127 && ti <= 127);
    t[i / 4] |= uint32_t(uint8_t(int8_t(ti))) << (8 * (i % 4));
  }
  return float(s_best);
}

// Quantizer cells (see FormatConsts::qcells): a cell width and offset such that no cell holds
// two boundaries and no boundary lies within w/16 of a cell edge (so a cell index that is off
// by one at an edge still gives the exact count).
void set_cells(FormatConsts& c, const ScalarCodebook& cb) {
  const auto& B = cb.boundaries;
  double bmax = 0;
  for (float b : B) bmax = std::max(bmax, std::fabs(double(b)));
  std::vector<float2> cells(kQCells);
  for (int attempt = 0; attempt < 4000; ++attempt) {
    // edges at L + i·w, L = −G − w/2: the middle boundary 0 sits in the middle of a cell
    const double G = bmax * (1.01 + 0.0007 * attempt) + 1e-6, w = 2 * G / kQCells;
    const double L = -G - w / 2;
    std::vector<int> cnt(kQCells, 0);
    bool ok = true;
    for (float b : B) {
      const double x = (double(b) - L) / w;
      const int ci = int(std::floor(x));
      const double frac = x - ci;
      if (ci < 0 || ci >= kQCells || frac < 1.0 / 16 || frac > 15.0 / 16 || ++cnt[ci] > 1) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    for (int i = 0; i < kQCells; ++i) {
      const double lo = L + i * w, hi = lo + w;
      float bound = INFINITY;
      int below = 0;
      for (float b : B) {
        if (double(b) < lo) ++below;
        else if (double(b) < hi) bound = b;
      }
      float below_bits;  // the count as int bits (the append reads it with __float_as_int)
      std::memcpy(&below_bits, &below, sizeof below_bits);
      cells[i] = make_float2(bound, below_bits);
    }
    float2* d = nullptr;
    TQ_CUDA_CHECK(cudaMalloc(&d, sizeof(float2) * kQCells));
    TQ_CUDA_CHECK(cudaMemcpy(d, cells.data(), sizeof(float2) * kQCells, cudaMemcpyHostToDevice));
    c.qcells = d;
    c.qinv = float(1.0 / w);
    c.qoff = float(-L / w);
    return;
  }
  throw Error("CUDA cache: no quantizer cell grid fits this codebook");
}

float* upload(const std::vector<float>& v) {
  float* d = nullptr;
  TQ_CUDA_CHECK(cudaMalloc(&d, v.size() * sizeof(float)));
  TQ_CUDA_CHECK(cudaMemcpy(d, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

std::vector<float> transpose(const std::vector<float>& m, int n) {
  std::vector<float> t(m.size());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) t[size_t(j) * n + i] = m[size_t(i) * n + j];
  return t;
}

void set_codebook(FormatConsts& c, int part, const ScalarCodebook& cb) {
  const int n = int(cb.centroids.size());
  std::vector<float> entries = cb.centroids;
  if (n == 16) {  // LUT4: magnitudes |c[8+m]|, the sign is stored apart
    entries.assign(cb.centroids.begin() + 8, cb.centroids.end());
  }
  make_lut(entries, c.lut_lo[part], c.lut_hi[part]);
  c.nbounds[part] = int(cb.boundaries.size());
  for (int i = 0; i < c.nbounds[part]; ++i) c.bounds[part][i] = cb.boundaries[i];
  for (int i = 0; i < n; ++i) c.cent[part][i] = cb.centroids[i];
}

FormatConsts* make_consts(Fmt f, int D, uint64_t seed) {
  auto* c = new FormatConsts();
  c->fmt = f;
  c->D = D;
  if (!is_turbo(f)) return c;
  std::vector<float> R(size_t(D) * D, 0.f);
  if (is_split(f)) {
    const int nh = D / 4, nl = D - nh;
    const int bh = f == Fmt::T25 ? 3 : 4, bl = f == Fmt::T25 ? 2 : 3;
    TurboMseCodec hi(nh, bh, derive_seed(seed, kSplitHiTag), false);
    TurboMseCodec lo(nl, bl, derive_seed(seed, kSplitLoTag), false);
    set_codebook(*c, 0, hi.codebook());
    set_codebook(*c, 1, lo.codebook());
    const auto mh = hi.rotation().matrix(), ml = lo.rotation().matrix();
    c->pdim[0] = nh;
    c->pdim[1] = nl;
    c->rot_t[0] = upload(transpose(mh, nh));
    c->rot_t[1] = upload(transpose(ml, nl));
    for (int i = 0; i < nh; ++i)
      for (int j = 0; j < nh; ++j) R[size_t(i) * D + j] = mh[size_t(i) * nh + j];
    for (int i = 0; i < nl; ++i)
      for (int j = 0; j < nl; ++j) R[size_t(nh + i) * D + nh + j] = ml[size_t(i) * nl + j];
  } else {
    const int bits = f == Fmt::T2 ? 2 : f == Fmt::T3 ? 3 : f == Fmt::T4 ? 4 : 2;
    set_codebook(*c, 0, lloyd_max_codebook(D, bits));
    set_cells(*c, lloyd_max_codebook(D, bits));
    const Rotation rot(D, derive_seed(seed, kRotationTag));
    if (rot.kind() != Rotation::Kind::kHadamard)
      throw Error("CUDA cache: head dimension must be a power of two");
    c->fwht = true;
    c->pdim[0] = D;
    c->signs = upload(rot.signs());
    R = rot.matrix();
    if (f == Fmt::T3P) {
      TurboProdCodec prod(D, 3, seed);
      make_lut({-1.0f, 1.0f}, c->lut_lo[1], c->lut_hi[1]);
      c->S = upload(prod.sketch());
      c->St = upload(transpose(prod.sketch(), D));
    }
  }
  c->R = upload(R);
  return c;
}

void free_consts(FormatConsts* c) {
  if (!c) return;
  for (const float* p : {c->signs, c->rot_t[0], c->rot_t[1], c->R, c->S, c->St})
    if (p) cudaFree(const_cast<float*>(p));
  if (c->qcells) cudaFree(const_cast<float2*>(c->qcells));
  delete c;
}

// q' = scale·R q (fp16 or bf16); T3P also qs = √(π/2)/D · S q'.
__global__ void qprep_kernel(const float* q, uint16_t* qo, uint16_t* qso, const float* R,
                             const float* S, int D, float scale, bool bf) {
  extern __shared__ float sh[];
  float* qin = sh;
  float* qr = sh + D;
  const size_t row = size_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int j = threadIdx.x;
  qin[j] = q[row * D + j];
  __syncthreads();
  float v = 0.f;
  if (R) {
    for (int i = 0; i < D; ++i) v += R[size_t(j) * D + i] * qin[i];
  } else {
    v = qin[j];
  }
  v *= scale;
  qr[j] = v;
  if (bf) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    qo[row * D + j] = *reinterpret_cast<uint16_t*>(&h);
  } else {
    __half h = __float2half_rn(v);
    qo[row * D + j] = *reinterpret_cast<uint16_t*>(&h);
  }
  if (S) {
    __syncthreads();
    float w = 0.f;
    for (int i = 0; i < D; ++i) w += S[size_t(j) * D + i] * qr[i];
    __half h = __float2half_rn(w * sqrtf(3.14159265358979f / 2.f) / float(D));
    qso[row * D + j] = *reinterpret_cast<uint16_t*>(&h);
  }
}

// Merge the splits of one query head and map back: out = Rᵀ (Σ w_s o_s / Σ w_s l_s).
__global__ void combine_kernel(const float* part_o, const float* part_ml, float* out,
                               const float* R, int D, int splits) {
  extern __shared__ float sh[];
  const size_t row = size_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int d = threadIdx.x;
  float M = -1e30f;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, part_ml[(row * splits + s) * 2]);
  float acc = 0.f, L = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f(part_ml[(row * splits + s) * 2] - M);
    L += w * part_ml[(row * splits + s) * 2 + 1];
    acc += w * part_o[(row * splits + s) * D + d];
  }
  const float v = L > 0.f ? acc / L : 0.f;
  if (!R) {
    out[row * D + d] = v;
    return;
  }
  sh[d] = v;
  __syncthreads();
  float o = 0.f;
  for (int i = 0; i < D; ++i) o += R[size_t(i) * D + d] * sh[i];
  out[row * D + d] = o;
}

// Warp-per-head versions for the randomised Hadamard formats: q' = H(signs ⊙ q)·scale/√D and
// out = signs ⊙ H(o')/√D, by the in-warp fast transform (no dense D×D matrix).
template <int D>
__global__ void qprep_fwht_kernel(const float* q, uint16_t* qo, const float* signs, int rows,
                                  float scale) {
  constexpr int E = D / 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;
  float u[E];
#pragma unroll
  for (int k = 0; k < E; ++k) u[k] = q[size_t(row) * D + E * lane + k] * signs[E * lane + k];
  ak::fwht_warp<E>(u, lane);
  const float sc = scale / sqrtf(float(D));
#pragma unroll
  for (int k = 0; k < E; ++k) {
    __half h = __float2half_rn(u[k] * sc);
    qo[size_t(row) * D + E * lane + k] = *reinterpret_cast<uint16_t*>(&h);
  }
}

template <int D>
__global__ void combine_fwht_kernel(const float* part_o, const float* part_ml, float* out,
                                    const float* signs, int rows, int splits) {
  constexpr int E = D / 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* ml = part_ml + size_t(row) * splits * 2;
  float M = -1e30f;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, ml[2 * s]);
  float u[E] = {}, L = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float w = exp2f(ml[2 * s] - M);
    L += w * ml[2 * s + 1];
    const float* o = part_o + (size_t(row) * splits + s) * D + E * lane;
#pragma unroll
    for (int k = 0; k < E; ++k) u[k] += w * o[k];
  }
  ak::fwht_warp<E>(u, lane);
  const float sc = (L > 0.f ? 1.0f / L : 0.f) / sqrtf(float(D));
#pragma unroll
  for (int k = 0; k < E; ++k)
    out[size_t(row) * D + E * lane + k] = u[k] * sc * signs[E * lane + k];
}

template <int D>
void launch_qprep_fwht(const float* q, uint16_t* qo, const float* signs, int rows, float scale,
                       cudaStream_t st) {
  qprep_fwht_kernel<D><<<(rows + 7) / 8, 256, 0, st>>>(q, qo, signs, rows, scale);
}
template <int D>
void launch_combine_fwht(const float* po, const float* pml, float* out, const float* signs,
                         int rows, int splits, cudaStream_t st) {
  combine_fwht_kernel<D><<<(rows + 7) / 8, 256, 0, st>>>(po, pml, out, signs, rows, splits);
}

}  // namespace

bool launch_decode(Fmt kf, Fmt vf, int D, const DecodeParams& p, dim3 grid, cudaStream_t st,
                   int mode) {
  if (D == 64) return launch_decode_d<64>(kf, vf, p, grid, st, mode);
  if (D == 128) return launch_decode_d<128>(kf, vf, p, grid, st, mode);
  if (D == 256) return launch_decode_d<256>(kf, vf, p, grid, st, mode);
  return false;
}
int decode_occupancy(Fmt kf, Fmt vf, int D, int mode) {
  if (D == 64) return decode_occupancy_d<64>(kf, vf, mode);
  if (D == 128) return decode_occupancy_d<128>(kf, vf, mode);
  if (D == 256) return decode_occupancy_d<256>(kf, vf, mode);
  return 0;
}
bool launch_append(Fmt kf, Fmt vf, int D, const AppendParams& p, dim3 grid, cudaStream_t st) {
  if (D == 64) return launch_append_d<64>(kf, vf, p, grid, st);
  if (D == 128) return launch_append_d<128>(kf, vf, p, grid, st);
  if (D == 256) return launch_append_d<256>(kf, vf, p, grid, st);
  return false;
}

GpuCache::GpuCache(const CacheConfig& cfg) : cfg_(cfg) {
  const int D = cfg.head_dim;
  if (D != 64 && D != 128 && D != 256)
    throw Error("CUDA cache: head dimension must be 64, 128 or 256, got " + std::to_string(D));
  if (cfg.vfmt == Fmt::T3P) throw Error("CUDA cache: turbo3p is a key-only type");
  if ((cfg.kfmt == Fmt::T3P) != false && cfg.vfmt != Fmt::T3)
    throw Error("CUDA cache: turbo3p keys are paired with turbo3 values");
  if (cfg.kfmt != cfg.vfmt && cfg.kfmt != Fmt::T3P)
    throw Error("CUDA cache: K and V must have the same type (or turbo3p/turbo3)");
  if ((is_split(cfg.kfmt) || is_split(cfg.vfmt)) && D < 128)
    throw Error("CUDA cache: turbo2.5/turbo3.5 need head dimension >= 128");
  if (cfg.n_pages <= 0 || cfg.n_kv_heads <= 0) throw Error("CUDA cache: empty pool");
  tile_k_ = tile_bytes(cfg.kfmt, D);
  tile_v_ = tile_bytes(cfg.vfmt, D);
  page_bytes_ = size_t(cfg.n_kv_heads) * (tile_k_ + tile_v_);
  TQ_CUDA_CHECK(cudaMalloc(&pool_, page_bytes_ * cfg.n_pages));
  TQ_CUDA_CHECK(cudaMemset(pool_, 0, page_bytes_ * cfg.n_pages));
  kc_.reset(make_consts(cfg.kfmt, D, cfg.seed));
  vc_.reset(make_consts(cfg.vfmt, D, cfg.seed));
  for (int kv = 0; kv < 2; ++kv) {
    const FormatConsts& c = kv ? *vc_ : *kc_;
    if (c.fmt != Fmt::T3) continue;
    i8_.two_mul[kv] = make_i8_tables(c.cent[0], i8_.two[kv][0], i8_.two[kv][1]);
    i8_.one_mul[kv] = make_i8_table1(c.cent[0], i8_.one[kv]);
  }
}

GpuCache::~GpuCache() {
  cudaFree(pool_);
  cudaFree(ws_);
  cudaFree(qbuf_);
  cudaFree(lens_);
  cudaFree(counters_);
  free_consts(kc_.release());
  free_consts(vc_.release());
}

void GpuCache::append(const uint16_t* k, const uint16_t* v, int B, int n_new,
                      const int* block_table, int max_pages, const int* start, void* stream) {
  if (B <= 0 || n_new <= 0) return;
  AppendParams p{};
  p.pool = pool_;
  p.block_table = block_table;
  p.max_pages = max_pages;
  p.start = start;
  p.k = k;
  p.v = v;
  p.n_new = n_new;
  p.Hkv = cfg_.n_kv_heads;
  p.page_bytes = (long long)page_bytes_;
  p.tile_k = int(tile_k_);
  p.tile_v = int(tile_v_);
  p.kc = *kc_;
  p.vc = *vc_;
  // pages a run of n_new tokens can touch, whatever its start
  const dim3 grid((n_new + kPageTokens - 1) / kPageTokens + 1, cfg_.n_kv_heads, B);
  if (!launch_append(cfg_.kfmt, cfg_.vfmt, cfg_.head_dim, p, grid, cudaStream_t(stream)))
    throw Error("CUDA cache: no append kernel for this type pair and head dimension");
  TQ_CUDA_CHECK(cudaGetLastError());
}

void GpuCache::decode(const float* q, float* out, int B, int Hq, const int* block_table,
                      int max_pages, const int* seq_lens, int max_seq, float sm_scale,
                      int splits, void* stream) {
  decode_impl(q, out, B, Hq, block_table, max_pages, max_pages, seq_lens, max_seq, sm_scale,
              splits, stream);
}

namespace {
__global__ void causal_lens_kernel(int* lens, int T, int pos0) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < T) lens[i] = pos0 + i + 1;
}
}  // namespace

void GpuCache::prefill(const float* q, float* out, int T, int Hq, const int* block_table,
                       int max_pages, int pos0, float sm_scale, void* stream) {
  if (T <= 0) return;
  if (pos0 < 0) throw Error("CUDA prefill: negative start position");
  cudaStream_t st = cudaStream_t(stream);
  if (size_t(T) * sizeof(int) > lens_bytes_) {
    cudaFree(lens_);
    TQ_CUDA_CHECK(cudaMalloc(&lens_, size_t(T) * sizeof(int)));
    lens_bytes_ = size_t(T) * sizeof(int);
  }
  causal_lens_kernel<<<(T + 255) / 256, 256, 0, st>>>(lens_, T, pos0);
  TQ_CUDA_CHECK(cudaGetLastError());
  // every query token is a sequence of its own over the same page table (stride 0)
  decode_impl(q, out, T, Hq, block_table, max_pages, 0, lens_, pos0 + T, sm_scale, 0, stream);
}

void GpuCache::decode_impl(const float* q, float* out, int B, int Hq, const int* block_table,
                           int max_pages, int bt_stride, const int* seq_lens, int max_seq,
                           float sm_scale, int splits, void* stream) {
  const int D = cfg_.head_dim, Hkv = cfg_.n_kv_heads;
  if (Hq % Hkv != 0 || Hq / Hkv > 8)
    throw Error("CUDA decode: query heads must be 1..8 times the KV heads");
  cudaStream_t st = cudaStream_t(stream);
  const int pages = std::max(1, (max_seq + kPageTokens - 1) / kPageTokens);
  // Stream mode (persistent grid, see decode_kernels.cuh) for an automatic split count in
  // decode (not prefill: its causal lengths differ per row) and the types it serves.
  bool use_stream = splits <= 0 && bt_stride != 0 &&
                    dk::stream_eligible(cfg_.kfmt, cfg_.vfmt, D) &&
                    decode_variant_streams(decode_variant());
  const int mode_bits = (cfg_.exact_codebook ? kDecodeExact : 0) | (Hq / Hkv <= 4 ? kDecodeG4 : 0);
  auto occupancy = [&](bool strm) {
    // cached per (mode, variant): the query costs microseconds, a decode call ~0.03-1 ms
    const int mode = (strm ? kDecodeStream : 0) | mode_bits;
    const int key = mode + 8 * std::clamp(decode_variant(), 0, 15);
    if (occ_cache_[key] == 0)
      occ_cache_[key] = std::max(1, decode_occupancy(cfg_.kfmt, cfg_.vfmt, D, mode));
    return occ_cache_[key];
  };
  if (sms_ == 0) {
    sms_ = 132;
    cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, 0);
  }
  // Stream mode pays off with ≥ 32 pages per warp (measured: B = 1 ran 1.3-2.6x slower in
  // stream mode, its many short pieces per segment merged by one warp each); the test knob
  // set_decode_stream_ctas forces it.
  if (use_stream && g_stream_ctas == 0)
    use_stream = double(B) * Hkv * pages >=
                 32.0 * sms_ * occupancy(true) * decode_warps(cfg_.kfmt, cfg_.vfmt, D);
  int stream_ctas = 0;
  if (use_stream) {
    if (double(B) * Hkv * pages >= 2e9) throw Error("CUDA decode: too many pages for one call");
    stream_ctas = g_stream_ctas > 0 ? g_stream_ctas : sms_ * occupancy(true);
    splits = 1;
  } else if (splits <= 0) {
    // Fill whole waves: minimise waves × (pages per CTA + fixed per-CTA cost), counted in pages.
    const int resident = sms_ * occupancy(false);
    const long pairs = long(B) * Hkv;
    double best = 1e300;
    for (int s = 1; s <= std::min(pages, 512); ++s) {
      const long waves = (pairs * s + resident - 1) / resident;
      const double cost = double(waves) * (double((pages + s - 1) / s) +
                                           6.0 * decode_warps(cfg_.kfmt, cfg_.vfmt, D));
      if (cost < best - 1e-9) {
        best = cost;
        splits = s;
      }
    }
  }
  splits = std::clamp(splits, 1, pages);
  const int pps = (pages + splits - 1) / splits;
  splits = (pages + pps - 1) / pps;

  const size_t rows = size_t(B) * Hq;
  // partials: split grid [rows][splits] × (D + 2); stream mode one (8 heads × D, 8 × (m, l))
  // per segment piece, at most B·Hkv + warps pieces
  const size_t stream_pieces = size_t(B) * Hkv + size_t(stream_ctas) * decode_warps(cfg_.kfmt, cfg_.vfmt, D);
  const size_t ws_need = use_stream ? stream_pieces * (8 * D + 16) * sizeof(float)
                                    : rows * splits * (D + 2) * sizeof(float);
  if (ws_need > ws_bytes_) {
    cudaFree(ws_);
    TQ_CUDA_CHECK(cudaMalloc(&ws_, ws_need));
    ws_bytes_ = ws_need;
  }
  const size_t qb_need = rows * D * 2 * sizeof(uint16_t);
  if (qb_need > qbuf_bytes_) {
    cudaFree(qbuf_);
    TQ_CUDA_CHECK(cudaMalloc(&qbuf_, qb_need));
    qbuf_bytes_ = qb_need;
  }
  const float kLog2e = 1.4426950408889634f;
  // turbo3 keys rotate the query in the decode kernel; values without a dense rotation merge
  // the splits in the decode kernel too (one launch)
  const bool fuse_q = cfg_.kfmt == Fmt::T3;
  const bool fuse_out = !is_split(cfg_.vfmt);
  if (fuse_out && size_t(B) * Hkv > counters_n_) {
    cudaFree(counters_);
    counters_ = nullptr;
    TQ_CUDA_CHECK(cudaMalloc(&counters_, size_t(B) * Hkv * sizeof(int)));
    TQ_CUDA_CHECK(cudaMemset(counters_, 0, size_t(B) * Hkv * sizeof(int)));
    counters_n_ = size_t(B) * Hkv;
  }
  if (fuse_q) {
    // nothing to prepare
  } else if (kc_->fwht && cfg_.kfmt != Fmt::T3P) {
    const float sc = sm_scale * kLog2e;
    if (D == 64) launch_qprep_fwht<64>(q, qbuf_, kc_->signs, int(rows), sc, st);
    else if (D == 128) launch_qprep_fwht<128>(q, qbuf_, kc_->signs, int(rows), sc, st);
    else launch_qprep_fwht<256>(q, qbuf_, kc_->signs, int(rows), sc, st);
  } else {
    qprep_kernel<<<dim3(Hq, B), D, 2 * D * sizeof(float), st>>>(
        q, qbuf_, qbuf_ + rows * D, kc_->R, kc_->S, D, sm_scale * kLog2e,
        cfg_.kfmt == Fmt::BF16);
  }
  TQ_CUDA_CHECK(cudaGetLastError());

  DecodeParams p{};
  p.pool = pool_;
  p.block_table = block_table;
  p.max_pages = max_pages;
  p.bt_stride = bt_stride;
  p.seq_lens = seq_lens;
  p.q = qbuf_;
  p.qs = qbuf_ + rows * D;
  p.part_o = ws_;
  p.part_ml = ws_ + (use_stream ? stream_pieces * 8 * D : rows * splits * D);
  p.Hq = Hq;
  p.Hkv = Hkv;
  p.G = Hq / Hkv;
  p.splits = splits;
  p.pages_per_split = pps;
  p.page_bytes = (long long)page_bytes_;
  p.tile_k = int(tile_k_);
  std::memcpy(p.klo, kc_->lut_lo, sizeof p.klo);
  std::memcpy(p.khi, kc_->lut_hi, sizeof p.khi);
  std::memcpy(p.vlo, vc_->lut_lo, sizeof p.vlo);
  std::memcpy(p.vhi, vc_->lut_hi, sizeof p.vhi);
  std::memcpy(p.ki8, i8_.two[0], sizeof p.ki8);
  std::memcpy(p.vi8, i8_.two[1], sizeof p.vi8);
  std::memcpy(p.k1tab, i8_.one[0], sizeof p.k1tab);
  std::memcpy(p.v1tab, i8_.one[1], sizeof p.v1tab);
  p.kalpha128 = 128.f * i8_.two_mul[0];
  p.valpha256 = 256.f * i8_.two_mul[1];
  p.k1mul = 0.5f * i8_.one_mul[0];
  p.v1mul = i8_.one_mul[1];
  p.B = B;
  p.q32 = q;
  p.ksigns = kc_->signs;
  p.qscale = sm_scale * kLog2e;
  p.out = fuse_out ? out : nullptr;
  p.vsigns = vc_->fwht ? vc_->signs : nullptr;
  p.counters = counters_;
  const dim3 grid = use_stream ? dim3(stream_ctas) : dim3(splits, Hkv, B);
  if (!launch_decode(cfg_.kfmt, cfg_.vfmt, D, p, grid, st,
                     (use_stream ? kDecodeStream : 0) | mode_bits))
    throw Error("CUDA decode: no kernel for this type pair and head dimension");
  TQ_CUDA_CHECK(cudaGetLastError());
  if (fuse_out) {
    // merged in the decode kernel
  } else if (vc_->fwht) {
    const int r = int(rows);
    if (D == 64) launch_combine_fwht<64>(p.part_o, p.part_ml, out, vc_->signs, r, splits, st);
    else if (D == 128) launch_combine_fwht<128>(p.part_o, p.part_ml, out, vc_->signs, r, splits, st);
    else launch_combine_fwht<256>(p.part_o, p.part_ml, out, vc_->signs, r, splits, st);
  } else {
    combine_kernel<<<dim3(Hq, B), D, D * sizeof(float), st>>>(p.part_o, p.part_ml, out, vc_->R,
                                                              D, splits);
  }
  TQ_CUDA_CHECK(cudaGetLastError());
}

GpuCache::TileView GpuCache::read_tile(int page, int kvh, bool is_v) const {
  const int D = cfg_.head_dim;
  const Fmt f = is_v ? cfg_.vfmt : cfg_.kfmt;
  const size_t tb = is_v ? tile_v_ : tile_k_;
  std::vector<uint8_t> t(tb);
  const size_t off = size_t(page) * page_bytes_ + size_t(kvh) * (tile_k_ + tile_v_) +
                     (is_v ? tile_k_ : 0);
  TQ_CUDA_CHECK(cudaMemcpy(t.data(), pool_ + off, tb, cudaMemcpyDeviceToHost));
  auto word = [&](int part, int w, int lane) {
    uint32_t x;
    std::memcpy(&x, t.data() + part_offset_bytes(f, part, D) +
                        word_byte_offset(part_words(f, part, D), w, lane), 4);
    return x;
  };
  TileView tv;
  const int np = nparts(f);
  tv.codes.resize(np);
  for (int part = 0; part < np; ++part) {
    const int pd = is_split(f) ? part_elems(f, part, D) : D;
    const int d0 = is_split(f) && part == 1 ? D / 4 : 0;
    tv.codes[part].assign(size_t(kPageTokens) * pd, 0);
    const Kind kind = part_kind(f, part);
    for (int tok = 0; tok < kPageTokens; ++tok)
      for (int dd = 0; dd < pd; ++dd) {
        int lane, i;
        td_to_elem(is_v, tok, d0 + dd, lane, i, i8_layout(f, is_v));
        const int e = i - part_first(f, part, D);
        Slot sl[3];
        const int n = code_slot(kind, e, sl);
        uint32_t c = 0;
        for (int s = 0; s < n; ++s)
          c |= ((word(part, sl[s].word, lane) >> sl[s].bit) & ((1u << sl[s].nbits) - 1u))
               << sl[s].shift;
        if (kind == Kind::LUT4) {
          const Slot ss = lut4_sign_slot(e);
          const bool neg = (word(part, ss.word, lane) >> ss.bit) & 1u;
          c = neg ? 7 - c : c + 8;
        }
        tv.codes[part][size_t(tok) * pd + dd] = int(c);
      }
  }
  const int ns = nscalars(f, D);
  tv.scalars.resize(ns);
  const bool slotted = is_turbo(f);
  for (int a = 0; a < ns; ++a) {
    tv.scalars[a].resize(kPageTokens);
    for (int tok = 0; tok < kPageTokens; ++tok)
      std::memcpy(&tv.scalars[a][tok],
                  t.data() + codes_bytes(f, D) + a * 64 + 2 * (slotted ? scalar_slot(tok) : tok), 2);
  }
  return tv;
}

}  // namespace tq::cuda
