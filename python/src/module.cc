// fluxattn._core: the engine, the tokenizer, eval/compare and the plugin listing as the
// `fluxattn` command line composes them (apps/fluxattn/eval's OpenSession and suites). The Python
// package (python/fluxattn/__init__.py) wraps these into its public API.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "eval/lengths.h"
#include "eval/progress.h"
#include "eval/reports.h"
#include "eval/runner.h"
#include "eval/tasks.h"
#include "fluxattn/config.h"
#include "fluxattn/default_composition.h"
#include "fluxattn/engine.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/plugin_registry.h"
#include "fluxattn/status.h"
#include "fluxattn/version.h"
#include "nlohmann/json.hpp"
#include "python_policy.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace fluxattn::python {
namespace {

// A failed absl::Status, raised in Python as fluxattn.Error with the status's message.
class StatusError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Raise(const absl::Status& status) {
  throw StatusError(std::string(status.message()));
}

template <typename T>
T Unwrap(absl::StatusOr<T> value) {
  if (!value.ok()) Raise(value.status());
  return std::move(*value);
}

std::string g_package_plugin_dir;  // <package>/lib/fluxattn/plugins

// The plugin folders of every session: the `plugin_paths` given in Python, then the package's
// own (before FLUXATTN_PLUGIN_PATH and the system folder, so that the plugins built with this
// core win); then the Python routing policies the config names.
eval::SessionOptions SessionOptionsFor(int threads, bool need_tokenizer,
                                       std::vector<std::string> extra_dirs) {
  eval::SessionOptions options;
  options.threads = threads;
  options.need_tokenizer = need_tokenizer;
  options.plugin_paths = std::move(extra_dirs);
  std::error_code ec;
  if (!g_package_plugin_dir.empty() && std::filesystem::is_directory(g_package_plugin_dir, ec)) {
    options.plugin_paths.push_back(g_package_plugin_dir);
  }
  options.extend_registry = [](EngineConfig& config, PluginRegistry& registry) {
    return RegisterPythonPolicies(config, registry);
  };
  return options;
}

nb::object FloatMatrix(const std::vector<std::vector<float>>& rows) {
  const size_t n = rows.size();
  const size_t m = n == 0 ? 0 : rows[0].size();
  float* data = new float[n * m == 0 ? 1 : n * m];
  for (size_t i = 0; i < n; ++i) std::copy(rows[i].begin(), rows[i].end(), data + i * m);
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, float>(data, {n, m}, owner));
}

nb::dict TraceDict(const RequestTrace& t) {
  nb::list layers;
  for (const LayerRouting& L : t.layers) {
    nb::dict l;
    l["layer"] = L.layer;
    l["choice"] = AttentionChoiceName(L.choice);
    l["decided_by"] = L.decided_by;
    l["backend"] = L.backend;
    l["plugin"] = L.plugin;
    l["prefill_backend"] = L.prefill_backend;
    l["decode_backend"] = L.decode_backend;
    l["logits"] = L.logits;
    l["fallback"] = L.fallback;
    l["kv_bytes"] = L.kv_bytes;
    layers.append(l);
  }
  nb::dict d;
  d["request_id"] = t.request_id;
  d["prompt_tokens"] = t.prompt_tokens;
  d["routing"] = t.routing;
  d["sa_ratio"] = t.sa_ratio;
  d["kv_bytes"] = t.kv_bytes;
  d["kv_bytes_after_prefill"] = t.kv_bytes_after_prefill;
  d["kv_bytes_full_cache"] = t.kv_bytes_full_cache;
  d["layers"] = layers;
  return d;
}

nb::dict TimingDict(const GenerationTiming& t) {
  nb::dict d;
  d["prefill_seconds"] = t.prefill_seconds;
  d["decode_seconds"] = t.decode_seconds;
  d["prefill_tokens"] = t.prefill_tokens;
  d["decode_tokens"] = t.decode_tokens;
  d["decode_steps"] = t.decode_steps;
  return d;
}

