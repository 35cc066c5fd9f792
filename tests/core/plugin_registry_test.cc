// The loader against fixture plugins built only for these tests: one valid plugin of each kind
// and one file for each reason to refuse a plugin.
#include "fluxattn/plugin_registry.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "test_util.h"

namespace fluxattn {
namespace {

using testing_util::FixtureDir;
using testing_util::FixturePath;
using testing_util::MakeTempDir;

std::string Canonical(const std::string& path) {
  return std::filesystem::weakly_canonical(path).string();
}

const PluginLoadFailure* FailureFor(const PluginRegistry& registry, const std::string& name) {
  for (const PluginLoadFailure& f : registry.failures()) {
    if (f.path == Canonical(FixturePath(name))) return &f;
  }
  return nullptr;
}

TEST(PluginRegistryTest, ScanListsValidPluginsWithTheirDescriptors) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  std::vector<PluginInfo> list = registry.List();
  std::vector<std::string> names;
  for (const PluginInfo& info : list) names.push_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"fixture_backend", "fixture_create_fails",
                                             "fixture_router"}));
  const PluginInfo& backend = list[0];
  EXPECT_EQ(backend.kind, PluginKind::kAttentionBackend);
  EXPECT_EQ(backend.version, "0.3.1");
  EXPECT_EQ(backend.summary, "test fixture: dense causal layout");
  EXPECT_EQ(backend.abi_major, 2u);
  EXPECT_EQ(backend.path, Canonical(FixturePath("fixture_backend")));
  EXPECT_EQ(backend.build_id.rfind("core-0;", 0), 0u) << backend.build_id;
  ASSERT_EQ(backend.params.size(), 6u);
  EXPECT_EQ(backend.params[0].name, "block_size");
  EXPECT_EQ(backend.params[0].type, ParamType::kInt);
  EXPECT_EQ(backend.params[0].min_value, 1.0);
  EXPECT_EQ(list[2].kind, PluginKind::kRoutingPolicy);
  EXPECT_EQ(registry.searched_directories(), (std::vector<std::string>{Canonical(FixtureDir())}));
  EXPECT_EQ(registry.failures().size(), 6u);
}

TEST(PluginRegistryTest, AbiOnePluginIsRefusedWithARebuildHint) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  const PluginLoadFailure* failure = FailureFor(registry, "fixture_abi1");
  ASSERT_NE(failure, nullptr);
  EXPECT_EQ(failure->status.message(),
            Canonical(FixturePath("fixture_abi1")) +
                ": expected plugin ABI major version 2 (core 0.1.0), found 1.0; rebuild it "
                "against FluxAttn 0.1.0 (ABI 2: batched AttentionBatch/Plan/Run interfaces)");
  EXPECT_EQ(std::string(failure->status.message()).find('\n'), std::string::npos);
}

TEST(PluginRegistryTest, AbiMajorMismatchNamesFileAndBothVersions) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  const PluginLoadFailure* failure = FailureFor(registry, "fixture_abi99");
  ASSERT_NE(failure, nullptr);
  EXPECT_EQ(failure->status.message(),
            Canonical(FixturePath("fixture_abi99")) +
                ": expected plugin ABI major version 2 (core 0.1.0), found 99.0");
  // Asking for it by name reports why it was refused instead of "unknown plugin".
  absl::StatusOr<const PluginInfo*> found =
      registry.Find("fixture_abi99", PluginKind::kAttentionBackend);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().message(),
            "plugin 'fixture_abi99': " + std::string(failure->status.message()));
}

TEST(PluginRegistryTest, IncompatibleBuildIdIsRefused) {
  PluginRegistry registry;
  absl::StatusOr<const PluginInfo*> loaded = registry.LoadFile(FixturePath("fixture_bad_build"));
  ASSERT_FALSE(loaded.ok());
  const std::string message(loaded.status().message());
  EXPECT_EQ(message.rfind(Canonical(FixturePath("fixture_bad_build")) +
                              ": expected a plugin built like the core (build id '" +
                              CurrentBuildId() + "'), found build id '",
                          0),
            0u)
      << message;
  EXPECT_NE(message.find("(Abseil LTS differs: core 'absl-"), std::string::npos) << message;
  EXPECT_NE(message.find("plugin 'absl-20990101')"), std::string::npos) << message;
}

