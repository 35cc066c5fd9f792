#include "serve/metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fluxattn::serve {
namespace {

std::vector<double> LatencyBounds() {
  return {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05,
          0.1,   0.25,   0.5,   1.0,    2.5,  5.0,   10.0, 30.0};
}

std::string Labels(const std::string& labels, const std::string& extra) {
  if (labels.empty() && extra.empty()) return "";
  if (labels.empty()) return absl::StrCat("{", extra, "}");
  if (extra.empty()) return absl::StrCat("{", labels, "}");
  return absl::StrCat("{", labels, ",", extra, "}");
}

// Label values are escaped as the text format requires.
std::string Escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void Header(std::string& out, const std::string& name, const std::string& type,
            const std::string& help) {
  absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(&out, name, "_bucket", Labels(labels, absl::StrCat("le=\"", bounds_[i], "\"")),
                    " ", cumulative, "\n");
  }
  absl::StrAppend(&out, name, "_bucket", Labels(labels, "le=\"+Inf\""), " ", count_, "\n");
  absl::StrAppend(&out, name, "_sum", Labels(labels, ""), " ", sum_, "\n");
  absl::StrAppend(&out, name, "_count", Labels(labels, ""), " ", count_, "\n");
}

Metrics::Metrics()
    : ttft_(LatencyBounds()),
      itl_(LatencyBounds()),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}),
      step_seconds_(LatencyBounds()) {}

void Metrics::CountRequest(const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{path, status}];
}

void Metrics::CountTokens(int64_t prompt, int64_t completion) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += prompt;
  completion_tokens_ += completion;
}

void Metrics::ObserveTimeToFirstToken(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.Observe(seconds);
}

void Metrics::ObserveInterTokenLatency(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.Observe(seconds);
}

void Metrics::ObserveStep(int batch_size, int64_t prefill_tokens, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++steps_;
  step_prefill_tokens_ += prefill_tokens;
  batch_size_.Observe(batch_size);
  step_seconds_.Observe(seconds);
}

void Metrics::ObserveRouting(const std::string& policy, double sa_ratio) {
  std::lock_guard<std::mutex> lock(mu_);
  PolicyStats& p = policies_[policy];
  ++p.requests;
  p.sa_ratio_sum += sa_ratio;
}

void Metrics::CountFinish(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++finishes_[reason];
}

void Metrics::SetGauges(const EngineGauges& gauges) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_ = gauges;
}

EngineGauges Metrics::gauges() const {
  std::lock_guard<std::mutex> lock(mu_);
  return gauges_;
}

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  Header(out, "fluxattn_requests_total", "counter", "HTTP requests answered, by path and status");
  for (const auto& [key, n] : requests_) {
    absl::StrAppend(&out, "fluxattn_requests_total{path=\"", Escape(key.first), "\",status=\"",
                    key.second, "\"} ", n, "\n");
  }
  Header(out, "fluxattn_finished_total", "counter",
         "Generations ended, by reason (stop, length, cancelled, error, timeout)");
  for (const auto& [reason, n] : finishes_) {
    absl::StrAppend(&out, "fluxattn_finished_total{reason=\"", Escape(reason), "\"} ", n, "\n");
  }
  Header(out, "fluxattn_prompt_tokens_total", "counter", "Prompt tokens of accepted requests");
  absl::StrAppend(&out, "fluxattn_prompt_tokens_total ", prompt_tokens_, "\n");
  Header(out, "fluxattn_completion_tokens_total", "counter", "Tokens returned to clients");
  absl::StrAppend(&out, "fluxattn_completion_tokens_total ", completion_tokens_, "\n");
  Header(out, "fluxattn_queue_depth", "gauge", "Requests waiting to join the running batch");
  absl::StrAppend(&out, "fluxattn_queue_depth ", gauges_.queued, "\n");
  Header(out, "fluxattn_running_requests", "gauge", "Requests in the running batch");
  absl::StrAppend(&out, "fluxattn_running_requests ", gauges_.running, "\n");
  Header(out, "fluxattn_kv_pages_used", "gauge", "KV pool pages held by requests");
  absl::StrAppend(&out, "fluxattn_kv_pages_used ", gauges_.kv_pages_used, "\n");
  Header(out, "fluxattn_kv_pages_free", "gauge", "KV pool pages free");
  absl::StrAppend(&out, "fluxattn_kv_pages_free ", gauges_.kv_pages_total - gauges_.kv_pages_used,
                  "\n");
  Header(out, "fluxattn_kv_pages_total", "gauge", "KV pool pages in all");
  absl::StrAppend(&out, "fluxattn_kv_pages_total ", gauges_.kv_pages_total, "\n");
  Header(out, "fluxattn_steps_total", "counter", "Engine steps run");
  absl::StrAppend(&out, "fluxattn_steps_total ", steps_, "\n");
  Header(out, "fluxattn_step_prefill_tokens_total", "counter", "Prompt tokens run by steps");
  absl::StrAppend(&out, "fluxattn_step_prefill_tokens_total ", step_prefill_tokens_, "\n");
  Header(out, "fluxattn_batch_size", "histogram", "Requests in each engine step");
  batch_size_.Render("fluxattn_batch_size", "", out);
  Header(out, "fluxattn_step_seconds", "histogram", "Duration of each engine step");
  step_seconds_.Render("fluxattn_step_seconds", "", out);
  Header(out, "fluxattn_time_to_first_token_seconds", "histogram",
         "From the request's arrival to its first token");
  ttft_.Render("fluxattn_time_to_first_token_seconds", "", out);
  Header(out, "fluxattn_inter_token_latency_seconds", "histogram",
         "Between consecutive tokens of a request");
  itl_.Render("fluxattn_inter_token_latency_seconds", "", out);
  Header(out, "fluxattn_routing_requests_total", "counter",
         "Finished requests with a routing trace, by routing policy");
  for (const auto& [policy, p] : policies_) {
    absl::StrAppend(&out, "fluxattn_routing_requests_total{policy=\"", Escape(policy), "\"} ",
                    p.requests, "\n");
  }
  Header(out, "fluxattn_routing_sa_ratio_sum", "counter",
         "Sum of the SA ratios of those requests (divide by the count for the mean)");
  for (const auto& [policy, p] : policies_) {
    absl::StrAppend(&out, "fluxattn_routing_sa_ratio_sum{policy=\"", Escape(policy), "\"} ",
                    p.sa_ratio_sum, "\n");
  }
  return out;
}

}  // namespace fluxattn::serve
