// The plugin ABI. Each plugin shared library exports one C symbol,
// `fluxattn_plugin_descriptor`, returning a pointer to a PluginDescriptor that lives as long as
// the library. The descriptor starts with fixed-width version fields so a loader of any version
// can read them before touching anything else, and it only ever grows at the end (struct_size
// tells the loader which members exist).
//
// Rules for both sides:
// - Nothing throws across the boundary: create/destroy and every exported function are noexcept
//   and report failure through absl::Status.
// - Objects made by `create` are destroyed with the same library's `destroy`, before the library
//   is unloaded (the loader's handles enforce this).
// - A loader accepts a plugin only when abi_major matches and the build id is compatible (same
//   compiler family, C++ ABI, Abseil LTS and core major version); otherwise it refuses with one
//   line naming the file and both versions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/params.h"
#include "fluxattn/version.h"

#define FLUXATTN_PLUGIN_ABI_MAJOR 2
#define FLUXATTN_PLUGIN_ABI_MINOR 0
#define FLUXATTN_PLUGIN_ENTRY_SYMBOL "fluxattn_plugin_descriptor"

namespace fluxattn {

enum class PluginKind : uint32_t { kAttentionBackend = 1, kRoutingPolicy = 2 };

const char* PluginKindName(PluginKind kind);  // "attention backend" / "routing policy"

struct PluginDescriptor {
  // --- ABI 1.0 layout (kept in ABI 2 so any loader can read the version): never reorder, only
  // append. ---
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size;  // sizeof(PluginDescriptor) as the plugin was compiled
  PluginKind kind;
  const char* name;      // the name configs use, e.g. "streaming"
  const char* version;   // the plugin's own version, e.g. "1.0.0"
  const char* build_id;  // FLUXATTN_BUILD_ID as the plugin was compiled
  const char* summary;   // one line for `fluxattn plugins`
  // Parameters the plugin accepts; the vector lives as long as the library.
  const std::vector<ParamSpec>* (*param_specs)() noexcept;
  // Creates an instance from validated parameters: an AttentionBackend* for kAttentionBackend,
  // a RoutingPolicy* for kRoutingPolicy. On failure returns null and sets *status.
  void* (*create)(const ParamValues* params, absl::Status* status) noexcept;
  void (*destroy)(void* object) noexcept;
};

namespace plugin_internal {

// Wraps `T::Create(const ParamValues&) -> absl::StatusOr<std::unique_ptr<T>>` so no exception
// crosses the boundary.
template <typename T, typename Interface>
void* CreateNoexcept(const ParamValues* params, absl::Status* status) noexcept {
  try {
    absl::StatusOr<std::unique_ptr<T>> made = T::Create(*params);
    if (!made.ok()) {
      *status = made.status();
      return nullptr;
    }
    *status = absl::OkStatus();
    return static_cast<Interface*>(made->release());
  } catch (const std::exception& e) {
    *status = absl::InternalError(e.what());
  } catch (...) {
    *status = absl::InternalError("unknown exception while creating a plugin instance");
  }
  return nullptr;
}

template <typename Interface>
void DestroyNoexcept(void* object) noexcept {
  delete static_cast<Interface*>(object);
}

// The specs live in a function-local static of the plugin library, destroyed when the library
// is unloaded (a heap copy would outlive its only pointer and read as a leak).
template <typename T>
const std::vector<ParamSpec>* SpecsNoexcept() noexcept {
  try {
    static const std::vector<ParamSpec> specs = T::Params();
    return &specs;
  } catch (...) {
    static const std::vector<ParamSpec> none;
    return &none;
  }
}

}  // namespace plugin_internal
}  // namespace fluxattn

#define FLUXATTN_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

// Defines the descriptor of a plugin whose class `Class` has
//   static std::vector<fluxattn::ParamSpec> Params();
//   static absl::StatusOr<std::unique_ptr<Class>> Create(const fluxattn::ParamValues&);
// `kind` is fluxattn::PluginKind::k..., `Interface` the matching interface class.
#define FLUXATTN_DEFINE_PLUGIN(kind_, Interface, Class, name_, version_, summary_)          \
  FLUXATTN_PLUGIN_EXPORT const ::fluxattn::PluginDescriptor* fluxattn_plugin_descriptor() { \
    static const ::fluxattn::PluginDescriptor descriptor = {                                \
        FLUXATTN_PLUGIN_ABI_MAJOR,                                                          \
        FLUXATTN_PLUGIN_ABI_MINOR,                                                          \
        static_cast<uint32_t>(sizeof(::fluxattn::PluginDescriptor)),                        \
        kind_,                                                                              \
        name_,                                                                              \
        version_,                                                                           \
        FLUXATTN_BUILD_ID,                                                                  \
        summary_,                                                                           \
        &::fluxattn::plugin_internal::SpecsNoexcept<Class>,                                 \
        &::fluxattn::plugin_internal::CreateNoexcept<Class, Interface>,                     \
        &::fluxattn::plugin_internal::DestroyNoexcept<Interface>,                           \
    };                                                                                      \
    return &descriptor;                                                                     \
  }

#define FLUXATTN_DEFINE_ATTENTION_PLUGIN(Class, name, version, summary)                           \
  FLUXATTN_DEFINE_PLUGIN(::fluxattn::PluginKind::kAttentionBackend, ::fluxattn::AttentionBackend, \
                         Class, name, version, summary)

#define FLUXATTN_DEFINE_ROUTING_PLUGIN(Class, name, version, summary)                              \
  FLUXATTN_DEFINE_PLUGIN(::fluxattn::PluginKind::kRoutingPolicy, ::fluxattn::RoutingPolicy, Class, \
                         name, version, summary)
