// Programmatic dependent launch (sm_90 and later). A kernel launched with LaunchPdl may be
// scheduled while the kernel before it in the stream is still finishing, so that its launch and
// prologue overlap the other's tail instead of leaving the GPU idle between the short kernels of
// a decode step. Such a kernel calls PdlLaunchDependents() (the next kernel may then be scheduled
// too) and PdlWait() before it touches memory that an earlier kernel of the stream writes or
// reads; before PdlWait() it may only read memory no kernel writes (the weights). PdlWait()
// returns once the previous kernel has completed and its writes are visible; a kernel launched
// without the attribute, or on an older GPU, runs after the previous one as usual and both calls
// do nothing. FLUXATTN_CUDA_PDL=0 in the environment launches everything without it.
#pragma once

#include <cuda_runtime.h>

namespace fluxattn::kernels::cuda {

__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void PdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether launches use the attribute: the current device has compute capability 9.0 or more and
// FLUXATTN_CUDA_PDL is not "0" (decided once per process).
bool PdlEnabled();

template <typename... Params, typename... Args>
cudaError_t LaunchPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                      cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = PdlEnabled() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

}  // namespace fluxattn::kernels::cuda
