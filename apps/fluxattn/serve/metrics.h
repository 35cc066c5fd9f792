// Counters, gauges and histograms of `fluxattn serve`, rendered in the Prometheus text format
// at GET /metrics. Thread-safe: handler threads and the scheduler thread update it.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace fluxattn::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends `name_bucket`, `name_sum`, `name_count` lines (with `labels`, e.g. `a="b"`).
  void Render(const std::string& name, const std::string& labels, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

struct EngineGauges {
  int64_t queued = 0;   // waiting in the server's queue and the engine's
  int64_t running = 0;  // in the running batch
  int64_t kv_pages_used = 0;
  int64_t kv_pages_total = 0;
};

class Metrics {
 public:
  Metrics();

  void CountRequest(const std::string& path, int status);
  void CountTokens(int64_t prompt, int64_t completion);
  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  void ObserveStep(int batch_size, int64_t prefill_tokens, double seconds);
  // A request that finished with a trace: its policy and SA ratio.
  void ObserveRouting(const std::string& policy, double sa_ratio);
  void CountFinish(const std::string& reason);
  void SetGauges(const EngineGauges& gauges);
  EngineGauges gauges() const;

  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> finishes_;
  int64_t prompt_tokens_ = 0;
  int64_t completion_tokens_ = 0;
  uint64_t steps_ = 0;
  int64_t step_prefill_tokens_ = 0;
  Histogram ttft_;
  Histogram itl_;
  Histogram batch_size_;
  Histogram step_seconds_;
  struct PolicyStats {
    uint64_t requests = 0;
    double sa_ratio_sum = 0.0;
  };
  std::map<std::string, PolicyStats> policies_;
  EngineGauges gauges_;
};

}  // namespace fluxattn::serve
