// Continuous batching over the engine's step API. One scheduler thread owns the Engine (which is
// not thread-safe); HTTP handler threads submit requests and read their tokens through a
// RequestChannel each. Between two steps the scheduler drops cancelled requests (their KV pages
// return to the pool), admits waiting requests into the running batch, and runs one Step: the
// prefill of the admitted requests and one decode token of every running one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "fluxattn/engine.h"
#include "serve/metrics.h"

namespace fluxattn::serve {

using Clock = std::chrono::steady_clock;

// What a request got since the handler last looked.
struct RequestUpdate {
  std::vector<StepToken> tokens;
  std::optional<GenerationResult> finished;  // ended (eos, stop token, length)
  std::optional<absl::Status> failed;        // dropped by the engine or the scheduler
};

class RequestChannel {
 public:
  explicit RequestChannel(RequestSpec spec) : spec_(std::move(spec)), arrival_(Clock::now()) {}

  // Waits for news until `deadline`; false when nothing came in time. Takes the news.
  bool Wait(Clock::time_point deadline, RequestUpdate& out);
  const RequestSpec& spec() const { return spec_; }

 private:
  friend class Scheduler;
  void Deliver(std::vector<StepToken> tokens, std::optional<GenerationResult> finished,
               std::optional<absl::Status> failed);

  std::mutex mu_;
  std::condition_variable cv_;
  RequestUpdate news_;
  bool has_news_ = false;
  // Scheduler-thread state.
  RequestSpec spec_;
  Clock::time_point arrival_;
  Clock::time_point last_token_;
  bool got_token_ = false;
  bool in_engine_ = false;
  uint64_t engine_id_ = 0;
  int64_t kv_budget_pages_ = 0;
  bool cancelled_ = false;  // guarded by the scheduler's mutex
};

struct SchedulerLimits {
  int max_running = 64;
  int max_queued = 256;
  int kv_page_tokens = 64;
};

class Scheduler {
 public:
  Scheduler(Engine& engine, SchedulerLimits limits, Metrics& metrics);
  ~Scheduler();

  void Start();
  void Stop();

  // Queues a request. ResourceExhausted when max_queued requests are already waiting.
  absl::StatusOr<std::shared_ptr<RequestChannel>> Submit(RequestSpec spec);
  // Drops the request (waiting or running); its pages return to the pool before the next step.
  void Cancel(const std::shared_ptr<RequestChannel>& channel);

 private:
  void Loop();
  void RunStep();
  void FailAll(const absl::Status& status);
  int64_t PagesFor(const RequestSpec& spec) const;
  void PublishGauges();

  Engine& engine_;
  SchedulerLimits limits_;
  Metrics& metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<RequestChannel>> waiting_;
  std::vector<std::shared_ptr<RequestChannel>> cancels_;
  bool stop_ = false;
  // Scheduler thread only.
  std::unordered_map<uint64_t, std::shared_ptr<RequestChannel>> running_;
  int64_t kv_budget_used_ = 0;
  std::thread thread_;
};

}  // namespace fluxattn::serve
