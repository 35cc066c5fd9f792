// Prefill and decode tokens/s of the CPU engine on a checkpoint or on a random model of a given
// shape built in memory, for several context lengths and thread counts. Attention goes through
// the `full` plugin found on the plugin search path, as in `fluxattn generate`. Every point is
// run --repeats times; the table shows medians, the JSON each run, the median and the spread.
// --gemm M,N,K instead times the dense kernel y[M, N] = x[M, K] W[N, K]^T with float32 and
// bfloat16 weights. --read-bandwidth MIB instead times reading MIB MiB of memory on the thread
// pool: the ceiling that decode, which streams every weight once per token, runs against.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "fluxattn/config.h"
#include "fluxattn/engine.h"
#include "fluxattn/kernels/cpu_dense.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "fluxattn/thread_pool.h"
#include "nlohmann/json.hpp"

namespace fluxattn {
namespace {

struct Args {
  std::string model;
  int hidden = 512, layers = 4, heads = 8, kv_heads = 2, head_dim = 64, intermediate = 1408;
  int vocab = 4096;
  std::vector<int> contexts = {128, 512, 2048};
  std::vector<int> threads = {1, 2};
  int decode_tokens = 16;
  int repeats = 1;
  std::vector<int64_t> gemm;  // M, N, K
  int64_t read_mib = 0;       // --read-bandwidth
  bool read_given = false;
  std::string json_path;
  std::string activations = "f32";  // of the matrix products: f32 or bf16
  DType act() const { return activations == "bf16" ? DType::kBF16 : DType::kF32; }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// {"median", "min", "max", "spread" ((max - min) / median), "runs"}.
nlohmann::json Summary(const std::vector<double>& runs) {
  const double med = Median(runs);
  const double lo = *std::min_element(runs.begin(), runs.end());
  const double hi = *std::max_element(runs.begin(), runs.end());
  return {{"median", med},
          {"min", lo},
          {"max", hi},
          {"spread", med > 0 ? (hi - lo) / med : 0.0},
          {"runs", runs}};
}

// Bytes of this process's memory on transparent huge pages (the CPU model's weight arena,
// FLUXATTN_CPU_HUGEPAGES), from /proc/self/smaps_rollup; -1 where it cannot be read.
int64_t AnonHugeBytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  int64_t kib = 0;
  while (in >> key) {
    if (key == "AnonHugePages:" && in >> kib) return kib * 1024;
  }
  return -1;
}

// What ran: the checkpoint's shape and the storage type of its matrices.
nlohmann::json Describe(const Args& a, const LanguageModel& model) {
  const ModelInfo& m = model.info();
  nlohmann::json shape = {{"architecture", m.architecture}, {"hidden", m.hidden_size},
                          {"layers", m.num_layers},         {"heads", m.num_q_heads},
                          {"kv_heads", m.num_kv_heads},     {"head_dim", m.head_dim},
                          {"vocab", m.vocab_size}};
  int64_t intermediate = a.intermediate;
  if (!a.model.empty()) {
    auto spec = models::LoadModelConfig(a.model);
    if (spec.ok()) intermediate = spec->intermediate_size;
  }
  shape["intermediate"] = intermediate;
  std::string dtype = DTypeName(DType::kF32);
  auto w = model.weights().GetRaw("model.layers.0.mlp.up_proj.weight", {});
  if (w.ok()) dtype = DTypeName(w->dtype());
  return {{"model", a.model.empty() ? "random" : a.model},
          {"shape", shape},
          {"weights_dtype", dtype},
          {"activations", a.activations},
          {"bf16_dot_products", a.act() == DType::kBF16 && cpu::Bf16DotProducts()},
          {"cpu_isa", cpu::DenseIsa()},
          {"anon_huge_page_bytes", AnonHugeBytes()}};
}

// Times cpu::Linear at one shape with float32 and bfloat16 weights: one JSON line per thread
// count and dtype with GFLOP/s (median over the repeats).
int RunGemm(const Args& a) {
  if (a.gemm.size() != 3 || a.gemm[0] <= 0 || a.gemm[1] <= 0 || a.gemm[2] <= 0) {
    std::cerr << "bench_model: error: --gemm: expected M,N,K (three positive integers)\n";
    return 1;
  }
  const int64_t m = a.gemm[0], n = a.gemm[1], k = a.gemm[2];
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(m * k), w(n * k), y(m * n);
  for (float& v : x) v = normal(rng);
  for (float& v : w) v = normal(rng);
  std::vector<uint16_t> w16(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &w[i], 4);
    w16[i] = static_cast<uint16_t>(bits >> 16);
  }
  for (int threads : a.threads) {
    SetCpuThreads(threads);
    for (DType type : {DType::kF32, DType::kBF16}) {
      const cpu::LinearPart part{type == DType::kF32 ? static_cast<const void*>(w.data())
                                                     : static_cast<const void*>(w16.data()),
                                 type,
                                 n,
                                 nullptr,
                                 y.data(),
                                 n};
      cpu::Linear(x.data(), k, m, k, &part, 1, a.act());  // warm-up
      std::vector<double> gflops;
      for (int r = 0; r < std::max(1, a.repeats); ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        cpu::Linear(x.data(), k, m, k, &part, 1, a.act());
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        gflops.push_back(2.0 * m * n * k / s / 1e9);
      }
      nlohmann::json line = {{"m", m},
                             {"n", n},
                             {"k", k},
                             {"threads", threads},
                             {"dtype", type == DType::kF32 ? "f32" : "bf16"},
                             {"activations", a.activations},
                             {"cpu_isa", cpu::DenseIsa()},
                             {"gflops", Median(gflops)},
                             {"gflops_runs", gflops}};
      std::cout << line.dump() << "\n";
    }
  }
  return 0;
}

// Sums a float buffer of a.read_mib MiB in 64 parts spread over the pool (each part read once,
// front to back, in 16 partial sums): one JSON line per thread count with GB/s (median over the
// repeats, after one unmeasured pass that faults the pages in).
int RunReadBandwidth(const Args& a) {
  if (a.read_mib < 1 || a.read_mib > (int64_t{1} << 20)) {
    std::cerr << "bench_model: error: --read-bandwidth: expected MiB in [1, 1048576], found "
              << a.read_mib << "\n";
    return 1;
  }
  const int64_t n = a.read_mib * (int64_t{1} << 20) / static_cast<int64_t>(sizeof(float));
  std::vector<float> buf(n, 1.0f);
  constexpr int64_t kParts = 64;
  std::vector<float> sums(kParts);
  auto pass = [&] {
    CpuParallelFor(kParts, [&](int64_t part) {
      const int64_t b = n * part / kParts, e = n * (part + 1) / kParts;
      float lane[16] = {};
      int64_t i = b;
      for (; i + 16 <= e; i += 16) {
        for (int l = 0; l < 16; ++l) lane[l] += buf[i + l];
      }
      for (; i < e; ++i) lane[0] += buf[i];
      float total = 0.0f;
      for (float v : lane) total += v;
      sums[part] = total;
    });
  };
  for (int threads : a.threads) {
    SetCpuThreads(threads);
    pass();
    std::vector<double> rates;
    for (int r = 0; r < std::max(1, a.repeats); ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      pass();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      rates.push_back(static_cast<double>(n) * sizeof(float) / s / 1e9);
    }
    float check = 0.0f;
    for (float v : sums) check += v;
    nlohmann::json line = {{"read_mib", a.read_mib},
                           {"threads", threads},
                           {"gb_per_s", Median(rates)},
                           {"gb_per_s_runs", rates},
                           {"sum", check}};
    std::cout << line.dump() << "\n";
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> MakeModel(const Args& a, int threads) {
  const models::ModelLoadOptions options{.threads = threads, .cpu_activations = a.act()};
  if (!a.model.empty()) return models::LoadLanguageModel(a.model, options);
  models::ModelSpec spec;
  spec.family = models::ModelFamily::kQwen3;
  spec.qk_norm = true;
  spec.info.architecture = "Qwen3ForCausalLM";
  spec.info.num_layers = a.layers;
  spec.info.hidden_size = a.hidden;
  spec.info.num_q_heads = a.heads;
  spec.info.num_kv_heads = a.kv_heads;
  spec.info.head_dim = a.head_dim;
  spec.info.vocab_size = a.vocab;
  spec.intermediate_size = a.intermediate;
  spec.rope.theta = 1e6;
  FLUXATTN_ASSIGN_OR_RETURN(auto weights, models::RandomWeights(spec, 1));
  return models::CreateLanguageModel(spec, std::move(weights), options);
}

int Run(const Args& a) {
  if (!a.gemm.empty()) return RunGemm(a);
  if (a.read_given) return RunReadBandwidth(a);
  PluginRegistry registry;
  nlohmann::json rows = nlohmann::json::array();
  nlohmann::json described;
  std::printf("%-8s %-8s %-10s %-14s %-14s %-12s\n", "threads", "context", "decode",
              "prefill tok/s", "decode tok/s", "KV MiB");
  for (int threads : a.threads) {
    auto model = MakeModel(a, threads);
    if (!model.ok()) {
      std::cerr << "bench_model: error: " << model.status().message() << "\n";
      return 1;
    }
    const ModelInfo info = (*model)->info();
    EngineConfig config = DefaultEngineConfig(info);
    config.router.plugin.clear();  // every layer on `full`
    config.backends.erase("sparse");
    config.router_sparse = "full";
    if (absl::Status st = PrepareRegistry(config, registry); !st.ok()) {
      std::cerr << "bench_model: error: " << st.message() << "\n";
      return 1;
    }
    auto composition = Compose(config, registry);
    if (!composition.ok()) {
      std::cerr << "bench_model: error: " << composition.status().message() << "\n";
      return 1;
    }
    auto engine = Engine::Create(std::move(*model), std::move(*composition));
    if (!engine.ok()) {
      std::cerr << "bench_model: error: " << engine.status().message() << "\n";
      return 1;
    }
    std::mt19937 rng(7);
    std::uniform_int_distribution<int64_t> token(0, info.vocab_size - 1);
    if (described.is_null()) described = Describe(a, (*engine)->model());
    for (int context : a.contexts) {
      std::vector<int64_t> prompt(context);
      for (auto& t : prompt) t = token(rng);
      GenerationOptions options;
      options.max_new_tokens = a.decode_tokens + 1;  // the first token comes from prefill
      options.ignore_eos = true;
      std::vector<double> prefill, decode;
      int64_t decode_tokens = 0, kv_bytes = 0;
      for (int rep = 0; rep < std::max(1, a.repeats); ++rep) {
        auto r = (*engine)->Generate({prompt}, options);
        if (!r.ok()) {
          std::cerr << "bench_model: error: " << r.status().message() << "\n";
          return 1;
        }
        const auto& t = r->timing;
        prefill.push_back(t.prefill_tokens / t.prefill_seconds);
        decode.push_back(t.decode_tokens / t.decode_seconds);
        decode_tokens = t.decode_tokens;
        kv_bytes = r->requests[0].trace.kv_bytes;
      }
      const nlohmann::json p = Summary(prefill), d = Summary(decode);
      std::printf("%-8d %-8d %-10lld %-14.1f %-14.2f %-12.2f\n", threads, context,
                  static_cast<long long>(decode_tokens), p["median"].get<double>(),
                  d["median"].get<double>(), kv_bytes / 1048576.0);
      rows.push_back({{"threads", threads},
                      {"context", context},
                      {"decode_tokens", decode_tokens},
                      {"repeats", prefill.size()},
                      {"prefill_tokens_per_second", p},
                      {"decode_tokens_per_second", d},
                      {"kv_bytes", kv_bytes}});
    }
  }
  nlohmann::json out = described;
  out["results"] = rows;
  std::cout << out.dump() << "\n";
  if (!a.json_path.empty()) std::ofstream(a.json_path) << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace fluxattn

int main(int argc, char** argv) {
  fluxattn::Args a;
  CLI::App app{"bench_model: prefill/decode tokens per second of the CPU engine"};
  app.add_option("--model", a.model, "Checkpoint folder (default: a random model in memory)");
  app.add_option("--hidden", a.hidden);
  app.add_option("--layers", a.layers);
  app.add_option("--heads", a.heads);
  app.add_option("--kv-heads", a.kv_heads);
  app.add_option("--head-dim", a.head_dim);
  app.add_option("--intermediate", a.intermediate);
  app.add_option("--vocab", a.vocab);
  app.add_option("--contexts", a.contexts, "Prompt lengths")->delimiter(',');
  app.add_option("--threads", a.threads, "Thread counts")->delimiter(',');
  app.add_option("--decode-tokens", a.decode_tokens);
  app.add_option("--repeats", a.repeats, "Runs per point (median and spread reported)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--gemm", a.gemm, "Time the dense kernel at M,N,K instead")->delimiter(',');
  CLI::Option* read =
      app.add_option("--read-bandwidth", a.read_mib,
                     "Time reading this many MiB of memory on the thread pool instead (GB/s)");
  app.add_option("--json", a.json_path, "Also write the JSON here");
  app.add_option("--activations", a.activations,
                 "Activations of the matrix products: f32, or bf16 (rounded; AVX512-BF16 dot "
                 "products for bf16 weights where the CPU has them)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  CLI11_PARSE(app, argc, argv);
  a.read_given = read->count() > 0;
  return fluxattn::Run(a);
}
