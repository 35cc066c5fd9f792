// Versions of the core library and the build id that decides plugin binary compatibility.
#pragma once

#include <string>

#include "absl/base/config.h"

#define FLUXATTN_CORE_VERSION_MAJOR 0
#define FLUXATTN_CORE_VERSION_MINOR 1
#define FLUXATTN_CORE_VERSION_PATCH 0

#define FLUXATTN_STRINGIFY_INNER_(x) #x
#define FLUXATTN_STRINGIFY_(x) FLUXATTN_STRINGIFY_INNER_(x)

#if defined(__clang__)
#define FLUXATTN_COMPILER_ID_ "clang-" FLUXATTN_STRINGIFY_(__clang_major__)
#elif defined(__GNUC__)
#define FLUXATTN_COMPILER_ID_ "gcc-" FLUXATTN_STRINGIFY_(__GNUC__)
#else
#define FLUXATTN_COMPILER_ID_ "unknown"
#endif

#if defined(_GLIBCXX_USE_CXX11_ABI)
#define FLUXATTN_CXXABI_ID_ "cxx11abi-" FLUXATTN_STRINGIFY_(_GLIBCXX_USE_CXX11_ABI)
#else
#define FLUXATTN_CXXABI_ID_ "cxxabi-other"
#endif

#if defined(ABSL_LTS_RELEASE_VERSION)
#define FLUXATTN_ABSL_ID_ "absl-" FLUXATTN_STRINGIFY_(ABSL_LTS_RELEASE_VERSION)
#else
#define FLUXATTN_ABSL_ID_ "absl-head"
#endif

// Build id compiled into whatever includes this header: "core-0;gcc-12;cxx11abi-1;absl-20220623".
// Fields are ';'-separated key-value tokens; the loader compares them field by field.
#define FLUXATTN_BUILD_ID                                                            \
  "core-" FLUXATTN_STRINGIFY_(FLUXATTN_CORE_VERSION_MAJOR) ";" FLUXATTN_COMPILER_ID_ \
                                                           ";" FLUXATTN_CXXABI_ID_   \
                                                           ";" FLUXATTN_ABSL_ID_

namespace fluxattn {

inline constexpr const char* kCoreVersion =
    FLUXATTN_STRINGIFY_(FLUXATTN_CORE_VERSION_MAJOR) "." FLUXATTN_STRINGIFY_(
        FLUXATTN_CORE_VERSION_MINOR) "." FLUXATTN_STRINGIFY_(FLUXATTN_CORE_VERSION_PATCH);

// The build id the core library itself was compiled with (plus ";cuda-X.Y" or ";cuda-none").
std::string CurrentBuildId();

}  // namespace fluxattn
