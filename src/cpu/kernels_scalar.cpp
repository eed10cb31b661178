// Scalar level of the CPU kernels: the generic kernels of kernels_impl.h with W = 1.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/bitpack.h"
#include "core/half.h"
#include "cpu/dispatch.h"

namespace tq::cpu {
namespace scalar_level {

constexpr Level kLevel = Level::kScalar;
constexpr int W = 1;
using VF = float;
inline VF vzero() { return 0.0f; }
inline VF vset1(float a) { return a; }
inline VF vloadf(const float* p) { return *p; }
inline void vstoref(float* p, VF v) { *p = v; }
inline VF vfma(VF a, VF b, VF c) { return a * b + c; }
inline VF vmul(VF a, VF b) { return a * b; }
inline VF vadd(VF a, VF b) { return a + b; }
inline VF vsub(VF a, VF b) { return a - b; }
inline VF vmax(VF a, VF b) { return std::max(a, b); }
inline float vhmax(VF a) { return a; }
inline float vhsum(VF a) { return a; }
inline VF vexp(VF a) { return std::exp(a); }
inline float load_half(const uint8_t* p) { return load_f16(p); }  // core/half.h
inline void store_half(uint8_t* p, float v) { store_f16(p, v); }
inline VF vload_f16(const uint8_t* p) { return load_half(p); }
inline VF vload_i8(const uint8_t* p) { return float(int8_t(*p)); }
inline VF vload_nib(const uint8_t* p, int s) { return float(((*p >> s) & 15) - 8); }
struct Lut {
  const float* t;
  Lut(const float* table, int) : t(table) {}
};
// With W = 1 a "chunk" is one code; p points at the row's codes, c is the code index.
template <int B>
inline VF vdecode1(const Lut& l, const uint8_t* codes, int c) {
  const int pos = c * B, b0 = pos >> 3, sh = pos & 7;
  uint32_t v = uint32_t(codes[b0]) >> sh;
  if (sh + B > 8) v |= uint32_t(codes[b0 + 1]) << (8 - sh);
  return l.t[v & ((1u << B) - 1)];
}
inline void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  out[0] = a;
  out[1] = b;
  out[2] = c;
  out[3] = d;
}
inline double vnorm2(const float* x, int d) {
  double s = 0;
  for (int j = 0; j < d; ++j) s += double(x[j]) * x[j];
  return s;
}
inline void pack_codes(const uint8_t* idx, int d, int bits, uint8_t* out) {
  pack_bits(idx, size_t(d), bits, out);
}
inline void vquantize(const float* y, int d, const float* bnd, int nb, uint8_t* idx) {
  for (int j = 0; j < d; ++j) {
    int k = 0;
    while (k < nb && bnd[k] < y[j]) ++k;
    idx[j] = uint8_t(k);
  }
}

#define TQ_KERNEL_W1 1
#include "cpu/kernels_impl.h"

}  // namespace scalar_level

const Kernels& kernels_scalar() { return scalar_level::kTable; }

}  // namespace tq::cpu
