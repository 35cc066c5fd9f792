// Helpers shared by the core tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace fluxattn::testing_util {

inline std::string FixtureDir() { return FLUXATTN_FIXTURE_PLUGIN_DIR; }

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
