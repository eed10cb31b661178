// Scalar reference kernels of the ggml block formats (see ggml_blocks.h for the layouts).
// The quantizers follow ggml's float arithmetic step by step (same operations, same order, all
// in float) so that they produce the same bytes; do not "simplify" the expressions.
#include "codecs/ggml_blocks.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/half.h"

namespace tq::ggml {
namespace {

constexpr int kHalf = kBlock / 2;

inline float h2f(uint16_t h) { return f16_to_f32(h); }

// Signed value of largest magnitude; the first one wins a tie (ggml: `if (amax < fabsf(v))`).
inline void signed_absmax(const float* x, float& amax, float& max) {
  amax = 0.0f;
  max = 0.0f;
  for (int j = 0; j < kBlock; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
}

inline void min_max(const float* x, float& mn, float& mx) {
  mn = FLT_MAX;
  mx = -FLT_MAX;
  for (int j = 0; j < kBlock; ++j) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
}

// Element j of a q4-style nibble array: low nibble of byte j for j < 16, high of byte j−16.
inline int nibble(const uint8_t* qs, int j) {
  return j < kHalf ? (qs[j] & 0x0F) : (qs[j - kHalf] >> 4);
}
// Bit 4 of element j of a q5 block (qh is a little-endian uint32, bit j for element j).
inline int high_bit(const uint8_t* qh, int j) { return ((qh[j >> 3] >> (j & 7)) & 1) << 4; }

}  // namespace

// ---------------------------------------------------------------- quantizers
void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, x += kBlock) {
    float amax = 0.0f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kBlock; ++j) y[i].qs[j] = int8_t(std::round(x[j] * id));
  }
}

void quantize_row_q4_0_ref(const float* x, BlockQ4_0* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, x += kBlock) {
    float amax, max;
    signed_absmax(x, amax, max);
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kHalf; ++j) {
      // (int) truncates toward zero like ggml's (int8_t) cast; the argument is ≥ 0 here.
      const int q0 = std::min(15, int(x[j] * id + 8.5f));
      const int q1 = std::min(15, int(x[j + kHalf] * id + 8.5f));
      y[i].qs[j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q4_1_ref(const float* x, BlockQ4_1* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, x += kBlock) {
    float mn, mx;
    min_max(x, mn, mx);
    const float d = (mx - mn) / ((1 << 4) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(mn);
    for (int j = 0; j < kHalf; ++j) {
      const int q0 = std::min(15, int((x[j] - mn) * id + 0.5f));
      const int q1 = std::min(15, int((x[j + kHalf] - mn) * id + 0.5f));
      y[i].qs[j] = uint8_t(q0 | (q1 << 4));
    }
  }
}

void quantize_row_q5_0_ref(const float* x, BlockQ5_0* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, x += kBlock) {
    float amax, max;
    signed_absmax(x, amax, max);
    const float d = max / -16;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kHalf; ++j) {
      const int q0 = std::min(31, int(x[j] * id + 16.5f));
      const int q1 = std::min(31, int(x[j + kHalf] * id + 16.5f));
      y[i].qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= uint32_t((q0 >> 4) & 1) << j;
      qh |= uint32_t((q1 >> 4) & 1) << (j + kHalf);
    }
    for (int k = 0; k < 4; ++k) y[i].qh[k] = uint8_t(qh >> (8 * k));  // little endian
  }
}

void quantize_row_q5_1_ref(const float* x, BlockQ5_1* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, x += kBlock) {
    float mn, mx;
    min_max(x, mn, mx);
    const float d = (mx - mn) / ((1 << 5) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(mn);
    uint32_t qh = 0;
    for (int j = 0; j < kHalf; ++j) {
      // Upstream does not clamp here; (x − min)·id ≤ 31 up to rounding, so +0.5 stays < 32.
      const int q0 = int((x[j] - mn) * id + 0.5f);
      const int q1 = int((x[j + kHalf] - mn) * id + 0.5f);
      y[i].qs[j] = uint8_t((q0 & 0x0F) | ((q1 & 0x0F) << 4));
      qh |= uint32_t((q0 >> 4) & 1) << j;
      qh |= uint32_t((q1 >> 4) & 1) << (j + kHalf);
    }
    for (int k = 0; k < 4; ++k) y[i].qh[k] = uint8_t(qh >> (8 * k));
  }
}

