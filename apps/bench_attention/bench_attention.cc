// Attention on the CPU: prefill time against sequence length for each backend (sparse cost
// should grow linearly, full attention quadratically) and decode time per token against context
// length. Prints a table and, with --json, writes the measurements as JSON.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench_backends.h"
#include "fluxattn/attention/layout_builder.h"
#include "fluxattn/attention/parallel_for.h"
#include "fluxattn/attention_backend.h"
#include "fluxattn/testing/reference_attention.h"
#include "nlohmann/json.hpp"

namespace fluxattn::bench {
namespace {

struct Options {
  std::vector<int64_t> lengths = {1024, 2048, 4096, 8192, 16384, 32768};
  std::vector<std::string> backends = {"full", "streaming", "xattention", "quest", "triangle"};
  int q_heads = 32;
  int kv_heads = 8;
  int head_dim = 128;
  int page_tokens = 256;
  int repeats = 3;
  int decode_repeats = 20;
  int threads = 0;
  bool skip_prefill = false;
  bool skip_decode = false;
  std::string json_path;
  std::vector<std::string> plugin_dirs;
};

struct Inputs {
  std::vector<float> q, k, v;
  std::unique_ptr<testing::PagedKv> paged;
  KvView view;
};

// Random queries for `length` positions and KV paged like the engine's pool (shuffled pages).
Inputs MakeInputs(const Options& o, int64_t length, uint64_t seed) {
  Inputs in;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  in.q.resize(length * o.q_heads * o.head_dim);
  for (float& x : in.q) x = dist(rng);
  const int64_t row = static_cast<int64_t>(o.kv_heads) * o.head_dim;
  in.k.resize(length * row);
  in.v.resize(length * row);
  for (float& x : in.k) x = dist(rng);
  for (float& x : in.v) x = dist(rng);
  in.paged = std::make_unique<testing::PagedKv>(in.k, in.v, length, o.kv_heads, o.head_dim,
                                                o.page_tokens, seed);
  in.view = in.paged->view();
  return in;
}

AttentionProblem MakeProblem(const Options& o, const Inputs& in, int64_t q_pos0, int64_t n,
                             AttentionState* state) {
  AttentionProblem p;
  p.num_q_heads = o.q_heads;
  p.num_kv_heads = o.kv_heads;
  p.head_dim = o.head_dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(o.head_dim));
  p.phase = n == 1 ? AttentionPhase::kDecode : AttentionPhase::kPrefill;
  p.q_pos0 = q_pos0;
  p.num_queries = n;
  p.q =
      testing::HostQueries(in.q.data() + q_pos0 * o.q_heads * o.head_dim, n, o.q_heads, o.head_dim);
  p.kv = in.view;
  p.kv.length = q_pos0 + n;
  p.state = state;
  return p;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// CPU time of the whole process (all threads): unlike wall time it does not grow when other
// programs compete for the cores, so ratios stay meaningful on a shared machine.
double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Measurement {
  double seconds = 0;      // wall time, best of the repeats
  double cpu_seconds = 0;  // process CPU time, best of the repeats
  double layout_seconds = 0;
  double density = 0;  // attended pairs / causal pairs (layout head 0)
};

absl::StatusOr<Measurement> TimePrefill(AttentionBackend& backend, const Options& o,
                                        const Inputs& in, int64_t length) {
  Measurement m;
  m.seconds = 1e30;
  std::vector<float> out(length * o.q_heads * o.head_dim);
  for (int rep = 0; rep < o.repeats; ++rep) {
    std::unique_ptr<AttentionState> state = backend.CreateState(o.q_heads, o.kv_heads, o.head_dim);
    AttentionProblem p = MakeProblem(o, in, 0, length, state.get());
    const double c0 = ProcessCpuSeconds();
    auto t0 = std::chrono::steady_clock::now();
    absl::Status status = RunSingleProblem(backend, p, out.data());
    auto t1 = std::chrono::steady_clock::now();
    const double c1 = ProcessCpuSeconds();
    if (!status.ok()) return status;
    m.seconds = std::min(m.seconds, Seconds(t1 - t0));
    m.cpu_seconds = rep == 0 ? c1 - c0 : std::min(m.cpu_seconds, c1 - c0);
    if (rep == 0) {
      BlockSparseLayout layout;
      auto l0 = std::chrono::steady_clock::now();
      absl::Status built = backend.BuildLayout(p, &layout);
      m.layout_seconds = Seconds(std::chrono::steady_clock::now() - l0);
      if (!built.ok()) return built;
      const double causal = 0.5 * static_cast<double>(length) * (length + 1);
      m.density = static_cast<double>(CountAttendedPairs(layout, 0)) / causal;
    }
  }
  return m;
}

// Decode of the token at position `context - 1`, after a prefill over the positions before it
// (so stateful backends have their state); best of decode_repeats.
absl::StatusOr<Measurement> TimeDecode(AttentionBackend& backend, const Options& o,
                                       const Inputs& in, int64_t context) {
  Measurement m;
  m.seconds = 1e30;
  std::unique_ptr<AttentionState> state = backend.CreateState(o.q_heads, o.kv_heads, o.head_dim);
  if (state != nullptr) {
    // Stateful backends build their state while prefilling; only a short chunk is timed here.
    std::vector<float> out(o.q_heads * o.head_dim);
    AttentionProblem p = MakeProblem(o, in, context - 2, 1, state.get());
    p.kv.length = context - 1;
    absl::Status warm = RunSingleProblem(backend, p, out.data());
    if (!warm.ok()) return warm;
  }
  std::vector<float> out(o.q_heads * o.head_dim);
  for (int rep = 0; rep < o.decode_repeats; ++rep) {
    AttentionProblem p = MakeProblem(o, in, context - 1, 1, state.get());
    const double c0 = ProcessCpuSeconds();
    auto t0 = std::chrono::steady_clock::now();
    absl::Status status = RunSingleProblem(backend, p, out.data());
    auto t1 = std::chrono::steady_clock::now();
    const double c1 = ProcessCpuSeconds();
    if (!status.ok()) return status;
    m.seconds = std::min(m.seconds, Seconds(t1 - t0));
    m.cpu_seconds = rep == 0 ? c1 - c0 : std::min(m.cpu_seconds, c1 - c0);
  }
  return m;
}

int Main(int argc, char** argv) {
  Options o;
  CLI::App app{"Attention on the CPU: prefill and decode time per backend and length."};
  app.add_option("--lengths", o.lengths, "Sequence lengths")->delimiter(',');
  app.add_option("--backends", o.backends, "Backends (see bench_backends.cc)")->delimiter(',');
  app.add_option("--q-heads", o.q_heads, "Query heads");
  app.add_option("--kv-heads", o.kv_heads, "KV heads");
  app.add_option("--head-dim", o.head_dim, "Head dimension");
  app.add_option("--page-tokens", o.page_tokens, "KV page size");
  app.add_option("--repeats", o.repeats, "Prefill repeats (best is kept)");
  app.add_option("--decode-repeats", o.decode_repeats, "Decode repeats (best is kept)");
  app.add_option("--threads", o.threads, "Threads (0: all cores)");
  app.add_flag("--skip-prefill", o.skip_prefill, "Only decode");
  app.add_flag("--skip-decode", o.skip_decode, "Only prefill");
  app.add_option("--json", o.json_path, "Write the measurements here as JSON");
  app.add_option("--plugin-dir", o.plugin_dirs, "Extra plugin directories (searched first)");
  CLI11_PARSE(app, argc, argv);
  SetCpuAttentionThreads(o.threads);

  PluginRegistry registry;
  absl::Status scanned = registry.ScanSearchPath(o.plugin_dirs);
  if (!scanned.ok()) {
    std::fprintf(stderr, "bench_attention: %s\n", std::string(scanned.message()).c_str());
    return 2;
  }
  std::map<std::string, BenchInstances> backends;
  for (const std::string& name : o.backends) {
    absl::StatusOr<BenchInstances> made = MakeBenchBackend(registry, name);
    if (!made.ok()) {
      std::fprintf(stderr, "bench_attention: backend %s: %s\n", name.c_str(),
                   std::string(made.status().message()).c_str());
      return 2;
    }
    backends[name] = std::move(*made);
  }
  nlohmann::json report;
  report["config"] = {{"q_heads", o.q_heads},
                      {"kv_heads", o.kv_heads},
                      {"head_dim", o.head_dim},
                      {"page_tokens", o.page_tokens},
                      {"threads", CpuAttentionThreads()},
                      {"backends", BenchBackendDescriptions()}};
  std::printf("# Hq=%d Hkv=%d D=%d page=%d threads=%d\n", o.q_heads, o.kv_heads, o.head_dim,
              o.page_tokens, CpuAttentionThreads());

  auto fail = [](const std::string& what, const absl::Status& status) {
    std::fprintf(stderr, "bench_attention: %s: %s\n", what.c_str(),
                 std::string(status.message()).c_str());
    return 1;
  };
  if (!o.skip_prefill) {
    std::printf("\n## Prefill, one layer (ratio = full / backend, by CPU time)\n");
    std::printf("%8s  %-11s %12s %12s %9s %8s\n", "length", "backend", "wall_ms", "cpu_ms", "ratio",
                "density");
    for (int64_t length : o.lengths) {
      Inputs in = MakeInputs(o, length, 1234 + length);
      double full_cpu = 0;
      for (const std::string& name : o.backends) {
        absl::StatusOr<Measurement> m = TimePrefill(*backends[name].prefill, o, in, length);
        if (!m.ok()) return fail(absl::StrCat(name, " prefill ", length), m.status());
        if (name == "full") full_cpu = m->cpu_seconds;
        const double ratio = full_cpu > 0 ? full_cpu / m->cpu_seconds : 0;
        std::printf("%8lld  %-11s %12.2f %12.2f %9.2f %8.3f\n", static_cast<long long>(length),
                    name.c_str(), m->seconds * 1e3, m->cpu_seconds * 1e3, ratio, m->density);
        std::fflush(stdout);
        report["prefill"].push_back({{"backend", name},
                                     {"length", length},
                                     {"wall_ms", m->seconds * 1e3},
                                     {"cpu_ms", m->cpu_seconds * 1e3},
                                     {"layout_ms", m->layout_seconds * 1e3},
                                     {"density", m->density},
                                     {"full_over_backend_cpu", ratio}});
      }
    }
  }
  if (!o.skip_decode) {
    std::printf("\n## Decode, one token, one layer (ratio = full / backend, by CPU time)\n");
    std::printf("%8s  %-11s %12s %12s %9s\n", "context", "backend", "wall_ms", "cpu_ms", "ratio");
    for (int64_t length : o.lengths) {
      Inputs in = MakeInputs(o, length, 99 + length);
      double full_cpu = 0;
      for (const std::string& name : o.backends) {
        absl::StatusOr<Measurement> m = TimeDecode(backends[name].decode_backend(), o, in, length);
        if (!m.ok()) return fail(absl::StrCat(name, " decode ", length), m.status());
        if (name == "full") full_cpu = m->cpu_seconds;
        const double ratio = full_cpu > 0 ? full_cpu / m->cpu_seconds : 0;
        std::printf("%8lld  %-11s %12.3f %12.3f %9.2f\n", static_cast<long long>(length),
                    name.c_str(), m->seconds * 1e3, m->cpu_seconds * 1e3, ratio);
        std::fflush(stdout);
        report["decode"].push_back({{"backend", name},
                                    {"context", length},
                                    {"wall_ms", m->seconds * 1e3},
                                    {"cpu_ms", m->cpu_seconds * 1e3},
                                    {"full_over_backend_cpu", ratio}});
      }
    }
  }
  if (!o.json_path.empty()) {
    std::ofstream(o.json_path) << report.dump(2) << "\n";
  } else {
    std::printf("\n%s\n", report.dump().c_str());
  }
  return 0;
}

}  // namespace
}  // namespace fluxattn::bench

int main(int argc, char** argv) { return fluxattn::bench::Main(argc, argv); }
