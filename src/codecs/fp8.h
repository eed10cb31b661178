// OCP 8-bit float E4M3FN (OCP "OFP8" spec; NVIDIA __nv_fp8_e4m3, PyTorch float8_e4m3fn):
// 1 sign, 4 exponent bits (bias 7), 3 mantissa bits, no infinities, NaN = S.1111.111,
// largest finite ±448 (S.1111.110), smallest normal 2^-6, subnormals m·2^-9 (m = 1..7).
// Scalar reference conversions; the encoder rounds to nearest even and saturates to ±448
// (cvt.rn.satfinite semantics). Inputs must be finite (callers check).
#pragma once
#include <cmath>
#include <cstdint>

namespace tq {

inline uint8_t f32_to_e4m3fn_sat(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (!(a < 448.0f)) return sign | 0x7E;  // saturate (also what a > 448 would round to)
  if (a == 0.0f) return sign;
  int e2;
  std::frexp(a, &e2);  // a = f·2^e2, f ∈ [0.5, 1)  →  ⌊log2 a⌋ = e2 − 1
  const int e = e2 - 1;
  if (e < -6) {
    // Subnormal range: code = round(a / 2^-9); 8 rounds up into the smallest normal, whose
    // code is also 8 (exponent field 1, mantissa 0). Scaling by 2^9 is exact.
    return sign | uint8_t(std::nearbyint(std::ldexp(a, 9)));
  }
  // Normal: significand in 1/8 steps, m = round(a / 2^(e−3)) ∈ [8, 16]; m = 16 carries into the
  // exponent, which the addition below does by itself. nearbyint rounds half to even.
  const int m = int(std::nearbyint(std::ldexp(a, 3 - e)));
  int code = ((e + 7) << 3) + (m - 8);
  if (code > 0x7E) code = 0x7E;
  return sign | uint8_t(code);
}

inline float e4m3fn_to_f32(uint8_t b) {
  const int e = (b >> 3) & 0x0F, m = b & 0x07;
  float v;
  if (e == 0x0F && m == 0x07) v = NAN;
  else if (e == 0) v = std::ldexp(float(m), -9);
  else v = std::ldexp(float(8 + m), e - 10);  // (1 + m/8)·2^(e−7)
  return (b & 0x80) ? -v : v;
}

}  // namespace tq
