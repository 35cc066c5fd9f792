#include "fluxattn/plugin_registry.h"

#include <dlfcn.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fluxattn/status.h"
#include "fluxattn/version.h"

namespace fluxattn {

namespace {
// "an attention backend" / "a routing policy"
std::string WithArticle(PluginKind kind) {
  return absl::StrCat(kind == PluginKind::kAttentionBackend ? "an " : "a ", PluginKindName(kind));
}
}  // namespace

const char* PluginKindName(PluginKind kind) {
  switch (kind) {
    case PluginKind::kAttentionBackend:
      return "attention backend";
    case PluginKind::kRoutingPolicy:
      return "routing policy";
  }
  return "unknown kind";
}

// One loaded shared library. Objects created from it hold a reference (PluginObjectDeleter), so
// the code behind their vtables stays mapped until the last one is destroyed.
class PluginLibrary {
 public:
  PluginLibrary(boost::dll::shared_library library, std::string path)
      : library_(std::move(library)), path_(std::move(path)) {}
  const std::string& path() const { return path_; }

 private:
  boost::dll::shared_library library_;
  std::string path_;
};

struct PluginRegistry::Entry {
  PluginInfo info;
  std::shared_ptr<PluginLibrary> library;
  const PluginDescriptor* descriptor = nullptr;
  InProcessPlugin in_process;  // used when descriptor is null
};

namespace {

namespace fs = std::filesystem;

constexpr char kPluginFilePrefix[] = "libfluxattn_";
constexpr char kPluginFileSuffix[] = ".so";

// Size of the descriptor as ABI 1.0 defined it; newer plugins may append members.
constexpr size_t kDescriptorSizeV1_0 =
    offsetof(PluginDescriptor, destroy) + sizeof(PluginDescriptor::destroy);

bool LooksLikePluginFile(const std::string& filename) {
  return filename.size() > sizeof(kPluginFilePrefix) - 1 + sizeof(kPluginFileSuffix) - 1 &&
         filename.rfind(kPluginFilePrefix, 0) == 0 &&
         filename.compare(filename.size() - 3, 3, kPluginFileSuffix) == 0;
}

// "libfluxattn_streaming.so" -> "streaming": the name a file is expected to provide.
std::string NameFromFilename(const std::string& path) {
  std::string filename = fs::path(path).filename().string();
  if (!LooksLikePluginFile(filename)) return filename;
  return filename.substr(sizeof(kPluginFilePrefix) - 1,
                         filename.size() - (sizeof(kPluginFilePrefix) - 1) - 3);
}

std::string Canonical(const std::string& path) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(fs::path(path), ec);
  return ec ? path : canonical.string();
}

// The fields of a build id that decide binary compatibility. Tokens are "<key>-<value>"; the
// compiler token is the second one ("gcc-12", "clang-17") and only its family must match,
// because GCC and Clang keep their C++ ABI stable across major versions.
struct BuildIdFields {
  std::string core;
  std::string compiler_family;
  std::string cxxabi;
  std::string absl;
};

BuildIdFields ParseBuildId(const std::string& id) {
  BuildIdFields fields;
  std::vector<std::string> tokens = absl::StrSplit(id, ';');
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t.rfind("core-", 0) == 0) {
      fields.core = t;
    } else if (t.rfind("cxx", 0) == 0) {
      fields.cxxabi = t;
    } else if (t.rfind("absl-", 0) == 0) {
      fields.absl = t;
    } else if (i == 1) {
      fields.compiler_family = t.substr(0, t.find('-'));
    }
  }
  return fields;
}

// Empty when compatible, else which field differs, with both values.
std::string BuildIdMismatch(const std::string& plugin_id, const std::string& core_id) {
  BuildIdFields p = ParseBuildId(plugin_id);
  BuildIdFields c = ParseBuildId(core_id);
  auto differ = [](const char* what, const std::string& pv, const std::string& cv) {
    return absl::StrCat(what, " differs: core '", cv.empty() ? "none" : cv, "', plugin '",
                        pv.empty() ? "none" : pv, "'");
  };
  if (p.core != c.core) return differ("core major version", p.core, c.core);
  if (p.compiler_family != c.compiler_family) {
    return differ("compiler family", p.compiler_family, c.compiler_family);
  }
  if (p.cxxabi != c.cxxabi) return differ("C++ ABI", p.cxxabi, c.cxxabi);
  if (p.absl != c.absl) return differ("Abseil LTS", p.absl, c.absl);
  return "";
}

