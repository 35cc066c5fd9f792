// Shared helpers of the model tests: an independent attention oracle and small file utilities.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fluxattn/attention_backend.h"
#include "fluxattn/config.h"
#include "nlohmann/json.hpp"

namespace fluxattn::testing {

// Dense causal softmax attention computed in double from the KV cache: the oracle the model
// tests run every layer through. With `window` > 0 it keeps only the first `sink` and the last
// `window` positions (token granularity) and declares that retention, to test KV release.
class NaiveAttention : public AttentionBackend {
 public:
  NaiveAttention(int64_t sink = 0, int64_t window = 0) : sink_(sink), window_(window) {
    caps_.custom_run = true;
  }
  AttentionCapabilities capabilities() const override { return caps_; }
  KvRetention RetainedKv(int64_t next_query_pos) const override;
  // No layout: Run computes every sequence directly from the KV pages.
  absl::Status BuildLayout(const AttentionProblem&, BlockSparseLayout*) override;
  absl::Status Run(const AttentionBatch& batch, const PlannedLayout& plan,
                   AttentionWorkspace* workspace) override;
  absl::Status RunOne(const AttentionProblem& problem, float* out);

  AttentionCapabilities caps_;
  int64_t calls = 0;

 private:
  int64_t sink_;
  int64_t window_;
};

PluginPtr<AttentionBackend> Own(AttentionBackend* backend);
PluginPtr<RoutingPolicy> Own(RoutingPolicy* policy);

// Composition with one NaiveAttention backend called "full".
Composition NaiveComposition();

std::string FixturePath(const std::string& name);
nlohmann::json ReadJson(const std::string& path);
std::vector<std::string> FixtureNames();

// A fresh empty folder under the test temp dir.
std::string TempDir(const std::string& name);
void WriteFile(const std::string& path, const std::string& bytes);

// max |a - b| / max |b|
double RelativeError(const std::vector<float>& a, const std::vector<double>& b);

}  // namespace fluxattn::testing
