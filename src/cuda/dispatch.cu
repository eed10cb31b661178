// Head-dim dispatch of the kernel launches and the (benchmark-only) decode launcher hook.
#include "cuda/dispatch.h"

namespace tq::cuda {

namespace {
DecodeLauncher g_decode_launcher = nullptr;
}

bool launch_decode_production(Fmt kf, Fmt vf, int D, const DecodeFlags& flags,
                              const DecodeParams* dp, dim3 grid, cudaStream_t st,
                              DecodeKernelInfo* info) {
  TQ_DISPATCH_HEAD_DIM(D, HD, { return launch_decode_d<HD>(kf, vf, flags, dp, grid, st, info); })
  return false;
}

void set_decode_launcher(DecodeLauncher launcher) { g_decode_launcher = launcher; }
DecodeLauncher decode_launcher() {
  return g_decode_launcher ? g_decode_launcher : launch_decode_production;
}

bool launch_append(Fmt kf, Fmt vf, int D, const AppendParams& p, dim3 grid, cudaStream_t st) {
  TQ_DISPATCH_HEAD_DIM(D, HD, { return launch_append_d<HD>(kf, vf, p, grid, st); })
  return false;
}

}  // namespace tq::cuda
