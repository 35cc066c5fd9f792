#include "fluxattn/version.h"

#include "absl/strings/str_cat.h"

#if defined(FLUXATTN_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace fluxattn {

std::string CurrentBuildId() {
#if defined(FLUXATTN_WITH_CUDA)
  return absl::StrCat(FLUXATTN_BUILD_ID, ";cuda-", CUDART_VERSION / 1000, ".",
                      (CUDART_VERSION % 1000) / 10);
#else
  return absl::StrCat(FLUXATTN_BUILD_ID, ";cuda-none");
#endif
}

}  // namespace fluxattn
