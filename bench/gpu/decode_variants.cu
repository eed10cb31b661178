// Experimental decode modes (see decode_variants.h). Each is the production kernel template
// instantiated with a mode struct of its own: a lookup policy or a register cap the library
// does not ship. Dropped earlier experiments (an 8-bit query, a streaming-only fold) were last
// compiled at commit 4a9e33a (src/cuda/decode_kernels.cuh, kTab = 0 and kDiag = 4).
#include "decode_variants.h"
#include "cuda/decode_launch.cuh"
#include "cuda/dispatch.h"

namespace tq::cuda::bench {
namespace {

// The turbo3 code words fed to the int8 tensor cores unchanged (no prmt lookups).
struct RawLookup {
  template <bool kOne>
  __device__ __forceinline__ static void i8(const uint32_t* w, const uint32_t (&)[2],
                                            const uint32_t (&)[2][2], uint32_t (&k1)[8],
                                            uint32_t (&k2)[8]) {
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      k1[r] = w[r % 3];
      k2[r] = w[(r + 1) % 3];
    }
  }
};

using NoLookupsMode = DecodeMode<true, T3Tables::kOneByte, true, 3, RawLookup, RawLookup>;
using Regs128Mode = DecodeMode<true, T3Tables::kOneByte, true, 4>;

// One launcher per variant (a GpuCache caches the occupancy each launcher reports).
template <class Mode>
bool variant_launcher(Fmt kf, Fmt vf, int D, const DecodeFlags& flags, const DecodeParams* dp,
                      dim3 grid, cudaStream_t st, DecodeKernelInfo* info) {
  constexpr Fmt T3 = Fmt::kTurbo3;
  if (kf == T3 && vf == T3 && D == 128 && flags.stream && !flags.exact_tables && flags.g4)
    return run_decode<T3, T3, 128, Mode>(dp, grid, st, info);
  return launch_decode_production(kf, vf, D, flags, dp, grid, st, info);
}

}  // namespace

const char* variant_name(DecodeVariant v) {
  switch (v) {
    case DecodeVariant::kNoLookups: return "no lookups (diagnostic, wrong by design)";
    case DecodeVariant::kRegs128: return "<= 128 registers";
    default: return "production";
  }
}

void use_decode_variant(DecodeVariant v) {
  switch (v) {
    case DecodeVariant::kNoLookups: set_decode_launcher(variant_launcher<NoLookupsMode>); break;
    case DecodeVariant::kRegs128: set_decode_launcher(variant_launcher<Regs128Mode>); break;
    default: set_decode_launcher(nullptr);
  }
}

}  // namespace tq::cuda::bench
