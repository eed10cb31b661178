// turboquant GPU runtime — programmatic dependent launch (sm_90) for the runtime's kernels.
// A kernel launched with PdlLaunch may start while the previous kernel in the stream is still
// running: before pdl_wait() it may only read data no kernel of the forward pass writes (the
// weights); pdl_wait() returns once the previous kernel has completed and its writes are
// visible. pdl_trigger() lets the next kernel launch early (once every block has triggered or
// exited). Without the launch attribute, or below sm_90, both are no-ops.
#pragma once
#include <cuda_runtime.h>

namespace tq::gpu {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A launch configuration with the programmatic-serialisation attribute when pdl is set.
struct PdlLaunch {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  PdlLaunch(dim3 grid, dim3 block, void* stream, bool pdl) {
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = cudaStream_t(stream);
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
  }
  PdlLaunch(const PdlLaunch&) = delete;
};

}  // namespace tq::gpu
