// turboquant — scalar reference kernels of the quantized products (qdot.h): what the SIMD
// kernels must compute. Block layouts: src/model/dequant.cpp.
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "matmul/qdot.h"
#include "tq/error.h"

namespace tq::mm {

namespace {

inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

inline float bf16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return bf16_to_f32(h);
}

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Symmetric int8 quantization of n values: q = round-half-even(x · id), id = 127 / max|x|.
// The scale is rounded as llama.cpp rounds it on x86 (one division for id; a 32-block's d =
// max|x| / 127 rounded to f16, as its block_q8_0 stores it; a 256-superblock's d = 1 / id), so
// both engines feed the same integers to the same weights (DESIGN.md §8).
float quantize_block(const float* x, int n, int8_t* q, ActKind kind) {
  float amax = 0.f;
  for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float id = amax > 0.f ? 127.f / amax : 0.f;
  const float d = act_scale(amax, id, kind);
  for (int j = 0; j < n; ++j) {
    const float v = std::nearbyint(x[j] * id);
    q[j] = int8_t(std::max(-127.f, std::min(127.f, v)));
  }
  return d;
}

void quantize_ref(GgmlType t, const float* x, int64_t cols, uint8_t* out) {
  switch (act_kind(t)) {
    case ActKind::kF32: std::memcpy(out, x, size_t(cols) * 4); return;
    case ActKind::kQ8: {
      auto* b = reinterpret_cast<BlockQ8*>(out);
      for (int64_t i = 0; i < cols / 32; ++i) {
        b[i].d = quantize_block(x + 32 * i, 32, b[i].qs, ActKind::kQ8);
        int s = 0;
        for (int j = 0; j < 32; ++j) s += b[i].qs[j];
        b[i].sum = s;
      }
      return;
    }
    case ActKind::kQ8K: {
      auto* b = reinterpret_cast<BlockQ8K*>(out);
      for (int64_t i = 0; i < cols / 256; ++i) {
        std::memset(&b[i], 0, sizeof(BlockQ8K));
        b[i].d = quantize_block(x + 256 * i, 256, b[i].qs, ActKind::kQ8K);
        for (int g = 0; g < 16; ++g) {
          int s = 0;
          for (int j = 0; j < 16; ++j) s += b[i].qs[16 * g + j];
          b[i].bsums[g] = int16_t(s);
        }
      }
      return;
    }
  }
}

// --- one row · one activation row, per type -------------------------------------------------

float dot_f32_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const float* x = reinterpret_cast<const float*>(a);
  float s = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    float v;
    std::memcpy(&v, w + 4 * j, 4);
    s += v * x[j];
  }
  return s;
}

float dot_f16_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const float* x = reinterpret_cast<const float*>(a);
  float s = 0.f;
  for (int64_t j = 0; j < n; ++j) s += f16_at(w + 2 * j) * x[j];
  return s;
}

float dot_bf16_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const float* x = reinterpret_cast<const float*>(a);
  float s = 0.f;
  for (int64_t j = 0; j < n; ++j) s += bf16_at(w + 2 * j) * x[j];
  return s;
}

// Legacy types: Σ_j q_j·a_j over the block's unsigned (or, for Q8_0, signed) integers q_j, and
// the block's value = d_w·d_a·(isum − off·Σa) + m·d_a·Σa (Q4_1/Q5_1: x = d·q + m).
template <int kBytes, int kOff, bool kMin, bool kHigh>
float dot_nibbles_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const auto* x = reinterpret_cast<const BlockQ8*>(a);
  float s = 0.f;
  for (int64_t i = 0; i < n / 32; ++i) {
    const uint8_t* b = w + size_t(i) * kBytes;
    const float d = f16_at(b), m = kMin ? f16_at(b + 2) : 0.f;
    const uint8_t* p = b + (kMin ? 4 : 2);
    uint32_t qh = 0;
    if (kHigh) {
      qh = u32_at(p);
      p += 4;
    }
    int isum = 0;
    for (int j = 0; j < 16; ++j) {
      const int lo = (p[j] & 0x0F) | (kHigh ? int((qh >> j) & 1u) << 4 : 0);
      const int hi = (p[j] >> 4) | (kHigh ? int((qh >> (j + 16)) & 1u) << 4 : 0);
      isum += lo * x[i].qs[j] + hi * x[i].qs[j + 16];
    }
    s += d * x[i].d * float(isum - kOff * x[i].sum) + m * x[i].d * float(x[i].sum);
  }
  return s;
}

float dot_q8_0_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const auto* x = reinterpret_cast<const BlockQ8*>(a);
  float s = 0.f;
  for (int64_t i = 0; i < n / 32; ++i) {
    const uint8_t* b = w + size_t(i) * 34;
    const int8_t* q = reinterpret_cast<const int8_t*>(b + 2);
    int isum = 0;
    for (int j = 0; j < 32; ++j) isum += q[j] * x[i].qs[j];
    s += f16_at(b) * x[i].d * float(isum);
  }
  return s;
}