GenerationOptions MakeOptions(int max_new_tokens, double temperature, int top_k, double top_p,
                              uint64_t seed, bool ignore_eos, std::vector<int64_t> stop_tokens,
                              bool logits) {
  if (max_new_tokens < 0) {
    Raise(InvalidInput("max_new_tokens", "a non-negative number", std::to_string(max_new_tokens)));
  }
  GenerationOptions options;
  options.max_new_tokens = max_new_tokens;
  options.sampling.temperature = temperature;
  options.sampling.top_k = top_k;
  options.sampling.top_p = top_p;
  options.sampling.seed = seed;
  options.ignore_eos = ignore_eos;
  options.stop_tokens = std::move(stop_tokens);
  options.record_logits = logits;
  return options;
}

class PyEngine {
 public:
  explicit PyEngine(std::unique_ptr<eval::Session> session) : session_(std::move(session)) {}

  static PyEngine* FromConfig(const std::string& path, int threads,
                              std::vector<std::string> plugin_paths) {
    std::unique_ptr<eval::Session> session;
    {
      nb::gil_scoped_release release;
      session = Unwrap(eval::OpenSession(path, SessionOptionsFor(threads, false, plugin_paths)));
    }
    return new PyEngine(std::move(session));
  }

  static PyEngine* FromModel(const std::string& dir, const std::string& device, int threads,
                             std::vector<std::string> plugin_paths) {
    std::unique_ptr<eval::Session> session;
    {
      nb::gil_scoped_release release;
      models::ModelSpec spec = Unwrap(models::LoadModelConfig(dir));
      EngineConfig config = DefaultEngineConfig(spec.info);
      config.model.path = dir;
      config.model.device = device;
      session = Unwrap(
          eval::OpenSession(std::move(config), SessionOptionsFor(threads, false, plugin_paths)));
    }
    return new PyEngine(std::move(session));
  }

  Engine& engine() { return *session_->engine; }

  nb::dict Result(const GenerationResult& r) {
    nb::dict d;
    d["request_id"] = r.request_id;
    d["tokens"] = r.tokens;
    d["finish_reason"] = r.finish_reason;
    d["trace"] = TraceDict(r.trace);
    d["logits"] = r.step_logits.empty() ? nb::none() : FloatMatrix(r.step_logits);
    d["text"] = nb::none();
    if (session_->tokenizer) {
      std::vector<int32_t> ids(r.tokens.begin(), r.tokens.end());
      d["text"] = Unwrap(session_->tokenizer->Decode(ids, /*skip_special_tokens=*/false));
    }
    return d;
  }

  nb::dict Generate(std::vector<std::vector<int64_t>> prompts, int max_new_tokens,
                    double temperature, int top_k, double top_p, uint64_t seed, bool ignore_eos,
                    std::vector<int64_t> stop_tokens, bool logits, nb::object on_token) {
    GenerationOptions options = MakeOptions(max_new_tokens, temperature, top_k, top_p, seed,
                                            ignore_eos, std::move(stop_tokens), logits);
    std::optional<nb::python_error> callback_error;
    TokenCallback callback;
    if (!on_token.is_none()) {
      callback = [&](int request, int64_t token) {
        nb::gil_scoped_acquire gil;
        if (callback_error) return;
        try {
          on_token(request, token);
        } catch (nb::python_error& e) {
          callback_error.emplace(std::move(e));
        }
      };
    }
    absl::StatusOr<BatchResult> result;
    {
      Guard guard = Enter();
      nb::gil_scoped_release release;
      result = engine().Generate(prompts, options, callback);
    }
    if (callback_error) {
      callback_error->restore();
      throw nb::python_error();
    }
    if (!result.ok()) Raise(result.status());
    nb::list results;
    for (const GenerationResult& r : result->requests) results.append(Result(r));
    nb::dict out;
    out["results"] = results;
    out["timing"] = TimingDict(result->timing);
    return out;
  }

  uint64_t Add(std::vector<int64_t> prompt, int max_new_tokens, double temperature, int top_k,
               double top_p, uint64_t seed, bool ignore_eos, std::vector<int64_t> stop_tokens,
               bool logits, std::string routing, std::map<std::string, std::string> hints,
               bool wait_for_kv) {
    RequestSpec spec;
    spec.prompt = std::move(prompt);
    spec.options = MakeOptions(max_new_tokens, temperature, top_k, top_p, seed, ignore_eos,
                               std::move(stop_tokens), logits);
    spec.routing = std::move(routing);
    spec.hints = std::move(hints);
    spec.wait_for_kv = wait_for_kv;
    Guard guard = Enter();
    return Unwrap(engine().Add(std::move(spec)));
  }

