// Finds, loads and instantiates plugins (Boost.DLL). Search paths are explicit: directories from
// the config, then FLUXATTN_PLUGIN_PATH (':'-separated), then the install/build plugin dir next
// to the running executable (<exe>/../lib/fluxattn/plugins).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/params.h"
#include "fluxattn/plugin_abi.h"
#include "fluxattn/routing_policy.h"

namespace fluxattn {

class PluginLibrary;  // one loaded shared library; objects hold it alive

// Deleter that destroys an object through its plugin's `destroy` and then releases the library.
template <typename T>
struct PluginObjectDeleter {
  std::shared_ptr<PluginLibrary> library;
  void (*destroy)(void*) noexcept = nullptr;
  void operator()(T* object) const {
    if (object != nullptr && destroy != nullptr) destroy(object);
  }
};
template <typename T>
using PluginPtr = std::unique_ptr<T, PluginObjectDeleter<T>>;

struct PluginInfo {
  std::string name;
  PluginKind kind = PluginKind::kAttentionBackend;
  std::string version;
  std::string build_id;
  std::string summary;
  std::string path;  // the .so it came from
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
  std::vector<ParamSpec> params;
};

// A plugin provided by the running process instead of a shared library (routing policies written
// in Python, test doubles). `create` makes an instance from validated parameters (`info.params`
// describes them) and `destroy` deletes one; both must stay valid while instances live.
struct InProcessPlugin {
  PluginInfo info;  // name, kind, params, summary; `path` says where the plugin comes from
  std::function<absl::StatusOr<void*>(const ParamValues& params)> create;
  void (*destroy)(void*) noexcept = nullptr;
};

// A file in a search directory that looked like a plugin but could not be loaded.
struct PluginLoadFailure {
  std::string path;
  absl::Status status;
};

class PluginRegistry {
 public:
  PluginRegistry();
  ~PluginRegistry();

  // The default search directories: FLUXATTN_PLUGIN_PATH entries, then the executable's
  // ../lib/fluxattn/plugins and the install prefix's plugin dir.
  static std::vector<std::string> DefaultSearchPath();

  // Scans `dir` (not recursively) for libfluxattn_*.so and registers every plugin found; files
  // that fail to load are kept as failures and reported when their name is asked for. A name
  // already registered from an earlier directory wins (earlier paths take precedence).
  absl::Status ScanDirectory(const std::string& dir);
  // Scans `first_dirs` (each must exist), then DefaultSearchPath() (missing ones are skipped).
  absl::Status ScanSearchPath(const std::vector<std::string>& first_dirs);
  // Loads one file explicitly; the error names the path and what was wrong.
  absl::StatusOr<const PluginInfo*> LoadFile(const std::string& path);

  // Registers a plugin of the running process; fails when the name is taken or a function is
  // missing. Find and Create treat it like a loaded file.
  absl::StatusOr<const PluginInfo*> RegisterInProcess(InProcessPlugin plugin);

  std::vector<PluginInfo> List() const;
  const std::vector<PluginLoadFailure>& failures() const { return failures_; }
  // Every directory scanned so far, in order (for "searched: ..." in errors and listings).
  const std::vector<std::string>& searched_directories() const { return searched_dirs_; }
  // The plugin `name` of kind `kind`; errors: unknown name (listing the known ones), a failed
  // load of a matching file, or a kind mismatch.
  absl::StatusOr<const PluginInfo*> Find(const std::string& name, PluginKind kind) const;

  // Instances from already-validated parameters (see ValidateParams).
  absl::StatusOr<PluginPtr<AttentionBackend>> CreateBackend(const std::string& name,
                                                            const ParamValues& params) const;
  absl::StatusOr<PluginPtr<RoutingPolicy>> CreatePolicy(const std::string& name,
                                                        const ParamValues& params) const;

 private:
  struct Entry;
  absl::StatusOr<void*> Create(const std::string& name, PluginKind kind, const ParamValues& params,
                               std::shared_ptr<PluginLibrary>* library,
                               void (**destroy)(void*) noexcept) const;
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  std::vector<PluginLoadFailure> failures_;
  std::vector<std::string> searched_dirs_;
};

}  // namespace fluxattn
