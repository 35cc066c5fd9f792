// Helpers shared by the core tests.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace fluxattn::testing_util {

// The build tree's fixture folder; FLUXATTN_FIXTURE_PLUGIN_DIR overrides it when the tests run
// from a copied bundle (tools/bundle-for-device.sh).
inline std::string FixtureDir() {
  const char* env = std::getenv("FLUXATTN_FIXTURE_PLUGIN_DIR");
  return env != nullptr ? env : FLUXATTN_FIXTURE_PLUGIN_DIR;
}

// The `fluxattn` binary under test; FLUXATTN_CLI overrides the build tree's.
inline std::string CliPath() {
  const char* env = std::getenv("FLUXATTN_CLI");
  return env != nullptr ? env : FLUXATTN_CLI_PATH;
}

inline std::string FixturePath(const std::string& name) {
  return FixtureDir() + "/libfluxattn_" + name + ".so";
}

// A fresh empty directory under the test's temporary folder.
inline std::string MakeTempDir(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                              (std::string("fluxattn_") + info->test_suite_name() + "_" +
                               info->name() + "_" + std::to_string(getpid())) /
                              name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace fluxattn::testing_util