int iq4_nl_best_index(float x) {
  // Branch-free binary search over the 16 sorted levels: level j is chosen once x reaches the
  // midpoint of levels j−1 and j; comparing 2x with their (integer) sum keeps it exact.
  const float x2 = x + x;
  int idx = 0;
  for (int step = 8; step > 0; step >>= 1) {
    const int j = idx + step;
    if (x2 >= float(kIq4nlValues[j - 1] + kIq4nlValues[j])) idx = j;
  }
  return idx;
}

// ggml's quantize_row_iq4_nl_impl for one block of 32 (super block = block, no quant weights):
// weights w_j = x_j²; start from the scale that maps the largest-magnitude value to level 0
// (−127; with ntry > 0 the sign is flipped), take the weighted least-squares scale for the
// nearest levels; with ntry > 0 also try the 2·ntry+1 scales (itry − 127)/max, keep the one
// with the best Σwqx²/Σwq², and re-pick every level with the chosen scale. A block with
// max |x| < 1e-15 gets d = 0 and levels 0 (re-picked as level 8 when ntry > 0).
void quantize_row_iq4_nl_ref(const float* x, BlockIq4Nl* y, size_t n_blocks, int ntry) {
  const int8_t* values = kIq4nlValues;
  for (size_t i = 0; i < n_blocks; ++i, x += kBlock) {
    uint8_t L[kBlock];
    float weight[kBlock];
    for (int j = 0; j < kBlock; ++j) weight[j] = x[j] * x[j];
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kBlock; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    float scale = 0.0f;
    if (amax < 1e-15f) {  // GROUP_MAX_EPS
      std::memset(L, 0, sizeof L);
    } else {
      float d = ntry > 0 ? -max / values[0] : max / values[0];
      float id = 1 / d;
      float sumqx = 0, sumq2 = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float al = id * x[j];
        const int l = iq4_nl_best_index(al);
        L[j] = uint8_t(l);
        const float q = values[l];
        const float w = weight[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
      }
      d = sumq2 > 0 ? sumqx / sumq2 : 0.0f;
      float best = d * sumqx;
      for (int itry = -ntry; itry <= ntry; ++itry) {
        id = (itry + values[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < kBlock; ++j) {
          const float al = id * x[j];
          const int l = iq4_nl_best_index(al);
          const float q = values[l];
          const float w = weight[j];
          sumqx += w * q * x[j];
          sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
        }
      }
      scale = d;
    }
    y[i].d = f32_to_f16(scale);
    if (ntry > 0) {
      const float id = scale != 0.0f ? 1 / scale : 0;
      for (int j = 0; j < kBlock; ++j) L[j] = uint8_t(iq4_nl_best_index(id * x[j]));
    }
    for (int j = 0; j < kHalf; ++j) y[i].qs[j] = uint8_t(L[j] | (L[j + kHalf] << 4));
  }
}

// ---------------------------------------------------------------- dequantizers
void dequantize_row_q8_0_ref(const BlockQ8_0* b, float* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, y += kBlock) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j) y[j] = b[i].qs[j] * d;
  }
}

void dequantize_row_q4_0_ref(const BlockQ4_0* b, float* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, y += kBlock) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j) y[j] = (nibble(b[i].qs, j) - 8) * d;
  }
}

void dequantize_row_q4_1_ref(const BlockQ4_1* b, float* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, y += kBlock) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < kBlock; ++j) y[j] = nibble(b[i].qs, j) * d + m;
  }
}

void dequantize_row_q5_0_ref(const BlockQ5_0* b, float* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, y += kBlock) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j)
      y[j] = ((nibble(b[i].qs, j) | high_bit(b[i].qh, j)) - 16) * d;
  }
}

void dequantize_row_q5_1_ref(const BlockQ5_1* b, float* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, y += kBlock) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < kBlock; ++j) y[j] = (nibble(b[i].qs, j) | high_bit(b[i].qh, j)) * d + m;
  }
}

void dequantize_row_iq4_nl_ref(const BlockIq4Nl* b, float* y, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, y += kBlock) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j) y[j] = d * kIq4nlValues[nibble(b[i].qs, j)];
  }
}

// ---------------------------------------------------------------- dot products
// Per block: d · Σ_j q_j·c_j (+ m · Σ_j q_j for the formats with a min), summed over blocks.
float q8_0_dot_ref(const BlockQ8_0* b, const float* q, size_t n_blocks) {
  float s = 0;
  for (size_t i = 0; i < n_blocks; ++i, q += kBlock) {
    float a = 0;
    for (int j = 0; j < kBlock; ++j) a += q[j] * b[i].qs[j];
    s += h2f(b[i].d) * a;
  }
  return s;
}

