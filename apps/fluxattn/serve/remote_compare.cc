#include "serve/remote_compare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "eval/scoring.h"
#include "eval/text_table.h"
#include "httplib.h"

namespace fluxattn::serve {
namespace {

using json = nlohmann::json;

struct Job {
  size_t policy = 0;
  eval::TaskKind kind = eval::TaskKind::kPasskey;
  int64_t length = 0;
  uint64_t seed = 0;
  std::vector<int64_t> prompt;
  std::string answer;
  int max_tokens = 0;
  // Filled by the request.
  std::string output;
  bool correct = false;
  double seconds = 0.0;
  double sa_ratio = -1.0;
  int64_t completion_tokens = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double k = (v.size() - 1) * q / 100.0;
  const size_t lo = static_cast<size_t>(k), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (k - lo);
}

std::unique_ptr<httplib::Client> Connect(const RemoteCompareOptions& o) {
  auto client = std::make_unique<httplib::Client>(o.url);
  const auto timeout = std::chrono::duration<double>(o.timeout_s);
  client->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  client->set_write_timeout(std::chrono::seconds(60));
  client->set_connection_timeout(std::chrono::seconds(10));
  if (!o.api_key.empty()) client->set_bearer_token_auth(o.api_key);
  return client;
}

// The server's error message from an OpenAI error body (or the body itself).
std::string ServerMessage(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].value("message", json()).is_string()) {
    return j["error"]["message"].get<std::string>();
  }
  return body.substr(0, 200);
}

