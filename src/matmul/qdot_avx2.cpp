// turboquant — AVX2 kernels of the quantized products (qdot.h; the code: qdot_simd.h).
#include "matmul/qdot.h"

#define TQ_MM_VNNI 0
#include "matmul/qdot_simd.h"

namespace tq::mm {
const QKernels& qkernels_avx2() {
  static const QKernels k{simd_tile, simd_quantize};
  return k;
}
}  // namespace tq::mm
