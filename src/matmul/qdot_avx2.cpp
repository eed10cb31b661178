// turboquant — AVX2 kernels of the quantized products (qdot.h). Placeholder until the SIMD
// kernels land: the scalar references.
#include "matmul/qdot.h"

namespace tq::mm {
const QKernels& qkernels_avx2() { return qkernels_ref(); }
}  // namespace tq::mm
