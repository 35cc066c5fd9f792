// Joining bench and eval results into compare rows, and the compare CSV read back.
#include "eval/reports.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "eval/csv.h"
#include "gtest/gtest.h"

namespace fluxattn::eval {
namespace {

TEST(BuildCompareRows, SpeedupsAreAgainstTheFirstConfigAtTheSameLength) {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> u(0.1, 5.0);
  const std::vector<std::string> configs = {"base", "hybrid", "flux"};
  const std::vector<int64_t> lengths = {1024, 4096};
  const std::vector<std::string> tasks = {"passkey", "lm_ppl", "kv_retrieval"};
  std::vector<BenchResult> bench;
  std::vector<EvalResult> eval;
  for (const std::string& c : configs) {
    for (int64_t len : lengths) {
      BenchResult b;
      b.config = c;
      b.context = len;
      b.prefill_seconds = u(rng);
      b.decode_ms_per_token = u(rng);
      b.kv_bytes = static_cast<size_t>(u(rng) * 1e6);
      bench.push_back(b);
      for (const std::string& t : tasks) {
        EvalResult e;
        e.config = c;
        e.task = t;
        e.length = len;
        e.accuracy = t == "lm_ppl" ? NAN : u(rng) / 5.0;
        e.perplexity = t == "lm_ppl" ? u(rng) * 10 : NAN;
        e.sa_ratio = u(rng) / 5.0;
        eval.push_back(e);
      }
    }
  }
  // Inputs in scrambled order must not matter.
  std::shuffle(bench.begin(), bench.end(), rng);
  std::shuffle(eval.begin(), eval.end(), rng);
  const std::vector<CompareRow> rows = BuildCompareRows(configs, lengths, tasks, bench, eval);
  ASSERT_EQ(rows.size(), 6u);
  for (const CompareRow& row : rows) {
    const BenchResult* mine = nullptr;
    const BenchResult* base = nullptr;
    for (const BenchResult& b : bench) {
      if (b.context != row.length) continue;
      if (b.config == row.config) mine = &b;
      if (b.config == "base") base = &b;
    }
    ASSERT_TRUE(mine && base);
    EXPECT_DOUBLE_EQ(row.prefill_speedup, base->prefill_seconds / mine->prefill_seconds);
    EXPECT_DOUBLE_EQ(row.decode_speedup, base->decode_ms_per_token / mine->decode_ms_per_token);
    EXPECT_EQ(row.kv_bytes, mine->kv_bytes);
    double acc = 0, sa = 0;
    int n_acc = 0, n = 0;
    for (const EvalResult& e : eval) {
      if (e.config != row.config || e.length != row.length) continue;
      for (size_t t = 0; t < tasks.size(); ++t) {
        if (tasks[t] != e.task) continue;
        if (e.task == "lm_ppl") {
          EXPECT_TRUE(std::isnan(row.accuracy[t]));
          EXPECT_DOUBLE_EQ(row.perplexity, e.perplexity);
        } else {
          EXPECT_DOUBLE_EQ(row.accuracy[t], e.accuracy);
          acc += e.accuracy;
          ++n_acc;
        }
      }
      sa += e.sa_ratio;
      ++n;
    }
    EXPECT_NEAR(row.mean_accuracy, acc / n_acc, 1e-12);
    EXPECT_NEAR(row.sa_ratio, sa / n, 1e-12);
    if (row.config == "base") EXPECT_DOUBLE_EQ(row.prefill_speedup, 1.0);
  }

  // The CSV has one record per row and the numbers read back.
  auto parsed = ParseCsv(FormatCsv(CompareCsvHeader(tasks), CompareCsvRows(rows)));
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), rows.size() + 1);
  const CsvRow& header = (*parsed)[0];
  const size_t speedup_col =
      std::find(header.begin(), header.end(), "prefill_speedup") - header.begin();
  ASSERT_LT(speedup_col, header.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ((*parsed)[r + 1][0], rows[r].config);
    double v;
    ASSERT_TRUE(absl::SimpleAtod((*parsed)[r + 1][speedup_col], &v));
    EXPECT_NEAR(v, rows[r].prefill_speedup, 1e-4);
  }
  // The plot has one series per config and one point per length.
  const ScatterPlot plot = ComparePlot(rows);
  ASSERT_EQ(plot.series.size(), configs.size());
  for (const PlotSeries& s : plot.series) EXPECT_EQ(s.points.size(), lengths.size());
}

TEST(BuildCompareRows, MissingMeasurementsStayUnmeasured) {
  const std::vector<CompareRow> rows =
      BuildCompareRows({"a", "b"}, {512}, {"passkey"}, /*bench=*/{}, /*eval=*/{});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(std::isnan(rows[1].prefill_speedup));
  EXPECT_TRUE(std::isnan(rows[1].mean_accuracy));
  EXPECT_EQ(FormatNumber(rows[1].prefill_speedup, 2), "-");
  EXPECT_TRUE(ComparePlot(rows).series.empty());
}

}  // namespace
}  // namespace fluxattn::eval
