// Format tables of the CUDA cache (host side): names and bits per value of the GPU formats,
// and the device-side constants of one format (FormatConsts): codebooks → prmt tables,
// quantizer cells, rotations, the QJL sketch — built from the CPU codecs' own objects
// (TurboMseCodec, Rotation, Lloyd-Max codebooks) and the seed tags of codecs/turbo_layout.h, so
// both backends store the same codes.
#include "cuda/format_tables.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "codecs/turbo.h"
#include "codecs/turbo_layout.h"
#include "core/half.h"
#include "core/lloyd_max.h"
#include "core/rng.h"
#include "core/rotation.h"
#include "cuda/tq_cuda.h"
#include "tq/codec.h"
#include "tq/error.h"

namespace tq::cuda {

void check_cuda(int err, const char* what) {
  if (err != cudaSuccess)
    throw Error(std::string("CUDA error: ") + cudaGetErrorString(cudaError_t(err)) + " (" + what +
                ")");
}

namespace {

// Cache-type names of the GPU formats, in Fmt order, read from the registry's traits (each
// type names its GPU format there; src/cuda never spells a type name).
const std::vector<std::string>& gpu_type_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n(size_t(Fmt::kCount));
    for (const std::string& t : list_types()) {
      const GpuFormat g = type_traits(t).gpu;
      if (g == GpuFormat::kNone) continue;
      TQ_ASSERT(n[size_t(g)].empty());  // one type per GPU format
      n[size_t(g)] = t;
    }
    for (const std::string& x : n) TQ_ASSERT(!x.empty());
    return n;
  }();
  return names;
}

// Lloyd-Max bits of the (non-split) turbo formats' mse codes (turbo3p: 2 + 1 QJL bit); 0 for
// the others.
constexpr int kMseBits[] = {0, 0, 0, 2, 3, 4, 0, 0, 2, 0};
static_assert(std::size(kMseBits) == size_t(Fmt::kCount));

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

}  // namespace

Fmt parse_fmt(const std::string& name) {
  const GpuFormat g = type_traits(name).gpu;  // throws for an unknown name
  if (g != GpuFormat::kNone) return g;
  std::string all;
  for (const std::string& t : gpu_type_names()) all += (all.empty() ? "" : " ") + t;
  throw Error("CUDA cache: cache type '" + name + "' has no GPU form (GPU types: " + all + ")");
}
const char* fmt_name(Fmt f) {
  TQ_ASSERT(int(f) >= 0 && int(f) < int(Fmt::kCount));
  return gpu_type_names()[size_t(f)].c_str();
}
double fmt_bpv(Fmt f, int D) { return 8.0 * tile_bytes(f, D) / (double(kPageTokens) * D); }

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

FormatConsts* make_consts(Fmt f, int D, uint64_t seed) {
  auto* c = new FormatConsts();
  c->fmt = f;
  c->D = D;
  if (!is_turbo(f)) return c;
  std::vector<float> R(size_t(D) * D, 0.f);
  if (is_split(f)) {
    const int nh = turbo_layout::split_outlier_dims(D), nl = D - nh;
    const auto bits =
        f == Fmt::kTurbo2_5 ? turbo_layout::kTurbo2_5Bits : turbo_layout::kTurbo3_5Bits;
    TurboMseCodec hi(nh, bits.hi, derive_seed(seed, turbo_layout::kSplitHiTag), false);
    TurboMseCodec lo(nl, bits.lo, derive_seed(seed, turbo_layout::kSplitLoTag), false);
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
    const int bits = kMseBits[int(f)];
    set_codebook(*c, 0, lloyd_max_codebook(D, bits));
    set_cells(*c, lloyd_max_codebook(D, bits));
    const Rotation rot(D, derive_seed(seed, turbo_layout::kRotationTag));
    if (rot.kind() != Rotation::Kind::kHadamard)
      throw Error("CUDA cache: head dimension must be a power of two");
    c->fwht = true;
    c->pdim[0] = D;
    c->signs = upload(rot.signs());
    R = rot.matrix();
    if (f == Fmt::kTurbo3p) {
      TurboProdCodec prod(D, kMseBits[int(f)] + 1, seed);  // the mse bits + 1 QJL bit
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

}  // namespace tq::cuda
