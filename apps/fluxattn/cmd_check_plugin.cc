// `fluxattn check-plugin PATH`: loads one plugin file the way the engine does and runs the
// conformance checks on it (fluxattn/testing/conformance.h): descriptor, ABI and build id, the
// parameter specs, then the attention or routing checks against the double-precision oracle on
// fresh random inputs. Prints PASS/FAIL/SKIP per check; exit 0 when nothing failed, 1 otherwise.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "command.h"
#include "fluxattn/config.h"
#include "fluxattn/plugin_abi.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/testing/conformance.h"
#include "fluxattn/version.h"
#include "nlohmann/json.hpp"

namespace fluxattn::cli {
namespace {

using testing::CheckOutcome;
using testing::CheckResult;
using json = nlohmann::ordered_json;

struct CheckArgs {
  std::string path;
  std::vector<std::string> params;  // name=value
  uint64_t seed = 0;
  std::vector<int> layers = {1, 6, 13};
  bool json = false;
};

// A `--param name=value` value as the type the plugin declares for `name` (lists are
// comma-separated); names the plugin does not declare are left to ValidatePluginParams.
absl::StatusOr<ParamValue> ParseParamValue(const std::vector<ParamSpec>& specs,
                                           const std::string& name, const std::string& text) {
  const ParamSpec* spec = nullptr;
  for (const ParamSpec& s : specs) spec = s.name == name ? &s : spec;
  if (spec == nullptr) return ParamValue(text);
  auto bad = [&](const char* expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("--param ", name, ": expected ", expected, ", found \"", text, "\""));
  };
  switch (spec->type) {
    case ParamType::kBool:
      if (text == "true" || text == "false") return ParamValue(text == "true");
      return bad("true or false");
    case ParamType::kInt: {
      int64_t v = 0;
      if (absl::SimpleAtoi(text, &v)) return ParamValue(v);
      return bad("an integer");
    }
    case ParamType::kFloat: {
      double v = 0;
      if (absl::SimpleAtod(text, &v)) return ParamValue(v);
      return bad("a number");
    }
    case ParamType::kString:
      return ParamValue(text);
    case ParamType::kIntList: {
      std::vector<int64_t> list;
      for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(item, &v)) return bad("comma-separated integers");
        list.push_back(v);
      }
      return ParamValue(list);
    }
    case ParamType::kStringList: {
      std::vector<std::string> list = absl::StrSplit(text, ',', absl::SkipEmpty());
      return ParamValue(list);
    }
  }
  return bad("a value");
}

// Validated parameters: the plugin's defaults overridden by --param, checked like a config.
absl::StatusOr<ParamValues> ParamsFor(const PluginInfo& info, const CheckArgs& args) {
  PluginInstanceConfig instance;
  instance.name = info.name;
  instance.plugin = info.name;
  instance.table = "--param";
  instance.where = {"<command line>", 0, 0};
  for (const std::string& param : args.params) {
    const size_t eq = param.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--param: expected name=value, found \"", param, "\""));
    }
    const std::string name = param.substr(0, eq);
    absl::StatusOr<ParamValue> value = ParseParamValue(info.params, name, param.substr(eq + 1));
    if (!value.ok()) return value.status();
    instance.raw_params[name] = RawParam{*value, instance.where};
  }
  absl::Status valid = ValidatePluginParams(info.params, instance);
  if (!valid.ok()) return valid;
  return instance.params;
}

// Descriptor-level checks: what the loader accepted, and what a user will see.
std::vector<CheckResult> DescriptorChecks(const PluginInfo& info) {
  std::vector<CheckResult> results;
  results.push_back({"load", CheckOutcome::kPass,
                     absl::StrCat("descriptor found; ABI ", info.abi_major, ".", info.abi_minor,
                                  " (this libfluxattn speaks ABI ", FLUXATTN_PLUGIN_ABI_MAJOR, ".",
                                  FLUXATTN_PLUGIN_ABI_MINOR, "); build id '", info.build_id,
                                  "' compatible with libfluxattn's '", CurrentBuildId(), "'")});
  const std::string filename = std::filesystem::path(info.path).filename().string();
  const std::string expected = absl::StrCat("libfluxattn_", info.name, ".so");
  results.push_back({"file name", filename == expected ? CheckOutcome::kPass : CheckOutcome::kFail,
                     filename == expected
                         ? absl::StrCat(filename, ": found by directory scans under its name")
                         : absl::StrCat("expected ", expected,
                                        " (directory scans look for "
                                        "libfluxattn_<name>.so), found ",
                                        filename)});
  const bool described = !info.name.empty() && !info.version.empty() && !info.summary.empty();
  results.push_back({"descriptor text", described ? CheckOutcome::kPass : CheckOutcome::kFail,
                     described ? absl::StrCat("name '", info.name, "', version ", info.version,
                                              ": ", info.summary)
                               : "expected a name, a version and a summary, found an empty one"});
  return results;
}