// Q4_K/Q5_K: 8 six-bit scales and mins (layout: dequant.cpp's k_scale_min).
void k_scales(const uint8_t* sc, int* scale, int* min) {
  for (int s = 0; s < 8; ++s) {
    if (s < 4) {
      scale[s] = sc[s] & 63;
      min[s] = sc[s + 4] & 63;
    } else {
      scale[s] = (sc[s + 4] & 0x0F) | ((sc[s - 4] >> 6) << 4);
      min[s] = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
  }
}

template <bool kFive>
float dot_qk45_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const auto* x = reinterpret_cast<const BlockQ8K*>(a);
  constexpr size_t kBytes = kFive ? 176 : 144;
  float s = 0.f;
  for (int64_t i = 0; i < n / 256; ++i) {
    const uint8_t* b = w + size_t(i) * kBytes;
    const float d = f16_at(b), dmin = f16_at(b + 2);
    int sc[8], mn[8];
    k_scales(b + 4, sc, mn);
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + (kFive ? 48 : 16);
    int isum = 0, msum = 0;
    for (int c = 0; c < 4; ++c) {
      int lo_sum = 0, hi_sum = 0;
      for (int l = 0; l < 32; ++l) {
        int lo = qs[32 * c + l] & 0x0F, hi = qs[32 * c + l] >> 4;
        if (kFive) {
          lo |= ((qh[l] >> (2 * c)) & 1) << 4;
          hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
        }
        lo_sum += lo * x[i].qs[64 * c + l];
        hi_sum += hi * x[i].qs[64 * c + 32 + l];
      }
      isum += sc[2 * c] * lo_sum + sc[2 * c + 1] * hi_sum;
    }
    for (int t = 0; t < 8; ++t) msum += mn[t] * (x[i].bsums[2 * t] + x[i].bsums[2 * t + 1]);
    s += d * x[i].d * float(isum) - dmin * x[i].d * float(msum);
  }
  return s;
}

float dot_q6_k_ref(const uint8_t* w, const uint8_t* a, int64_t n) {
  const auto* x = reinterpret_cast<const BlockQ8K*>(a);
  float s = 0.f;
  for (int64_t i = 0; i < n / 256; ++i) {
    const uint8_t* b = w + size_t(i) * 210;
    const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
    int q[256];
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + 64 * h;
      const uint8_t* qh = b + 128 + 32 * h;
      for (int l = 0; l < 32; ++l) {
        q[128 * h + l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
        q[128 * h + 32 + l] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
        q[128 * h + 64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
        q[128 * h + 96 + l] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
      }
    }
    int isum = 0;
    for (int t = 0; t < 16; ++t) {
      int sub = 0;
      for (int j = 0; j < 16; ++j) sub += q[16 * t + j] * x[i].qs[16 * t + j];
      isum += scales[t] * (sub - 32 * x[i].bsums[t]);
    }
    s += f16_at(b + 208) * x[i].d * float(isum);
  }
  return s;
}

using DotFn = float (*)(const uint8_t* w, const uint8_t* a, int64_t n);

template <DotFn kDot>
void tile_ref(const uint8_t* w, size_t row_bytes, int nr, const uint8_t* act, size_t act_stride,
              int nc, int64_t cols, float* out, size_t ldo, bool add) {
  for (int c = 0; c < nc; ++c)
    for (int r = 0; r < nr; ++r) {
      const float v = kDot(w + size_t(r) * row_bytes, act + size_t(c) * act_stride, cols);
      float& o = out[size_t(c) * ldo + r];
      o = add ? o + v : v;
    }
}

TileFn tile_of(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return tile_ref<dot_f32_ref>;
    case GgmlType::F16: return tile_ref<dot_f16_ref>;
    case GgmlType::BF16: return tile_ref<dot_bf16_ref>;
    case GgmlType::Q4_0: return tile_ref<dot_nibbles_ref<18, 8, false, false>>;
    case GgmlType::Q4_1: return tile_ref<dot_nibbles_ref<20, 0, true, false>>;
    case GgmlType::Q5_0: return tile_ref<dot_nibbles_ref<22, 16, false, true>>;
    case GgmlType::Q5_1: return tile_ref<dot_nibbles_ref<24, 0, true, true>>;
    case GgmlType::Q8_0: return tile_ref<dot_q8_0_ref>;
    case GgmlType::Q4_K: return tile_ref<dot_qk45_ref<false>>;
    case GgmlType::Q5_K: return tile_ref<dot_qk45_ref<true>>;
    case GgmlType::Q6_K: return tile_ref<dot_q6_k_ref>;
    default: return nullptr;
  }
}

}  // namespace

ActKind act_kind(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: return ActKind::kF32;
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0: return ActKind::kQ8;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return ActKind::kQ8K;
    default:
      throw Error(std::string("matmul: weight type ") + ggml_type_name(t) + " is not supported");
  }
}

size_t act_row_bytes(GgmlType t, int64_t cols) {
  switch (act_kind(t)) {
    case ActKind::kF32: return size_t(cols) * 4;
    case ActKind::kQ8: return size_t(cols / 32) * sizeof(BlockQ8);
    case ActKind::kQ8K: return size_t(cols / 256) * sizeof(BlockQ8K);
  }
  return 0;
}

void quantize_act_ref(GgmlType t, const float* x, int64_t cols, uint8_t* out) {
  quantize_ref(t, x, cols, out);
}

const QKernels& qkernels_ref() {
  static const QKernels k{tile_of, quantize_ref};
  return k;
}

bool avx512_vnni_available() {
  __builtin_cpu_init();
  return cpu::detected_level() == cpu::Level::kAvx512 && __builtin_cpu_supports("avx512vnni");
}

const QKernels& qkernels_for(cpu::Level l) {
  switch (l) {
    case cpu::Level::kAvx512: return avx512_vnni_available() ? qkernels_avx512() : qkernels_avx2();
    case cpu::Level::kAvx2: return qkernels_avx2();
    default: return qkernels_ref();
  }
}

const QKernels& qkernels() { return qkernels_for(cpu::active_level()); }

}  // namespace tq::mm
