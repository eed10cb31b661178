// turboquant GPU runtime — plain scalar references of the kernels in ops.h (same functions,
// same bf16 rounding points; sums in double). Used by tests/cuda and the CPU reference forward.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/half.h"
#include "gpu/linear.h"
#include "gpu/ops.h"

namespace tq::gpu::ref {

inline float bf16r(float x) { return bf16_to_f32(f32_to_bf16(x)); }

inline void init_bf16(uint16_t* w, size_t n, uint64_t seed, float scale, float offset) {
  for (size_t i = 0; i < n; ++i) w[i] = f32_to_bf16(offset + scale * hash_uniform(seed, i));
}
inline void init_f32(float* w, size_t n, uint64_t seed, float scale, float offset) {
  for (size_t i = 0; i < n; ++i) w[i] = bf16r(offset + scale * hash_uniform(seed, i));
}

inline void embed(const uint16_t* embd, const int* tokens, float* x, int n, int E) {
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < E; ++j) x[size_t(t) * E + j] = bf16_to_f32(embd[size_t(tokens[t]) * E + j]);
}

inline void rmsnorm_bf16(const float* x, const float* w, uint16_t* y, int n, int E, float eps) {
  for (int t = 0; t < n; ++t) {
    const float* a = x + size_t(t) * E;
    double ss = 0;
    for (int j = 0; j < E; ++j) ss += double(a[j]) * a[j];
    const double r = 1.0 / std::sqrt(ss / E + eps);
    for (int j = 0; j < E; ++j) y[size_t(t) * E + j] = f32_to_bf16(float(a[j] * r * w[j]));
  }
}

inline void qkv_rope(const QkvArgs& a) {
  const int D = a.D, P = D / 2, W = (a.Hq + 2 * a.Hkv) * D;
  for (int t = 0; t < a.n; ++t)
    for (int h = 0; h < a.Hq + 2 * a.Hkv; ++h)
      for (int i = 0; i < P; ++i) {
        const int ia = a.neox ? i : 2 * i, ib = a.neox ? i + P : 2 * i + 1;
        const float* row = a.qkv + size_t(t) * W + size_t(h) * D;
        float x0 = row[ia], x1 = row[ib];
        if (a.bias) {
          x0 += a.bias[size_t(h) * D + ia];
          x1 += a.bias[size_t(h) * D + ib];
        }
        if (h < a.Hq + a.Hkv) {
          const double th = double(a.pos[t]) * double(a.freq_scale) * double(a.inv_freq[i]);
          const float c = float(std::cos(th)), s = float(std::sin(th));
          const float r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
          x0 = r0;
          x1 = r1;
        }
        if (h < a.Hq) {
          a.q[(size_t(t) * a.Hq + h) * D + ia] = x0;
          a.q[(size_t(t) * a.Hq + h) * D + ib] = x1;
        } else {
          const bool is_v = h >= a.Hq + a.Hkv;
          const int kh = h - a.Hq - (is_v ? a.Hkv : 0);
          uint16_t* o = (is_v ? a.v : a.k) + (size_t(t) * a.Hkv + kh) * D;
          o[ia] = f32_to_bf16(x0);
          o[ib] = f32_to_bf16(x1);
        }
      }
}

inline float silu_mul(float g, float u) { return float(g / (1.0 + std::exp(-double(g))) * u); }

inline void swiglu_bf16(const float* gu, uint16_t* out, int n, int F) {
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < F; ++j)
      out[size_t(t) * F + j] = f32_to_bf16(silu_mul(gu[size_t(t) * 2 * F + j],
                                                    gu[size_t(t) * 2 * F + F + j]));
}

// The sampling score of logit j in row r at step (see launch_sample).
inline float sample_score(float logit, int r, int j, float temp, uint64_t seed, int step) {
  if (temp <= 0.f) return logit;
  const uint64_t base = seed ^ mix64((uint64_t(step) << 32) | uint32_t(r));
  const float u = 0.5f * (hash_uniform(base, uint64_t(j)) + 1.f) + 0.5f / 16777216.f;
  return logit / temp - std::log(-std::log(u));
}