std::string DlErrorText() {
  const char* text = dlerror();
  return text != nullptr ? std::string(text) : std::string("unknown dlopen error");
}

std::string ExecutableDir() {
  boost::dll::fs::error_code ec;
  boost::dll::fs::path exe = boost::dll::program_location(ec);
  if (ec) return "";
  return exe.parent_path().string();
}

}  // namespace

PluginRegistry::PluginRegistry() = default;
PluginRegistry::~PluginRegistry() = default;

std::vector<std::string> PluginRegistry::DefaultSearchPath() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("FLUXATTN_PLUGIN_PATH"); env != nullptr) {
    for (absl::string_view part : absl::StrSplit(env, ':', absl::SkipEmpty())) {
      dirs.emplace_back(part);
    }
  }
  std::string exe_dir = ExecutableDir();
  if (!exe_dir.empty()) {
    dirs.push_back((fs::path(exe_dir) / ".." / "lib" / "fluxattn" / "plugins").string());
  }
#ifdef FLUXATTN_INSTALL_PLUGIN_DIR
  dirs.push_back(FLUXATTN_INSTALL_PLUGIN_DIR);
#endif
  // The same folder can be reached twice (build tree == install prefix); keep the first.
  std::vector<std::string> unique;
  std::vector<std::string> seen;
  for (const std::string& d : dirs) {
    std::string canonical = Canonical(d);
    if (std::find(seen.begin(), seen.end(), canonical) != seen.end()) continue;
    seen.push_back(canonical);
    unique.push_back(canonical);
  }
  return unique;
}

absl::Status PluginRegistry::ScanDirectory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("plugin directory '", dir,
                                            "': expected an existing directory, found ",
                                            fs::exists(dir, ec) ? "a file" : "nothing"));
  }
  std::string canonical_dir = Canonical(dir);
  if (std::find(searched_dirs_.begin(), searched_dirs_.end(), canonical_dir) !=
      searched_dirs_.end()) {
    return absl::OkStatus();
  }
  searched_dirs_.push_back(canonical_dir);
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    std::string filename = entry.path().filename().string();
    if (LooksLikePluginFile(filename) && entry.is_regular_file(ec)) {
      files.push_back(entry.path().string());
    }
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("plugin directory '", dir,
                     "': expected a readable directory, found error: ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) {
    absl::StatusOr<const PluginInfo*> loaded = LoadFile(file);
    if (!loaded.ok() && !absl::IsAlreadyExists(loaded.status())) {
      failures_.push_back({Canonical(file), loaded.status()});
    }
  }
  return absl::OkStatus();
}

absl::Status PluginRegistry::ScanSearchPath(const std::vector<std::string>& first_dirs) {
  for (const std::string& dir : first_dirs) FLUXATTN_RETURN_IF_ERROR(ScanDirectory(dir));
  for (const std::string& dir : DefaultSearchPath()) {
    std::error_code ec;
    if (fs::is_directory(dir, ec)) FLUXATTN_RETURN_IF_ERROR(ScanDirectory(dir));
  }
  return absl::OkStatus();
}