  nb::dict Step() {
    absl::StatusOr<StepResult> step;
    {
      Guard guard = Enter();
      nb::gil_scoped_release release;
      step = engine().Step();
    }
    if (!step.ok()) Raise(step.status());
    nb::list tokens, finished, failed;
    for (const StepToken& t : step->tokens) tokens.append(nb::make_tuple(t.request_id, t.token));
    for (const GenerationResult& r : step->finished) finished.append(Result(r));
    for (const FailedRequest& f : step->failed) {
      failed.append(nb::make_tuple(f.request_id, std::string(f.status.message())));
    }
    nb::dict d;
    d["tokens"] = tokens;
    d["finished"] = finished;
    d["failed"] = failed;
    d["prefill_tokens"] = step->prefill_tokens;
    d["decode_tokens"] = step->decode_tokens;
    d["seconds"] = step->seconds;
    return d;
  }

  bool Cancel(uint64_t id) {
    Guard guard = Enter();
    return engine().Cancel(id);
  }

  const models::Tokenizer& tokenizer() const {
    if (!session_->tokenizer) {
      Raise(InvalidInput(session_->model_dir, "tokenizer.json for text prompts", "none"));
    }
    return *session_->tokenizer;
  }

  std::vector<int64_t> Encode(const std::string& text, bool add_special_tokens) {
    std::vector<int32_t> ids = Unwrap(tokenizer().Encode(text, add_special_tokens));
    return std::vector<int64_t>(ids.begin(), ids.end());
  }

  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) {
    std::vector<int32_t> narrow(ids.begin(), ids.end());
    return Unwrap(tokenizer().Decode(narrow, skip_special_tokens));
  }

  eval::Session& session() { return *session_; }

 private:
  // One call at a time: another thread waits (without the GIL, which the running call's routing
  // policy or token callback may need); a call from inside a running one (a callback calling the
  // engine) fails instead of deadlocking.
  struct Guard {
    PyEngine* engine;
    std::unique_lock<std::mutex> lock;
    ~Guard() { engine->owner_ = std::thread::id(); }
  };
  Guard Enter() {
    if (owner_.load() == std::this_thread::get_id()) {
      Raise(absl::FailedPreconditionError(
          "engine: called from inside one of its own calls (a routing policy or on_token "
          "callback); call it after the running call returns"));
    }
    std::unique_lock<std::mutex> lock(mutex_, std::defer_lock);
    {
      nb::gil_scoped_release release;
      lock.lock();
    }
    owner_ = std::this_thread::get_id();
    return Guard{this, std::move(lock)};
  }

  std::unique_ptr<eval::Session> session_;
  std::mutex mutex_;
  std::atomic<std::thread::id> owner_{};
};

// Progress on stderr as the CLI draws it: None = when stderr is a terminal.
bool ProgressWanted(const std::optional<bool>& progress) {
  return progress.value_or(eval::StderrIsTerminal());
}

std::string Eval(const std::string& config, const std::string& tasks_text,
                 const std::string& lengths_text, int samples, uint64_t seed, int threads,
                 bool details, std::optional<bool> progress,
                 std::vector<std::string> plugin_paths) {
  std::vector<eval::TaskKind> tasks = Unwrap(eval::ParseTaskList(tasks_text, "--tasks"));
  std::vector<int64_t> lengths = Unwrap(eval::ParseLengthList(lengths_text, "--lengths"));
  if (samples < 1)
    Raise(InvalidInput("--samples", "a number in [1, 100000]", std::to_string(samples)));
  const bool show = ProgressWanted(progress);
  nb::gil_scoped_release release;
  auto session =
      Unwrap(eval::OpenSession(config, SessionOptionsFor(threads, true, std::move(plugin_paths))));
  std::optional<eval::Progress> bar;
  if (show) {
    bar.emplace(std::cerr, "eval", static_cast<int64_t>(tasks.size() * lengths.size()) * samples,
                true);
  }
  auto results =
      eval::RunEvalSuite(*session, tasks, lengths, samples, seed, [&](const std::string& detail) {
        if (bar) bar->Next(detail);
      });
  if (bar) bar->Finish();
  if (!results.ok()) Raise(results.status());
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const eval::EvalResult& r : *results) rows.push_back(eval::EvalJson(r, details));
  return rows.dump();
}