TEST(PluginRegistryTest, DescriptorShorterThanAbi1IsRefused) {
  PluginRegistry registry;
  absl::StatusOr<const PluginInfo*> loaded =
      registry.LoadFile(FixturePath("fixture_short_descriptor"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().message(), Canonical(FixturePath("fixture_short_descriptor")) +
                                           ": expected a plugin descriptor of at least " +
                                           std::to_string(sizeof(PluginDescriptor)) +
                                           " bytes (ABI 1.0), found 16 bytes");
}

TEST(PluginRegistryTest, UnknownKindIsRefused) {
  PluginRegistry registry;
  absl::StatusOr<const PluginInfo*> loaded = registry.LoadFile(FixturePath("fixture_bad_kind"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().message(),
            Canonical(FixturePath("fixture_bad_kind")) +
                ": expected plugin kind 1 (attention backend) or 2 (routing policy), found 7");
}

TEST(PluginRegistryTest, SharedLibraryWithoutDescriptorIsNotAPlugin) {
  PluginRegistry registry;
  absl::StatusOr<const PluginInfo*> loaded =
      registry.LoadFile(FixturePath("fixture_no_descriptor"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().message(),
            Canonical(FixturePath("fixture_no_descriptor")) +
                ": expected a FluxAttn plugin exporting 'fluxattn_plugin_descriptor', found a "
                "shared library without it");
}

TEST(PluginRegistryTest, FileThatIsNotASharedLibrary) {
  const std::string dir = MakeTempDir("plugins");
  const std::string path = dir + "/libfluxattn_garbage.so";
  testing_util::WriteFile(path, "this is not an ELF file\n");
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(dir).ok());
  ASSERT_EQ(registry.failures().size(), 1u);
  const std::string message(registry.failures()[0].status.message());
  EXPECT_EQ(message.rfind(Canonical(path) +
                              ": expected a loadable shared library, found a file dlopen refused (",
                          0),
            0u)
      << message;
  absl::StatusOr<const PluginInfo*> found = registry.Find("garbage", PluginKind::kRoutingPolicy);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().message(), "plugin 'garbage': " + message);
}

TEST(PluginRegistryTest, MissingFileAndDirectory) {
  PluginRegistry registry;
  absl::StatusOr<const PluginInfo*> loaded = registry.LoadFile("/nonexistent/libfluxattn_x.so");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().message(),
            "/nonexistent/libfluxattn_x.so: expected a plugin shared library, found no such file");
  absl::Status scanned = registry.ScanDirectory("/nonexistent/plugins");
  EXPECT_EQ(scanned.message(),
            "plugin directory '/nonexistent/plugins': expected an existing directory, found "
            "nothing");
}

TEST(PluginRegistryTest, UnknownNameListsKnownPluginsOfThatKind) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  absl::StatusOr<const PluginInfo*> found =
      registry.Find("streeming", PluginKind::kAttentionBackend);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().message(),
            "plugin 'streeming': expected one of the attention backend plugins found "
            "(fixture_backend, fixture_create_fails), found no plugin named so (searched " +
                Canonical(FixtureDir()) + ")");
}

TEST(PluginRegistryTest, KindMismatch) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  absl::StatusOr<const PluginInfo*> found =
      registry.Find("fixture_router", PluginKind::kAttentionBackend);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().message(),
            "plugin 'fixture_router': expected an attention backend plugin, found a routing "
            "policy (" +
                Canonical(FixturePath("fixture_router")) + ")");
  absl::StatusOr<PluginPtr<RoutingPolicy>> policy =
      registry.CreatePolicy("fixture_backend", ParamValues());
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().message(),
            "plugin 'fixture_backend': expected a routing policy plugin, found an attention "
            "backend (" +
                Canonical(FixturePath("fixture_backend")) + ")");
}

TEST(PluginRegistryTest, CreateFailureCarriesThePluginsStatus) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  absl::StatusOr<PluginPtr<AttentionBackend>> backend =
      registry.CreateBackend("fixture_create_fails", ParamValues());
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend.status().message(), "plugin 'fixture_create_fails' (" +
                                            Canonical(FixturePath("fixture_create_fails")) +
                                            "): fixture refuses to be created");
}

