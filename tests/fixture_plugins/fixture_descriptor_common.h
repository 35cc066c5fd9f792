// Hand-written descriptors for the loader's refusal tests: each differs from a valid one in
// exactly one field. Creation is never reached, so create/destroy only report failure.
#pragma once

#include "fluxattn/plugin_abi.h"

namespace fluxattn::fixtures {

inline const std::vector<ParamSpec>* NoSpecs() noexcept {
  static const std::vector<ParamSpec> specs;
  return &specs;
}
inline void* NeverCreate(const ParamValues*, absl::Status* status) noexcept {
  *status = absl::InternalError("this fixture must never be instantiated");
  return nullptr;
}
inline void NeverDestroy(void*) noexcept {}

}  // namespace fluxattn::fixtures

#define FLUXATTN_FIXTURE_DESCRIPTOR(abi_major_, kind_, name_, build_id_)                     \
  FLUXATTN_FIXTURE_DESCRIPTOR_SIZED(abi_major_, sizeof(::fluxattn::PluginDescriptor), kind_, \
                                    name_, build_id_)

#define FLUXATTN_FIXTURE_DESCRIPTOR_SIZED(abi_major_, size_, kind_, name_, build_id_)       \
  FLUXATTN_PLUGIN_EXPORT const ::fluxattn::PluginDescriptor* fluxattn_plugin_descriptor() { \
    static const ::fluxattn::PluginDescriptor descriptor = {                                \
        abi_major_,                                                                         \
        0,                                                                                  \
        static_cast<uint32_t>(size_),                                                       \
        kind_,                                                                              \
        name_,                                                                              \
        "1.0.0",                                                                            \
        build_id_,                                                                          \
        "refusal fixture",                                                                  \
        &::fluxattn::fixtures::NoSpecs,                                                     \
        &::fluxattn::fixtures::NeverCreate,                                                 \
        &::fluxattn::fixtures::NeverDestroy,                                                \
    };                                                                                      \
    return &descriptor;                                                                     \
  }
