// turboquant — AVX-512 VNNI kernels of the quantized products (qdot.h; the code: qdot_simd.h):
// the 256-bit kernels with vpdpbusd / vpdpwssd (AVX-512 VL + VNNI) for the integer products.
// Reached only when the CPU has AVX-512 VNNI (avx512_vnni_available()).
#include <immintrin.h>

#include "matmul/qdot.h"

#pragma GCC target("avx512vnni")
#define TQ_MM_VNNI 1
#include "matmul/qdot_simd.h"

namespace tq::mm {
const QKernels& qkernels_avx512() {
  static const QKernels k{simd_tile, simd_quantize};
  return k;
}
}  // namespace tq::mm