float q4_0_dot_ref(const BlockQ4_0* b, const float* q, size_t n_blocks) {
  float s = 0;
  for (size_t i = 0; i < n_blocks; ++i, q += kBlock) {
    float a = 0;
    for (int j = 0; j < kBlock; ++j) a += q[j] * float(nibble(b[i].qs, j) - 8);
    s += h2f(b[i].d) * a;
  }
  return s;
}

float q4_1_dot_ref(const BlockQ4_1* b, const float* q, size_t n_blocks) {
  float s = 0;
  for (size_t i = 0; i < n_blocks; ++i, q += kBlock) {
    float a = 0, qsum = 0;
    for (int j = 0; j < kBlock; ++j) {
      a += q[j] * float(nibble(b[i].qs, j));
      qsum += q[j];
    }
    s += h2f(b[i].d) * a + h2f(b[i].m) * qsum;
  }
  return s;
}

float q5_0_dot_ref(const BlockQ5_0* b, const float* q, size_t n_blocks) {
  float s = 0;
  for (size_t i = 0; i < n_blocks; ++i, q += kBlock) {
    float a = 0;
    for (int j = 0; j < kBlock; ++j)
      a += q[j] * float((nibble(b[i].qs, j) | high_bit(b[i].qh, j)) - 16);
    s += h2f(b[i].d) * a;
  }
  return s;
}

float q5_1_dot_ref(const BlockQ5_1* b, const float* q, size_t n_blocks) {
  float s = 0;
  for (size_t i = 0; i < n_blocks; ++i, q += kBlock) {
    float a = 0, qsum = 0;
    for (int j = 0; j < kBlock; ++j) {
      a += q[j] * float(nibble(b[i].qs, j) | high_bit(b[i].qh, j));
      qsum += q[j];
    }
    s += h2f(b[i].d) * a + h2f(b[i].m) * qsum;
  }
  return s;
}

float iq4_nl_dot_ref(const BlockIq4Nl* b, const float* q, size_t n_blocks) {
  float s = 0;
  for (size_t i = 0; i < n_blocks; ++i, q += kBlock) {
    float a = 0;
    for (int j = 0; j < kBlock; ++j) a += q[j] * float(kIq4nlValues[nibble(b[i].qs, j)]);
    s += h2f(b[i].d) * a;
  }
  return s;
}

// ---------------------------------------------------------------- weighted accumulation
void q8_0_axpy_ref(const BlockQ8_0* b, float w, float* acc, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, acc += kBlock) {
    const float a = w * h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j) acc[j] += a * b[i].qs[j];
  }
}

void q4_0_axpy_ref(const BlockQ4_0* b, float w, float* acc, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, acc += kBlock) {
    const float a = w * h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j) acc[j] += a * float(nibble(b[i].qs, j) - 8);
  }
}

void q4_1_axpy_ref(const BlockQ4_1* b, float w, float* acc, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, acc += kBlock) {
    const float a = w * h2f(b[i].d), m = w * h2f(b[i].m);
    for (int j = 0; j < kBlock; ++j) acc[j] += a * float(nibble(b[i].qs, j)) + m;
  }
}

void q5_0_axpy_ref(const BlockQ5_0* b, float w, float* acc, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, acc += kBlock) {
    const float a = w * h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j)
      acc[j] += a * float((nibble(b[i].qs, j) | high_bit(b[i].qh, j)) - 16);
  }
}

void q5_1_axpy_ref(const BlockQ5_1* b, float w, float* acc, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, acc += kBlock) {
    const float a = w * h2f(b[i].d), m = w * h2f(b[i].m);
    for (int j = 0; j < kBlock; ++j)
      acc[j] += a * float(nibble(b[i].qs, j) | high_bit(b[i].qh, j)) + m;
  }
}

void iq4_nl_axpy_ref(const BlockIq4Nl* b, float w, float* acc, size_t n_blocks) {
  for (size_t i = 0; i < n_blocks; ++i, acc += kBlock) {
    const float a = w * h2f(b[i].d);
    for (int j = 0; j < kBlock; ++j) acc[j] += a * float(kIq4nlValues[nibble(b[i].qs, j)]);
  }
}

}  // namespace tq::ggml