void Print(const std::string& path, const PluginInfo* info, const std::vector<CheckResult>& results,
           uint64_t seed, bool as_json) {
  const bool passed = testing::AllPassed(results);
  if (as_json) {
    json out;
    out["path"] = path;
    if (info != nullptr) {
      out["name"] = info->name;
      out["kind"] = PluginKindName(info->kind);
      out["version"] = info->version;
      out["abi"] = absl::StrCat(info->abi_major, ".", info->abi_minor);
      out["build_id"] = info->build_id;
    }
    out["seed"] = seed;
    out["checks"] = json::array();
    for (const CheckResult& r : results) {
      out["checks"].push_back({{"name", r.name},
                               {"result", testing::CheckOutcomeName(r.outcome)},
                               {"detail", r.detail}});
    }
    out["passed"] = passed;
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::cout << "checking " << path;
  if (info != nullptr)
    std::cout << " (" << PluginKindName(info->kind) << " '" << info->name << "')";
  std::cout << ", seed " << seed << "\n";
  int counts[3] = {0, 0, 0};
  for (const CheckResult& r : results) {
    ++counts[static_cast<int>(r.outcome)];
    std::cout << testing::CheckOutcomeName(r.outcome) << "  " << r.name << ": " << r.detail << "\n";
  }
  std::cout << (passed ? "PASS" : "FAIL") << ": " << counts[0] << " passed, " << counts[1]
            << " failed, " << counts[2] << " skipped\n";
}

int Run(CheckArgs args) {
  if (args.seed == 0) args.seed = std::random_device{}() | 1u;
  PluginRegistry registry;
  absl::StatusOr<const PluginInfo*> loaded = registry.LoadFile(args.path);
  if (!loaded.ok()) {
    Print(args.path, nullptr,
          {{"load", CheckOutcome::kFail, std::string(loaded.status().message())}}, args.seed,
          args.json);
    return kExitFailure;
  }
  const PluginInfo& info = **loaded;
  std::vector<CheckResult> results = DescriptorChecks(info);
  for (CheckResult& r : testing::CheckParamSpecs(info.params)) results.push_back(std::move(r));
  absl::StatusOr<ParamValues> params = ParamsFor(info, args);
  if (!params.ok()) {
    PrintError(std::string(params.status().message()));
    return kExitUsage;
  }
  testing::ConformanceOptions options;
  options.seed = args.seed;
  options.routing_layers = args.layers;
  std::vector<CheckResult> kind_results;
  if (info.kind == PluginKind::kAttentionBackend) {
    kind_results = testing::CheckAttentionBackend(
        [&]() -> absl::StatusOr<std::shared_ptr<AttentionBackend>> {
          absl::StatusOr<PluginPtr<AttentionBackend>> made =
              registry.CreateBackend(info.name, *params);
          if (!made.ok()) return made.status();
          return std::shared_ptr<AttentionBackend>(std::move(*made));
        },
        options);
  } else {
    kind_results = testing::CheckRoutingPolicy(
        [&]() -> absl::StatusOr<std::shared_ptr<RoutingPolicy>> {
          absl::StatusOr<PluginPtr<RoutingPolicy>> made = registry.CreatePolicy(info.name, *params);
          if (!made.ok()) return made.status();
          return std::shared_ptr<RoutingPolicy>(std::move(*made));
        },
        options);
  }
  for (CheckResult& r : kind_results) results.push_back(std::move(r));
  Print(args.path, &info, results, args.seed, args.json);
  return testing::AllPassed(results) ? kExitOk : kExitFailure;
}

std::function<int()> Setup(CLI::App& app) {
  app.description(
      "Load one plugin file and run the conformance checks on it (PASS/FAIL per check; exit 1 "
      "when any fails)");
  auto args = std::make_shared<CheckArgs>();
  app.add_option("path", args->path, "The plugin file (libfluxattn_<name>.so)")->required();
  app.add_option("--param", args->params,
                 "Parameter of the instance under test, name=value (repeatable; lists are "
                 "comma-separated); others take their defaults");
  app.add_option("--layers", args->layers,
                 "Layer counts of the synthetic models a routing policy is checked on "
                 "(default 1 6 13)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--seed", args->seed, "Seed of the random inputs (default: a fresh one)");
  app.add_flag("--json", args->json, "Print JSON instead of text");
  return [args] { return Run(*args); };
}

}  // namespace
}  // namespace fluxattn::cli

// Registered by hand: the command name has a '-', which FLUXATTN_REGISTER_COMMAND cannot spell.
static ::fluxattn::cli::CommandRegistration fluxattn_command_check_plugin({"check-plugin",
                                                                           fluxattn::cli::Setup});
