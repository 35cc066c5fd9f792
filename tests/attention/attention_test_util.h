// Test helpers for attention: random inputs, a paged KV cache over plain arrays, and the oracle
// (dense masked softmax attention in double precision). They live in the installed
// fluxattn/testing/reference_attention.h, shared with `fluxattn check-plugin` and third-party
// plugin tests.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>

#include "fluxattn/testing/reference_attention.h"
#include "gtest/gtest.h"

namespace fluxattn::testing {

// Random inputs of every attention test derive from one seed per test: fresh each run, or the
// one FLUXATTN_TEST_SEED gives (to replay a failure). A failing test prints its seed.
class TestSeeds : public ::testing::EmptyTestEventListener {
 public:
  static TestSeeds& Get() {
    static TestSeeds* seeds = [] {
      auto* s = new TestSeeds();
      ::testing::UnitTest::GetInstance()->listeners().Append(s);  // gtest owns it
      return s;
    }();
    return *seeds;
  }
  // The next seed of the running test.
  uint64_t Next() { return base_ + 0x9e3779b97f4a7c15ULL * ++count_; }

  void OnTestStart(const ::testing::TestInfo&) override {
    const char* env = std::getenv("FLUXATTN_TEST_SEED");
    if (env != nullptr && *env != '\0') {
      base_ = std::strtoull(env, nullptr, 10);
    } else {
      std::random_device device;
      base_ = (static_cast<uint64_t>(device()) << 32) ^ device();
    }
    count_ = 0;
    reported_ = false;
  }
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (result.failed() && !reported_) {
      reported_ = true;
      std::printf("[  SEED    ] inputs from seed %llu: replay with FLUXATTN_TEST_SEED=%llu\n",
                  static_cast<unsigned long long>(base_), static_cast<unsigned long long>(base_));
    }
  }

 private:
  uint64_t base_ = 1;
  uint64_t count_ = 0;
  bool reported_ = false;
};

// Registers the listener before any test runs.
inline const bool kTestSeedsRegistered = (TestSeeds::Get(), true);

inline uint64_t FreshSeed() { return TestSeeds::Get().Next(); }

}  // namespace fluxattn::testing