absl::Status RunJob(httplib::Client& client, const std::string& model,
                    const std::string& policy_name, Job& job) {
  // No stop string: the answer is the output's first line anyway, and a request cut short by
  // one does not report its SA ratio.
  json body = {{"model", model},
               {"prompt", job.prompt},
               {"max_tokens", job.max_tokens},
               {"temperature", 0},
               {"seed", job.seed}};
  if (policy_name != "default") body["routing"] = policy_name;
  const auto t0 = std::chrono::steady_clock::now();
  httplib::Result res = client.Post("/v1/completions", body.dump(), "application/json");
  job.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!res) {
    return absl::UnavailableError(absl::StrCat("POST /v1/completions: expected a response, found ",
                                               httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return absl::InvalidArgumentError(absl::StrCat("routing policy \"", policy_name,
                                                   "\": the server answered ", res->status, ": ",
                                                   ServerMessage(res->body)));
  }
  json j = json::parse(res->body, nullptr, false);
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() ||
      j["choices"].empty() || !j["choices"][0].value("text", json()).is_string()) {
    return absl::DataLossError("POST /v1/completions: expected a completion object, found " +
                               res->body.substr(0, 200));
  }
  job.output = j["choices"][0]["text"].get<std::string>();
  job.correct = eval::ExactMatch(job.output, job.answer);
  if (j.contains("usage") && j["usage"].is_object()) {
    job.completion_tokens = j["usage"].value("completion_tokens", int64_t{0});
  }
  if (j.contains("fluxattn") && j["fluxattn"].is_object() &&
      j["fluxattn"].value("sa_ratio", json()).is_number()) {
    job.sa_ratio = j["fluxattn"]["sa_ratio"].get<double>();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<nlohmann::ordered_json> RunRemoteCompare(const RemoteCompareOptions& o,
                                                        const models::Tokenizer& tokenizer,
                                                        std::ostream& table) {
  if (o.policies.empty()) return absl::InvalidArgumentError("--routing: expected a policy name");
  // The served model's id, and a first check that the URL is a server.
  auto probe = Connect(o);
  httplib::Result models = probe->Get("/v1/models");
  if (!models) {
    return absl::UnavailableError(absl::StrCat(o.url, ": expected an OpenAI-compatible server, ",
                                               "found ", httplib::to_string(models.error())));
  }
  json listing = json::parse(models->body, nullptr, false);
  if (models->status != 200 || !listing.is_object() || !listing.contains("data") ||
      !listing["data"].is_array() || listing["data"].empty() ||
      !listing["data"][0].value("id", json()).is_string()) {
    return absl::FailedPreconditionError(
        absl::StrCat(o.url, "/v1/models: expected a model list, found HTTP ", models->status, ": ",
                     ServerMessage(models->body)));
  }
  const std::string model = listing["data"][0]["id"].get<std::string>();

  // Every sample once per policy, the policies interleaved.
  eval::TaskGenerator generator(tokenizer);
  std::vector<Job> jobs;
  for (eval::TaskKind kind : o.tasks) {
    if (kind == eval::TaskKind::kLmPerplexity) continue;
    for (int64_t length : o.lengths) {
      for (int i = 0; i < o.samples; ++i) {
        const uint64_t seed = o.seed + static_cast<uint64_t>(i);
        absl::StatusOr<eval::TaskSample> sample = generator.Generate(kind, length, seed);
        if (!sample.ok()) return sample.status();
        absl::StatusOr<std::vector<int64_t>> answer_ids =
            generator.Encode(absl::StrCat(" ", sample->answer));
        if (!answer_ids.ok()) return answer_ids.status();
        for (size_t p = 0; p < o.policies.size(); ++p) {
          Job job;
          job.policy = p;
          job.kind = kind;
          job.length = length;
          job.seed = seed;
          job.prompt = sample->prompt_ids;
          job.answer = sample->answer;
          // The answer plus a few tokens of spacing or punctuation, as `fluxattn eval` allows.
          job.max_tokens = static_cast<int>(answer_ids->size()) + 6;
          jobs.push_back(std::move(job));
        }
      }
    }
  }
  if (jobs.empty()) {
    return absl::InvalidArgumentError(
        "--tasks: expected at least one generation task (lm_ppl "
        "needs prompt log-likelihoods, which the API does not give)");
  }

  std::atomic<size_t> next{0};
  std::mutex mu;
  absl::Status failure;
  const auto wall0 = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  const int threads = std::max(1, std::min<int>(o.concurrency, static_cast<int>(jobs.size())));
  for (int w = 0; w < threads; ++w) {
    workers.emplace_back([&] {
      auto client = Connect(o);
      for (size_t i; (i = next.fetch_add(1)) < jobs.size();) {
        absl::Status st = RunJob(*client, model, o.policies[jobs[i].policy], jobs[i]);
        if (!st.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (failure.ok()) failure = st;
          next.store(jobs.size());
        }
      }
    });
  }
  for (std::thread& t : workers) t.join();
  if (!failure.ok()) return failure;
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();

  // Per policy: accuracy per (task, length) and overall, latency, SA ratio.
  nlohmann::ordered_json report;
  report["server"] = o.url;
  report["model"] = model;
  report["samples"] = o.samples;
  report["concurrency"] = threads;
  report["seconds"] = wall;
  std::vector<std::string> header = {"policy"};
  std::vector<std::pair<eval::TaskKind, int64_t>> cells;
  for (eval::TaskKind kind : o.tasks) {
    if (kind == eval::TaskKind::kLmPerplexity) continue;
    for (int64_t length : o.lengths) {
      cells.push_back({kind, length});
      header.push_back(absl::StrCat(eval::TaskName(kind), "@", length));
    }
  }
  for (const char* h : {"accuracy", "SA ratio", "latency p50 s", "p90 s", "requests"}) {
    header.push_back(h);
  }
  eval::TextTable text(header);
  nlohmann::ordered_json policies = nlohmann::ordered_json::array();
  for (size_t p = 0; p < o.policies.size(); ++p) {
    std::vector<std::string> row = {o.policies[p]};
    nlohmann::ordered_json entry;
    entry["policy"] = o.policies[p];
    nlohmann::ordered_json per_cell = nlohmann::ordered_json::array(),
                           samples = nlohmann::ordered_json::array();
    std::vector<double> latency;
    double sa = 0.0;
    int sa_count = 0, correct = 0, total = 0;
    for (const auto& [kind, length] : cells) {
      int c = 0, n = 0;
      for (const Job& j : jobs) {
        if (j.policy != p || j.kind != kind || j.length != length) continue;
        ++n;
        c += j.correct;
        latency.push_back(j.seconds);
        if (j.sa_ratio >= 0) {
          sa += j.sa_ratio;
          ++sa_count;
        }
        nlohmann::ordered_json s;
        s["task"] = eval::TaskName(kind);
        s["length"] = length;
        s["seed"] = j.seed;
        s["prompt_tokens"] = j.prompt.size();
        s["expected"] = j.answer;
        s["output"] = j.output;
        s["correct"] = j.correct;
        s["seconds"] = j.seconds;
        s["sa_ratio"] = j.sa_ratio >= 0 ? json(j.sa_ratio) : json();
        samples.push_back(s);
      }
      correct += c;
      total += n;
      per_cell.push_back({{"task", eval::TaskName(kind)},
                          {"length", length},
                          {"correct", c},
                          {"samples", n},
                          {"accuracy", n ? static_cast<double>(c) / n : 0.0}});
      row.push_back(absl::StrFormat("%.2f", n ? static_cast<double>(c) / n : 0.0));
    }
    const double accuracy = total ? static_cast<double>(correct) / total : 0.0;
    entry["accuracy"] = accuracy;
    entry["sa_ratio"] = sa_count ? json(sa / sa_count) : json();
    entry["latency_p50_s"] = Percentile(latency, 50);
    entry["latency_p90_s"] = Percentile(latency, 90);
    entry["requests"] = total;
    entry["tasks"] = per_cell;
    entry["samples"] = samples;
    row.push_back(absl::StrFormat("%.3f", accuracy));
    row.push_back(sa_count ? absl::StrFormat("%.3f", sa / sa_count) : std::string("-"));
    row.push_back(absl::StrFormat("%.3f", Percentile(latency, 50)));
    row.push_back(absl::StrFormat("%.3f", Percentile(latency, 90)));
    row.push_back(absl::StrCat(total));
    text.AddRow(row);
    policies.push_back(entry);
  }
  report["policies"] = policies;
  table << "compare against " << o.url << " (model '" << model << "', " << o.samples
        << " samples per task and length, " << threads << " requests in flight, "
        << absl::StrFormat("%.1f", wall) << " s)\n"
        << text.Render();
  return report;
}

}  // namespace fluxattn::serve