TEST(PluginRegistryTest, ObjectsOutliveTheRegistryThatMadeThem) {
  PluginPtr<AttentionBackend> backend;
  {
    PluginRegistry registry;
    ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
    ParamValues params;
    params.Set("block_size", int64_t{4}, true);
    absl::StatusOr<PluginPtr<AttentionBackend>> made =
        registry.CreateBackend("fixture_backend", params);
    ASSERT_TRUE(made.ok()) << made.status();
    backend = std::move(*made);
  }
  // The registry (and its reference to the library) is gone; the object's deleter still holds
  // the library, so its code is still mapped.
  EXPECT_EQ(backend->capabilities().head_dims, (std::vector<int>{64, 128}));
  AttentionProblem problem;
  problem.num_queries = 6;
  problem.q_pos0 = 3;
  problem.kv.length = 9;
  BlockSparseLayout layout;
  ASSERT_TRUE(backend->BuildLayout(problem, &layout).ok());
  // Query rows 0..3 (positions 3..6) read blocks 0..1; rows 4..5 (positions 7..8) blocks 0..2.
  EXPECT_EQ(layout.row_begin, (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(layout.kv_block, (std::vector<int32_t>{0, 1, 0, 1, 2}));
  EXPECT_EQ(backend->RetainedKv(100).keeps_all(), true);
  EXPECT_EQ(backend->CreateState(4, 2, 64), nullptr);
  backend.reset();
}

TEST(PluginRegistryTest, EarlierDirectoryWinsAndRescansAreHarmless) {
  const std::string dir = MakeTempDir("first");
  const std::string copy = dir + "/libfluxattn_fixture_backend.so";
  std::filesystem::copy_file(FixturePath("fixture_backend"), copy);
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(dir).ok());
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  absl::StatusOr<const PluginInfo*> found =
      registry.Find("fixture_backend", PluginKind::kAttentionBackend);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ((*found)->path, Canonical(copy));
  EXPECT_EQ(registry.List().size(), 3u);
  EXPECT_EQ(registry.failures().size(), 6u);
}

TEST(PluginRegistryTest, EnvironmentSearchPathComesFirst) {
  setenv("FLUXATTN_PLUGIN_PATH", (FixtureDir() + "::/nonexistent").c_str(), 1);
  std::vector<std::string> dirs = PluginRegistry::DefaultSearchPath();
  unsetenv("FLUXATTN_PLUGIN_PATH");
  ASSERT_GE(dirs.size(), 3u);
  EXPECT_EQ(dirs[0], Canonical(FixtureDir()));
  EXPECT_EQ(dirs[1], "/nonexistent");
  EXPECT_NE(dirs[2].find("lib/fluxattn/plugins"), std::string::npos) << dirs[2];
  PluginRegistry registry;
  setenv("FLUXATTN_PLUGIN_PATH", FixtureDir().c_str(), 1);
  ASSERT_TRUE(registry.ScanSearchPath({}).ok());
  unsetenv("FLUXATTN_PLUGIN_PATH");
  EXPECT_TRUE(registry.Find("fixture_router", PluginKind::kRoutingPolicy).ok());
  EXPECT_STREQ(PluginKindName(PluginKind::kRoutingPolicy), "routing policy");
}

// A routing policy of the process itself: every layer sparse, counting its instances.
int g_in_process_live = 0;
class InProcessPolicy : public RoutingPolicy {
 public:
  explicit InProcessPolicy(int64_t tag) : tag_(tag) { ++g_in_process_live; }
  ~InProcessPolicy() override { --g_in_process_live; }
  absl::Status Prepare(const RoutingSetup&) override { return absl::OkStatus(); }
  absl::StatusOr<RoutingDecision> Decide(const RoutingInput&) override {
    RoutingDecision d;
    d.choice = AttentionChoice::kSparse;
    d.logits = {static_cast<float>(tag_)};
    return d;
  }

 private:
  int64_t tag_;
};

InProcessPlugin InProcessPolicyPlugin(const std::string& name) {
  InProcessPlugin p;
  p.info.name = name;
  p.info.kind = PluginKind::kRoutingPolicy;
  p.info.path = "in-process:" + name;
  p.info.params = {IntParamSpec("tag", 7, 0, 100, "a number the policy returns as its logit")};
  p.create = [](const ParamValues& params) -> absl::StatusOr<void*> {
    if (params.GetInt("tag") == 13) return absl::InvalidArgumentError("tag 13 is refused");
    return static_cast<void*>(new InProcessPolicy(params.GetInt("tag")));
  };
  p.destroy = [](void* object) noexcept { delete static_cast<InProcessPolicy*>(object); };
  return p;
}

TEST(PluginRegistryTest, InProcessPluginsAreFoundCreatedAndDestroyed) {
  PluginRegistry registry;
  ASSERT_TRUE(registry.ScanDirectory(FixtureDir()).ok());
  absl::StatusOr<const PluginInfo*> info =
      registry.RegisterInProcess(InProcessPolicyPlugin("python:mod.Policy"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ((*info)->path, "in-process:python:mod.Policy");
  absl::StatusOr<const PluginInfo*> found =
      registry.Find("python:mod.Policy", PluginKind::kRoutingPolicy);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, *info);
  EXPECT_FALSE(registry.Find("python:mod.Policy", PluginKind::kAttentionBackend).ok());

  ParamValues params;
  params.Set("tag", int64_t{42}, true);
  {
    absl::StatusOr<PluginPtr<RoutingPolicy>> policy =
        registry.CreatePolicy("python:mod.Policy", params);
    ASSERT_TRUE(policy.ok()) << policy.status();
    EXPECT_EQ(g_in_process_live, 1);
    absl::StatusOr<RoutingDecision> d = (*policy)->Decide(RoutingInput{});
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->choice, AttentionChoice::kSparse);
    EXPECT_EQ(d->logits, (std::vector<float>{42.0f}));
  }
  EXPECT_EQ(g_in_process_live, 0);

  params.Set("tag", int64_t{13}, true);
  absl::StatusOr<PluginPtr<RoutingPolicy>> refused =
      registry.CreatePolicy("python:mod.Policy", params);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().message(),
            "plugin 'python:mod.Policy' (in-process:python:mod.Policy): tag 13 is refused");

  // Names are unique across files and in-process plugins; both functions are required.
  absl::StatusOr<const PluginInfo*> again =
      registry.RegisterInProcess(InProcessPolicyPlugin("python:mod.Policy"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.RegisterInProcess(InProcessPolicyPlugin("fixture_backend")).status().code(),
            absl::StatusCode::kAlreadyExists);
  InProcessPlugin incomplete = InProcessPolicyPlugin("other");
  incomplete.destroy = nullptr;
  EXPECT_EQ(registry.RegisterInProcess(std::move(incomplete)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fluxattn