inline void sample(const float* logits, int n, int V, float temp, uint64_t seed, int step,
                   int* out) {
  for (int r = 0; r < n; ++r) {
    float best = -FLT_MAX;
    int bi = -1;
    for (int j = 0; j < V; ++j) {
      const float s = sample_score(logits[size_t(r) * V + j], r, j, temp, seed, step);
      if (s > best) {
        best = s;
        bi = j;
      }
    }
    out[r] = bi;
  }
}

// Y (n × out) = X (n × in) · Wᵀ + beta·Y, W row-major [out][in] (bf16), X bf16, sums in double.
inline void linear_bf16(const uint16_t* X, int n, const uint16_t* W, int in, int out, float* Y,
                        float beta) {
  std::vector<float> w(static_cast<size_t>(in));
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) w[i] = bf16_to_f32(W[size_t(o) * in + i]);
    for (int t = 0; t < n; ++t) {
      double s = 0;
      const uint16_t* x = X + size_t(t) * in;
      for (int i = 0; i < in; ++i) s += double(bf16_to_f32(x[i])) * w[i];
      float& y = Y[size_t(t) * out + o];
      y = float(s + (beta != 0.f ? double(beta) * y : 0.0));
    }
  }
}

// The small-batch linear layer (linear.h) on host pointers: the same bf16 rounding of its
// inputs (a normalised input's row scale from the partial sums, as the kernel takes it), sums
// in double; ss_out per block of linear_ss_blocks(a) in block order.
inline void linear_small(const LinearArgs& a) {
  const int n = a.n, in = a.in, out = a.out;
  std::vector<float> x(size_t(n) * in), w(in);
  for (int b = 0; b < n; ++b) {
    float r = 1.f;
    if (a.norm_w) {
      double ss = 0;
      for (int p = 0; p < a.ss_blocks; ++p) ss += a.ss_parts[size_t(p) * kLinearMaxRows + b];
      r = float(1.0 / std::sqrt(double(float(ss) / float(in) + a.eps)));
    }
    for (int k = 0; k < in; ++k) {
      const size_t i = size_t(b) * in + k;
      x[i] = a.x_bf16 ? bf16_to_f32(a.x_bf16[i])
                      : bf16r(a.norm_w ? a.x_f32[i] * r * a.norm_w[k] : a.x_f32[i]);
    }
  }
  std::vector<double> acc(size_t(n) * out);
  for (int o = 0; o < out; ++o) {
    for (int k = 0; k < in; ++k) w[k] = bf16_to_f32(a.W[size_t(o) * in + k]);
    for (int b = 0; b < n; ++b) {
      double s = 0;
      for (int k = 0; k < in; ++k) s += double(x[size_t(b) * in + k]) * w[k];
      acc[size_t(b) * out + o] = s;
    }
  }
  if (a.epi == LinearArgs::kSwiglu) {
    const int F = out / 2;
    for (int b = 0; b < n; ++b)
      for (int j = 0; j < F; ++j)
        a.h[size_t(b) * F + j] = f32_to_bf16(
            silu_mul(float(acc[size_t(b) * out + j]), float(acc[size_t(b) * out + F + j])));
    return;
  }
  for (int b = 0; b < n; ++b)
    for (int o = 0; o < out; ++o) {
      float& y = a.y[size_t(b) * out + o];
      y = float(acc[size_t(b) * out + o] + (a.epi == LinearArgs::kResidual ? double(y) : 0.0));
    }
  if (a.epi == LinearArgs::kResidual && a.ss_out) {
    const int R = out / linear_ss_blocks(a);
    for (int p = 0; p < out / R; ++p)
      for (int b = 0; b < kLinearMaxRows; ++b) {
        double s = 0;
        if (b < n)
          for (int r = 0; r < R; ++r)
            s += double(a.y[size_t(b) * out + p * R + r]) * a.y[size_t(b) * out + p * R + r];
        a.ss_out[size_t(p) * kLinearMaxRows + b] = float(s);
      }
  }
}

}  // namespace tq::gpu::ref