absl::StatusOr<const PluginInfo*> PluginRegistry::LoadFile(const std::string& given_path) {
  const std::string path = Canonical(given_path);
  for (const auto& [name, entry] : entries_) {
    if (entry->info.path == path) return &entry->info;
  }
  std::error_code fs_ec;
  if (!fs::exists(path, fs_ec)) {
    return absl::NotFoundError(
        absl::StrCat(given_path, ": expected a plugin shared library, found no such file"));
  }
  if (!fs::is_regular_file(path, fs_ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(given_path,
                     ": expected a plugin shared library, found a directory or "
                     "special file"));
  }

  boost::dll::fs::error_code ec;
  boost::dll::shared_library library;
  // RTLD_NOW surfaces unresolved symbols here, as a load failure, instead of as a crash later.
  library.load(boost::dll::fs::path(path), ec,
               boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  if (ec || !library.is_loaded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a loadable shared library, found a file dlopen refused (",
                     DlErrorText(), ")"));
  }
  if (!library.has(FLUXATTN_PLUGIN_ENTRY_SYMBOL)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a FluxAttn plugin exporting '",
                                                   FLUXATTN_PLUGIN_ENTRY_SYMBOL,
                                                   "', found a shared library without it"));
  }
  using EntryFn = const PluginDescriptor*();
  EntryFn& entry_fn = library.get<EntryFn>(FLUXATTN_PLUGIN_ENTRY_SYMBOL);
  const PluginDescriptor* d = entry_fn();
  if (d == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected '", FLUXATTN_PLUGIN_ENTRY_SYMBOL,
                     "' to return a descriptor, found a null pointer"));
  }
  // The version fields come first in every ABI; nothing else is read before they are checked.
  if (d->abi_major != FLUXATTN_PLUGIN_ABI_MAJOR) {
    const std::string hint =
        d->abi_major < FLUXATTN_PLUGIN_ABI_MAJOR
            ? absl::StrCat("; rebuild it against FluxAttn ", kCoreVersion,
                           " (ABI 2: batched AttentionBatch/Plan/Run interfaces)")
            : "";
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": expected plugin ABI major version ", FLUXATTN_PLUGIN_ABI_MAJOR,
                     " (core ", kCoreVersion, "), found ", d->abi_major, ".", d->abi_minor, hint));
  }
  if (d->struct_size < kDescriptorSizeV1_0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": expected a plugin descriptor of at least ", kDescriptorSizeV1_0,
                     " bytes (ABI 1.0), found ", d->struct_size, " bytes"));
  }
  if (d->build_id == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": expected a build id, found none"));
  }
  const std::string core_id = CurrentBuildId();
  if (std::string mismatch = BuildIdMismatch(d->build_id, core_id); !mismatch.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": expected a plugin built like the core (build id '", core_id,
                     "'), found build id '", d->build_id, "' (", mismatch, ")"));
  }
  if (d->kind != PluginKind::kAttentionBackend && d->kind != PluginKind::kRoutingPolicy) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": expected plugin kind 1 (attention backend) or 2 (routing "
                     "policy), found ",
                     static_cast<uint32_t>(d->kind)));
  }
  if (d->name == nullptr || d->name[0] == '\0' || d->create == nullptr || d->destroy == nullptr ||
      d->param_specs == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": expected a descriptor with a name and param_specs/create/destroy functions, "
        "found ",
        (d->name == nullptr || d->name[0] == '\0') ? "no name" : "a null function"));
  }

  auto entry = std::make_unique<Entry>();
  entry->descriptor = d;
  entry->info.name = d->name;
  entry->info.kind = d->kind;
  entry->info.version = d->version != nullptr ? d->version : "";
  entry->info.build_id = d->build_id;
  entry->info.summary = d->summary != nullptr ? d->summary : "";
  entry->info.path = path;
  entry->info.abi_major = d->abi_major;
  entry->info.abi_minor = d->abi_minor;
  if (const std::vector<ParamSpec>* specs = d->param_specs(); specs != nullptr) {
    entry->info.params = *specs;
  }
  auto existing = entries_.find(entry->info.name);
  if (existing != entries_.end()) {
    return absl::AlreadyExistsError(
        absl::StrCat(path, ": plugin '", entry->info.name, "' is already provided by ",
                     existing->second->info.path, " (found earlier in the search path)"));
  }
  entry->library = std::make_shared<PluginLibrary>(std::move(library), path);
  const PluginInfo* info = &entry->info;
  entries_.emplace(info->name, std::move(entry));
  return info;
}

absl::StatusOr<const PluginInfo*> PluginRegistry::RegisterInProcess(InProcessPlugin plugin) {
  const std::string name = plugin.info.name;
  if (name.empty() || !plugin.create || plugin.destroy == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "in-process plugin '", name, "': expected a name and create/destroy functions, found ",
        name.empty() ? "no name" : "a missing function"));
  }
  auto existing = entries_.find(name);
  if (existing != entries_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("in-process plugin '", name,
                                                 "': the name is already provided by ",
                                                 existing->second->info.path));
  }
  auto entry = std::make_unique<Entry>();
  entry->info = plugin.info;
  entry->in_process = std::move(plugin);
  const PluginInfo* info = &entry->info;
  entries_.emplace(name, std::move(entry));
  return info;
}