std::string Compare(const std::vector<std::string>& configs, const std::string& tasks_text,
                    const std::string& lengths_text, int samples, uint64_t seed, int decode_tokens,
                    int repeats, int threads, std::optional<bool> progress,
                    std::vector<std::string> plugin_paths) {
  if (configs.empty()) Raise(InvalidInput("configs", "at least one config", "none"));
  eval::CompareOptions options;
  options.tasks = Unwrap(eval::ParseTaskList(tasks_text, "--tasks"));
  options.lengths = Unwrap(eval::ParseLengthList(lengths_text, "--lengths"));
  options.samples = samples;
  options.seed = seed;
  options.decode_tokens = decode_tokens;
  options.repeats = repeats;
  options.session = SessionOptionsFor(threads, true, std::move(plugin_paths));
  const bool show = ProgressWanted(progress);
  nb::gil_scoped_release release;
  std::optional<eval::Progress> bar;
  if (show) bar.emplace(std::cerr, "compare", eval::CompareSteps(options, configs.size()), true);
  auto suite = eval::RunCompareSuite(configs, options, [&](const std::string& detail) {
    if (bar) bar->Next(detail);
  });
  if (bar) bar->Finish();
  if (!suite.ok()) Raise(suite.status());
  return eval::CompareReportJson(*suite, options).dump();
}

nb::object ParamDefault(const std::optional<ParamValue>& value) {
  return value ? nb::cast(*value) : nb::none();
}

nb::dict ListPlugins(const std::vector<std::string>& paths) {
  PluginRegistry registry;
  {
    nb::gil_scoped_release release;
    std::vector<std::string> dirs = paths;
    std::error_code ec;
    if (!g_package_plugin_dir.empty() && std::filesystem::is_directory(g_package_plugin_dir, ec)) {
      dirs.push_back(g_package_plugin_dir);
    }
    absl::Status st = registry.ScanSearchPath(dirs);
    if (!st.ok()) Raise(st);
  }
  nb::list plugins;
  for (const PluginInfo& info : registry.List()) {
    nb::dict p;
    p["name"] = info.name;
    p["kind"] = PluginKindName(info.kind);
    p["version"] = info.version;
    p["abi"] = absl::StrCat(info.abi_major, ".", info.abi_minor);
    p["build_id"] = info.build_id;
    p["path"] = info.path;
    p["summary"] = info.summary;
    nb::list params;
    for (const ParamSpec& spec : info.params) {
      nb::dict q;
      q["name"] = spec.name;
      q["type"] = ParamTypeName(spec.type);
      q["default"] = ParamDefault(spec.default_value);
      q["min"] = spec.min_value;
      q["max"] = spec.max_value;
      q["choices"] = spec.choices;
      q["description"] = spec.description;
      params.append(q);
    }
    p["parameters"] = params;
    plugins.append(p);
  }
  nb::list failures;
  for (const PluginLoadFailure& f : registry.failures()) {
    nb::dict d;
    d["path"] = f.path;
    d["error"] = std::string(f.status.message());
    failures.append(d);
  }
  nb::dict out;
  out["search_path"] = registry.searched_directories();
  out["plugins"] = plugins;
  out["failures"] = failures;
  return out;
}

}  // namespace
}  // namespace fluxattn::python

