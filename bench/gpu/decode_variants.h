// Experimental decode kernels for the benchmark's variant loop (decode_variants.cu): they run
// on a production cache's data through the decode-launcher hook (src/cuda/dispatch.h), so the
// library itself compiles none of them.
#pragma once

namespace tq::cuda::bench {

enum class DecodeVariant {
  kProduction,  // the library's kernels
  // turbo3 (K and V), D = 128, stream mode, G ≤ 4 only; other calls run the production kernels:
  kNoLookups,   // timing diagnostic, results wrong by design: the code words go to the tensor
                // cores as they are (the floor of the structure without the codebook lookups)
  kRegs128,     // the production mode at ≤ 128 registers (4 CTAs/SM instead of 3)
};
const char* variant_name(DecodeVariant v);
// Route the process's decode launches through this variant (kProduction: the library's own).
void use_decode_variant(DecodeVariant v);

}  // namespace tq::cuda::bench
