#include <cstdlib>
#include <cstring>

#include "pdl.cuh"

namespace fluxattn::kernels::cuda {

bool PdlEnabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("FLUXATTN_CUDA_PDL");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return enabled;
}

}  // namespace fluxattn::kernels::cuda
