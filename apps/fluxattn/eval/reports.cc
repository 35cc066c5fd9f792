#include "eval/reports.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "absl/strings/str_format.h"
#include "eval/lengths.h"

namespace fluxattn::eval {
namespace {

using json = nlohmann::ordered_json;

// JSON has no NaN: unmeasured values are null.
json Number(double v) { return std::isfinite(v) ? json(v) : json(); }

std::string Ratio(double v) { return FormatNumber(v, 2); }

}  // namespace

std::string FormatNumber(double value, int decimals) {
  if (!std::isfinite(value)) return "-";
  return absl::StrFormat("%.*f", decimals, value);
}

std::string FormatMiB(size_t bytes) {
  return FormatNumber(static_cast<double>(bytes) / (1024.0 * 1024.0), 2);
}

TextTable BenchTable(const std::vector<BenchResult>& results) {
  // Batches of several requests add their size and the decode throughput.
  const bool batched =
      std::any_of(results.begin(), results.end(), [](const BenchResult& r) { return r.batch > 1; });
  std::vector<std::string> header = {"config",        "context",  "prefill s", "prefill tok/s",
                                     "decode ms/tok", "SA ratio", "KV MiB",    "KV full MiB"};
  if (batched) {
    header.insert(header.begin() + 2, "batch");
    header.push_back("decode tok/s");
  }
  // A routing policy that decided layers by a call adds its wall time per layer.
  const bool routed = std::any_of(results.begin(), results.end(),
                                  [](const BenchResult& r) { return r.route_ms_per_layer > 0; });
  if (routed) header.push_back("route ms/layer");
  TextTable t(header);
  for (const BenchResult& r : results) {
    std::vector<std::string> row = {r.config,
                                    FormatLength(r.context),
                                    FormatNumber(r.prefill_seconds, 3),
                                    FormatNumber(r.prefill_tokens_per_second, 0),
                                    FormatNumber(r.decode_ms_per_token, 2),
                                    Ratio(r.sa_ratio),
                                    FormatMiB(r.kv_bytes),
                                    FormatMiB(r.kv_bytes_full_cache)};
    if (batched) {
      row.insert(row.begin() + 2, std::to_string(r.batch));
      row.push_back(FormatNumber(r.decode_tokens_per_second, 0));
    }
    if (routed) row.push_back(FormatNumber(r.route_ms_per_layer, 3));
    t.AddRow(row);
  }
  return t;
}

CsvRow BenchCsvHeader() {
  return {"config",
          "context",
          "decode_tokens",
          "repeats",
          "prefill_seconds",
          "prefill_tokens_per_second",
          "decode_ms_per_token",
          "sa_ratio",
          "kv_bytes_after_prefill",
          "kv_bytes",
          "kv_bytes_full_cache",
          "batch",
          "decode_tokens_per_second"};
}

std::vector<CsvRow> BenchCsvRows(const std::vector<BenchResult>& results) {
  std::vector<CsvRow> rows;
  for (const BenchResult& r : results) {
    rows.push_back({r.config, std::to_string(r.context), std::to_string(r.decode_tokens),
                    std::to_string(r.repeats), FormatNumber(r.prefill_seconds, 6),
                    FormatNumber(r.prefill_tokens_per_second, 2),
                    FormatNumber(r.decode_ms_per_token, 4), FormatNumber(r.sa_ratio, 4),
                    std::to_string(r.kv_bytes_after_prefill), std::to_string(r.kv_bytes),
                    std::to_string(r.kv_bytes_full_cache), std::to_string(r.batch),
                    FormatNumber(r.decode_tokens_per_second, 2)});
  }
  return rows;
}

json BenchJson(const BenchResult& r) {
  return json{{"config", r.config},
              {"context", r.context},
              {"decode_tokens", r.decode_tokens},
              {"repeats", r.repeats},
              {"prefill_seconds", Number(r.prefill_seconds)},
              {"prefill_tokens_per_second", Number(r.prefill_tokens_per_second)},
              {"decode_ms_per_token", Number(r.decode_ms_per_token)},
              {"sa_ratio", Number(r.sa_ratio)},
              {"kv_bytes_after_prefill", r.kv_bytes_after_prefill},
              {"kv_bytes", r.kv_bytes},
              {"kv_bytes_full_cache", r.kv_bytes_full_cache},
              {"warmup", r.warmup},
              {"prefill_seconds_samples", r.prefill_samples},
              {"decode_ms_per_token_samples", r.decode_samples},
              {"dense_prefill_kernel", r.dense_prefill_kernel},
              {"batch", r.batch},
              {"decode_tokens_per_second", Number(r.decode_tokens_per_second)},
              {"route_ms_per_layer", Number(r.route_ms_per_layer)},
              {"route_ms_max", Number(r.route_ms_max)}};
}

TextTable EvalTable(const std::vector<EvalResult>& results) {
  TextTable t({"config", "task", "length", "samples", "accuracy", "ppl", "SA ratio", "prefill s",
               "time s"});
  for (const EvalResult& r : results) {
    t.AddRow({r.config, r.task, FormatLength(r.length), std::to_string(r.samples),
              FormatNumber(r.accuracy, 3), FormatNumber(r.perplexity, 2), Ratio(r.sa_ratio),
              FormatNumber(r.prefill_seconds, 3), FormatNumber(r.seconds, 2)});
  }
  return t;
}

CsvRow EvalCsvHeader() {
  return {"config",     "task",
          "length",     "samples",
          "correct",    "accuracy",
          "perplexity", "mean_prompt_tokens",
          "sa_ratio",   "prefill_seconds",
          "seconds"};
}

std::vector<CsvRow> EvalCsvRows(const std::vector<EvalResult>& results) {
  std::vector<CsvRow> rows;
  for (const EvalResult& r : results) {
    rows.push_back({r.config, r.task, std::to_string(r.length), std::to_string(r.samples),
                    std::to_string(r.correct), FormatNumber(r.accuracy, 4),
                    FormatNumber(r.perplexity, 4), FormatNumber(r.mean_prompt_tokens, 1),
                    FormatNumber(r.sa_ratio, 4), FormatNumber(r.prefill_seconds, 6),
                    FormatNumber(r.seconds, 3)});
  }
  return rows;
}

json EvalJson(const EvalResult& r, bool details) {
  json j{{"config", r.config},
         {"task", r.task},
         {"length", r.length},
         {"samples", r.samples},
         {"correct", r.correct},
         {"accuracy", Number(r.accuracy)},
         {"perplexity", Number(r.perplexity)},
         {"mean_prompt_tokens", Number(r.mean_prompt_tokens)},
         {"sa_ratio", Number(r.sa_ratio)},
         {"prefill_seconds", Number(r.prefill_seconds)},
         {"seconds", Number(r.seconds)}};
  if (details) {
    json samples = json::array();
    for (const SampleResult& s : r.details) {
      json one{{"seed", s.seed},
               {"prompt_tokens", s.prompt_tokens},
               {"sa_ratio", s.sa_ratio},
               {"prefill_seconds", s.prefill_seconds}};
      if (r.task == "lm_ppl") {
        one["nll"] = Number(s.nll);
      } else {
        one["expected"] = s.expected;
        one["output"] = s.output;
        one["correct"] = s.correct;
      }
      samples.push_back(std::move(one));
    }
    j["details"] = std::move(samples);
  }
  return j;
}

std::vector<CompareRow> BuildCompareRows(const std::vector<std::string>& configs,
                                         const std::vector<int64_t>& lengths,
                                         const std::vector<std::string>& tasks,
                                         const std::vector<BenchResult>& bench,
                                         const std::vector<EvalResult>& eval) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  std::vector<CompareRow> rows;
  for (const std::string& config : configs) {
    for (int64_t length : lengths) {
      CompareRow row;
      row.config = config;
      row.length = length;
      row.tasks = tasks;
      row.accuracy.assign(tasks.size(), kNaN);
      row.mean_accuracy = kNaN;
      row.perplexity = kNaN;
      row.sa_ratio = kNaN;
      row.prefill_seconds = row.prefill_speedup = kNaN;
      row.decode_ms_per_token = row.decode_speedup = kNaN;
      double acc_sum = 0.0, sa_sum = 0.0;
      int acc_n = 0, sa_n = 0;
      for (const EvalResult& e : eval) {
        if (e.config != config || e.length != length) continue;
        for (size_t t = 0; t < tasks.size(); ++t) {
          if (tasks[t] == e.task) row.accuracy[t] = e.accuracy;
        }
        if (std::isfinite(e.accuracy)) acc_sum += e.accuracy, ++acc_n;
        if (std::isfinite(e.perplexity)) row.perplexity = e.perplexity;
        sa_sum += e.sa_ratio;
        ++sa_n;
      }
      if (acc_n > 0) row.mean_accuracy = acc_sum / acc_n;
      if (sa_n > 0) row.sa_ratio = sa_sum / sa_n;
      for (const BenchResult& b : bench) {
        if (b.config != config || b.context != length) continue;
        row.prefill_seconds = b.prefill_seconds;
        row.decode_ms_per_token = b.decode_ms_per_token;
        row.kv_bytes = b.kv_bytes;
        row.kv_bytes_full_cache = b.kv_bytes_full_cache;
        if (sa_n == 0) row.sa_ratio = b.sa_ratio;
      }
      rows.push_back(std::move(row));
    }
  }
  // Speed-ups against the first config at the same length (NaN propagates when unmeasured).
  for (CompareRow& row : rows) {
    for (const CompareRow& base : rows) {
      if (base.config != configs.front() || base.length != row.length) continue;
      row.prefill_speedup = base.prefill_seconds / row.prefill_seconds;
      row.decode_speedup = base.decode_ms_per_token / row.decode_ms_per_token;
    }
  }
  return rows;
}

