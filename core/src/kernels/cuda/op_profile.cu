// FLUXATTN_CUDA_PROFILE=1: GPU time per operation of the model's forward passes, from CUDA
// events recorded between the operations (which also keeps consecutive kernels from
// overlapping, so the sum is an upper bound of a step's time without it).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "fluxattn/kernels/cuda_model_ops.h"

namespace fluxattn::kernels::cuda {

bool OpProfile::EnabledByEnvironment() {
  const char* v = std::getenv("FLUXATTN_CUDA_PROFILE");
  return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
}

namespace {
thread_local OpProfile* active_profile = nullptr;
}  // namespace

OpProfile* OpProfile::Active() { return active_profile; }

OpProfile::~OpProfile() {
  if (active_profile == this) active_profile = nullptr;
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

void OpProfile::Begin(const char* pass, void* stream) {
  pass_ = pass;
  active_profile = this;
  used_ = 0;
  names_.clear();
  Mark("begin", stream);
}

void OpProfile::Mark(const char* what, void* stream) {
  if (used_ == events_.size()) {
    cudaEvent_t e = nullptr;
    if (cudaEventCreate(&e) != cudaSuccess) return;
    events_.push_back(e);
  }
  cudaEventRecord(static_cast<cudaEvent_t>(events_[used_]), static_cast<cudaStream_t>(stream));
  names_.push_back(what);
  ++used_;
}

void OpProfile::End() {
  active_profile = nullptr;
  if (used_ < 2) return;
  cudaEventSynchronize(static_cast<cudaEvent_t>(events_[used_ - 1]));
  Totals& t = totals_[pass_];
  ++t.passes;
  for (size_t i = 1; i < used_; ++i) {
    float ms = 0.f;
    cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[i - 1]),
                         static_cast<cudaEvent_t>(events_[i]));
    t.ms[names_[i]] += ms;
    t.count[names_[i]] += 1;
  }
}

std::string OpProfile::Report() const {
  std::string out;
  for (const auto& [pass, t] : totals_) {
    double total = 0;
    for (const auto& [name, ms] : t.ms) total += ms;
    absl::StrAppendFormat(&out, "op profile, %s: %d passes, %.3f ms per pass\n", pass, t.passes,
                          total / std::max(t.passes, 1));
    std::vector<std::pair<double, std::string>> sorted;
    for (const auto& [name, ms] : t.ms) sorted.emplace_back(ms, name);
    std::sort(sorted.rbegin(), sorted.rend());
    for (const auto& [ms, name] : sorted) {
      const int calls = t.count.at(name);
      absl::StrAppendFormat(&out, "  %-22s %9.3f ms per pass %6.1f%%  %8.2f us per call\n", name,
                            ms / std::max(t.passes, 1), 100.0 * ms / std::max(total, 1e-9),
                            1e3 * ms / std::max(calls, 1));
    }
  }
  return out;
}

}  // namespace fluxattn::kernels::cuda