std::vector<PluginInfo> PluginRegistry::List() const {
  std::vector<PluginInfo> infos;
  infos.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) infos.push_back(entry->info);
  return infos;
}

absl::StatusOr<const PluginInfo*> PluginRegistry::Find(const std::string& name,
                                                       PluginKind kind) const {
  auto it = entries_.find(name);
  if (it != entries_.end()) {
    const PluginInfo& info = it->second->info;
    if (info.kind != kind) {
      return absl::InvalidArgumentError(absl::StrCat("plugin '", name, "': expected ",
                                                     WithArticle(kind), " plugin, found ",
                                                     WithArticle(info.kind), " (", info.path, ")"));
    }
    return &info;
  }
  for (const PluginLoadFailure& failure : failures_) {
    if (NameFromFilename(failure.path) == name) {
      return absl::Status(failure.status.code(),
                          absl::StrCat("plugin '", name, "': ", failure.status.message()));
    }
  }
  std::vector<std::string> known;
  for (const auto& [known_name, entry] : entries_) {
    if (entry->info.kind == kind) known.push_back(known_name);
  }
  return absl::NotFoundError(absl::StrCat(
      "plugin '", name, "': expected one of the ", PluginKindName(kind), " plugins found (",
      known.empty() ? "none" : absl::StrJoin(known, ", "), "), found no plugin named so (searched ",
      searched_dirs_.empty() ? "no directories" : absl::StrJoin(searched_dirs_, ":"), ")"));
}

absl::StatusOr<void*> PluginRegistry::Create(const std::string& name, PluginKind kind,
                                             const ParamValues& params,
                                             std::shared_ptr<PluginLibrary>* library,
                                             void (**destroy)(void*) noexcept) const {
  FLUXATTN_ASSIGN_OR_RETURN(const PluginInfo* info, Find(name, kind));
  const Entry& entry = *entries_.at(info->name);
  absl::Status status;
  void* object = nullptr;
  if (entry.descriptor != nullptr) {
    object = entry.descriptor->create(&params, &status);
  } else {
    absl::StatusOr<void*> created = entry.in_process.create(params);
    if (created.ok()) {
      object = *created;
    } else {
      status = created.status();
    }
  }
  if (object == nullptr) {
    if (status.ok()) {
      status = absl::InternalError("expected an instance, found a null pointer and no error");
    }
    return absl::Status(status.code(),
                        absl::StrCat("plugin '", name, "' (", info->path, "): ", status.message()));
  }
  *library = entry.library;
  *destroy = entry.descriptor != nullptr ? entry.descriptor->destroy : entry.in_process.destroy;
  return object;
}

absl::StatusOr<PluginPtr<AttentionBackend>> PluginRegistry::CreateBackend(
    const std::string& name, const ParamValues& params) const {
  std::shared_ptr<PluginLibrary> library;
  void (*destroy)(void*) noexcept = nullptr;
  FLUXATTN_ASSIGN_OR_RETURN(
      void* object, Create(name, PluginKind::kAttentionBackend, params, &library, &destroy));
  return PluginPtr<AttentionBackend>(static_cast<AttentionBackend*>(object),
                                     PluginObjectDeleter<AttentionBackend>{library, destroy});
}

absl::StatusOr<PluginPtr<RoutingPolicy>> PluginRegistry::CreatePolicy(
    const std::string& name, const ParamValues& params) const {
  std::shared_ptr<PluginLibrary> library;
  void (*destroy)(void*) noexcept = nullptr;
  FLUXATTN_ASSIGN_OR_RETURN(void* object,
                            Create(name, PluginKind::kRoutingPolicy, params, &library, &destroy));
  return PluginPtr<RoutingPolicy>(static_cast<RoutingPolicy*>(object),
                                  PluginObjectDeleter<RoutingPolicy>{library, destroy});
}

}  // namespace fluxattn