TextTable CompareTable(const std::vector<CompareRow>& rows) {
  std::vector<std::string> header = {"config", "length"};
  const std::vector<std::string> tasks = rows.empty() ? std::vector<std::string>() : rows[0].tasks;
  for (const std::string& task : tasks) {
    header.push_back(task == "lm_ppl" ? "ppl" : task);
  }
  for (const char* h : {"SA ratio", "prefill s", "prefill x", "decode ms/tok", "decode x", "KV MiB",
                        "KV full MiB"}) {
    header.push_back(h);
  }
  TextTable t(header);
  for (const CompareRow& r : rows) {
    std::vector<std::string> cells = {r.config, FormatLength(r.length)};
    for (size_t i = 0; i < r.tasks.size(); ++i) {
      cells.push_back(r.tasks[i] == "lm_ppl" ? FormatNumber(r.perplexity, 1)
                                             : FormatNumber(r.accuracy[i], 2));
    }
    cells.push_back(Ratio(r.sa_ratio));
    cells.push_back(FormatNumber(r.prefill_seconds, 3));
    cells.push_back(FormatNumber(r.prefill_speedup, 2));
    cells.push_back(FormatNumber(r.decode_ms_per_token, 2));
    cells.push_back(FormatNumber(r.decode_speedup, 2));
    cells.push_back(FormatMiB(r.kv_bytes));
    cells.push_back(FormatMiB(r.kv_bytes_full_cache));
    t.AddRow(std::move(cells));
  }
  return t;
}

