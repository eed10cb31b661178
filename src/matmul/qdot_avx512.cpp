// turboquant — AVX-512 VNNI kernels of the quantized products (qdot.h). Placeholder until the
// SIMD kernels land: the scalar references.
#include "matmul/qdot.h"

namespace tq::mm {
const QKernels& qkernels_avx512() { return qkernels_ref(); }
}  // namespace tq::mm