NB_MODULE(_core, m) {
  using namespace fluxattn;
  using namespace fluxattn::python;
  m.doc() = "FluxAttn's C++ engine (use the `fluxattn` package, which wraps this module).";
  nb::exception<StatusError>(m, "Error", PyExc_RuntimeError);
  m.attr("core_version") = kCoreVersion;

  nb::class_<ModelInfo>(m, "ModelInfo", "What a routing policy may know about the model.")
      .def_ro("path", &ModelInfo::path)
      .def_ro("architecture", &ModelInfo::architecture)
      .def_ro("model_type", &ModelInfo::model_type)
      .def_ro("num_layers", &ModelInfo::num_layers)
      .def_ro("hidden_size", &ModelInfo::hidden_size)
      .def_ro("num_q_heads", &ModelInfo::num_q_heads)
      .def_ro("num_kv_heads", &ModelInfo::num_kv_heads)
      .def_ro("head_dim", &ModelInfo::head_dim)
      .def_ro("vocab_size", &ModelInfo::vocab_size)
      .def_ro("config", &ModelInfo::config, "Top-level scalar entries of config.json.")
      .def("__repr__", [](const ModelInfo& i) {
        return absl::StrCat("ModelInfo(architecture='", i.architecture,
                            "', num_layers=", i.num_layers, ", num_q_heads=", i.num_q_heads,
                            ", head_dim=", i.head_dim, ")");
      });
  BindPolicyTypes(m);

  nb::class_<PyEngine>(m, "Engine")
      .def_static("from_config", &PyEngine::FromConfig, "path"_a, "threads"_a = -1,
                  "plugin_paths"_a = std::vector<std::string>{})
      .def_static("from_model", &PyEngine::FromModel, "path"_a, "device"_a = "cpu",
                  "threads"_a = -1, "plugin_paths"_a = std::vector<std::string>{})
      .def("generate", &PyEngine::Generate, "prompts"_a, "max_new_tokens"_a, "temperature"_a,
           "top_k"_a, "top_p"_a, "seed"_a, "ignore_eos"_a, "stop_tokens"_a, "logits"_a,
           "on_token"_a.none())
      .def("add", &PyEngine::Add, "prompt"_a, "max_new_tokens"_a, "temperature"_a, "top_k"_a,
           "top_p"_a, "seed"_a, "ignore_eos"_a, "stop_tokens"_a, "logits"_a, "routing"_a, "hints"_a,
           "wait_for_kv"_a)
      .def("step", &PyEngine::Step)
      .def("cancel", &PyEngine::Cancel, "request_id"_a)
      .def("encode", &PyEngine::Encode, "text"_a, "add_special_tokens"_a = true)
      .def("decode", &PyEngine::Decode, "ids"_a, "skip_special_tokens"_a = false)
      .def_prop_ro("has_tokenizer", [](PyEngine& e) { return e.session().tokenizer != nullptr; })
      .def_prop_ro("num_queued", [](PyEngine& e) { return e.engine().num_queued(); })
      .def_prop_ro("num_running", [](PyEngine& e) { return e.engine().num_running(); })
      .def_prop_ro("kv_pages_used", [](PyEngine& e) { return e.engine().kv_pages_used(); })
      .def_prop_ro("kv_pages_total", [](PyEngine& e) { return e.engine().kv_pages_total(); })
      .def_prop_ro("routing_policies", [](PyEngine& e) { return e.engine().routing_policies(); })
      .def_prop_ro("full_backend", [](PyEngine& e) { return e.engine().full_backend(); })
      .def_prop_ro("model_info", [](PyEngine& e) { return e.engine().model().info(); })
      .def_prop_ro("model_dir", [](PyEngine& e) { return e.session().model_dir; })
      .def_prop_ro("config_path", [](PyEngine& e) { return e.session().config_path; });

  m.def("eval", &Eval, "config"_a, "tasks"_a, "lengths"_a, "samples"_a, "seed"_a, "threads"_a,
        "details"_a, "progress"_a.none(), "plugin_paths"_a);
  m.def("compare", &Compare, "configs"_a, "tasks"_a, "lengths"_a, "samples"_a, "seed"_a,
        "decode_tokens"_a, "repeats"_a, "threads"_a, "progress"_a.none(), "plugin_paths"_a);
  m.def("list_plugins", &ListPlugins, "paths"_a);
  m.def("_set_package_plugin_dir", [](std::string dir) { g_package_plugin_dir = std::move(dir); });
  m.def("_set_policy_resolver", &SetPolicyResolver, "resolver"_a);
  m.def("_time_decide_batch", &TimeDecideBatch, "policy"_a, "requests"_a, "rows"_a, "heads"_a,
        "head_dim"_a, "iterations"_a);
}