CsvRow CompareCsvHeader(const std::vector<std::string>& tasks) {
  CsvRow h = {"config", "length"};
  for (const std::string& task : tasks) {
    h.push_back(task == "lm_ppl" ? "lm_ppl_perplexity" : task + "_accuracy");
  }
  for (const char* c :
       {"mean_accuracy", "sa_ratio", "prefill_seconds", "prefill_speedup", "decode_ms_per_token",
        "decode_speedup", "kv_bytes", "kv_bytes_full_cache"}) {
    h.push_back(c);
  }
  return h;
}

std::vector<CsvRow> CompareCsvRows(const std::vector<CompareRow>& rows) {
  std::vector<CsvRow> out;
  for (const CompareRow& r : rows) {
    CsvRow c = {r.config, std::to_string(r.length)};
    for (size_t i = 0; i < r.tasks.size(); ++i) {
      c.push_back(r.tasks[i] == "lm_ppl" ? FormatNumber(r.perplexity, 4)
                                         : FormatNumber(r.accuracy[i], 4));
    }
    c.push_back(FormatNumber(r.mean_accuracy, 4));
    c.push_back(FormatNumber(r.sa_ratio, 4));
    c.push_back(FormatNumber(r.prefill_seconds, 6));
    c.push_back(FormatNumber(r.prefill_speedup, 4));
    c.push_back(FormatNumber(r.decode_ms_per_token, 4));
    c.push_back(FormatNumber(r.decode_speedup, 4));
    c.push_back(std::to_string(r.kv_bytes));
    c.push_back(std::to_string(r.kv_bytes_full_cache));
    out.push_back(std::move(c));
  }
  return out;
}

json CompareJson(const std::vector<CompareRow>& rows) {
  json out = json::array();
  for (const CompareRow& r : rows) {
    json acc = json::object();
    for (size_t i = 0; i < r.tasks.size(); ++i) {
      if (r.tasks[i] != "lm_ppl") acc[r.tasks[i]] = Number(r.accuracy[i]);
    }
    out.push_back(json{{"config", r.config},
                       {"length", r.length},
                       {"accuracy", acc},
                       {"mean_accuracy", Number(r.mean_accuracy)},
                       {"perplexity", Number(r.perplexity)},
                       {"sa_ratio", Number(r.sa_ratio)},
                       {"prefill_seconds", Number(r.prefill_seconds)},
                       {"prefill_speedup", Number(r.prefill_speedup)},
                       {"decode_ms_per_token", Number(r.decode_ms_per_token)},
                       {"decode_speedup", Number(r.decode_speedup)},
                       {"kv_bytes", r.kv_bytes},
                       {"kv_bytes_full_cache", r.kv_bytes_full_cache}});
  }
  return out;
}

ScatterPlot ComparePlot(const std::vector<CompareRow>& rows) {
  ScatterPlot plot;
  plot.title = "Accuracy against prefill time";
  plot.x_label = "prefill time (s)";
  plot.y_label = "mean exact-match accuracy";
  plot.y_min = 0.0;
  plot.y_max = 1.0;
  for (const CompareRow& r : rows) {
    if (!std::isfinite(r.mean_accuracy) || !std::isfinite(r.prefill_seconds)) continue;
    PlotSeries* series = nullptr;
    for (PlotSeries& s : plot.series) {
      if (s.name == r.config) series = &s;
    }
    if (series == nullptr) {
      plot.series.push_back({r.config, {}});
      series = &plot.series.back();
    }
    series->points.push_back({r.prefill_seconds, r.mean_accuracy, FormatLength(r.length)});
  }
  return plot;
}

}  // namespace fluxattn::eval
