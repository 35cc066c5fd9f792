#include "python_policy.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fluxattn/routing_policy.h"
#include "fluxattn/status.h"

namespace nb = nanobind;

namespace fluxattn::python {
namespace {

PyObject* g_resolver = nullptr;  // kept for the life of the process

bool Finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

// "ValueError: message" of the Python exception being handled.
std::string ExceptionText(nb::python_error& e) {
  std::string type = "exception";
  try {
    type = nb::cast<std::string>(nb::handle(e.type()).attr("__name__"));
  } catch (...) {
  }
  std::string text;
  try {
    text = nb::cast<std::string>(nb::str(e.value()));
  } catch (...) {
  }
  std::string out = text.empty() ? type : absl::StrCat(type, ": ", text);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

// A float32 NumPy array owning a copy of `n` floats (or zeros when src is null).
nb::object FloatArray(std::initializer_list<size_t> shape, const float* src) {
  size_t n = 1;
  for (size_t d : shape) n *= d;
  float* data = new float[n == 0 ? 1 : n];
  if (src != nullptr && n != 0) std::memcpy(data, src, n * sizeof(float));
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, float>(data, shape, owner));
}

nb::object Pooled(const RoutingInput& in) {
  const size_t width = static_cast<size_t>(in.num_q_heads) * static_cast<size_t>(in.head_dim);
  std::vector<float> sum(width, 0.0f);
  for (int64_t r = 0; r < in.query_rows; ++r) {
    const float* row = in.queries + static_cast<size_t>(r) * width;
    for (size_t i = 0; i < width; ++i) sum[i] += row[i];
  }
  const float scale = in.query_rows > 0 ? 1.0f / static_cast<float>(in.query_rows) : 0.0f;
  for (float& v : sum) v *= scale;
  return FloatArray({static_cast<size_t>(in.num_q_heads), static_cast<size_t>(in.head_dim)},
                    sum.data());
}

// What `decide` is given of the queries: a policy's `needs_queries` (default True) is False,
// "pooled" (the mean over the rows only) or true (the queries and their mean).
enum class QueryMode { kNone, kPooled, kFull };

QueryMode QueryModeOf(nb::handle instance) {
  if (!nb::hasattr(instance, "needs_queries")) return QueryMode::kFull;
  nb::object value = instance.attr("needs_queries");
  if (PyUnicode_Check(value.ptr())) {
    const std::string text = nb::cast<std::string>(value);
    if (text == "pooled") return QueryMode::kPooled;
    throw std::invalid_argument(
        absl::StrCat("needs_queries: expected True, False or \"pooled\", found \"", text, "\""));
  }
  const int truth = PyObject_IsTrue(value.ptr());
  if (truth < 0) throw nb::python_error();
  return truth != 0 ? QueryMode::kFull : QueryMode::kNone;
}

class PythonPolicy final : public RoutingPolicy {
 public:
  PythonPolicy(std::string name, nb::object instance, QueryMode queries)
      : name_(std::move(name)), instance_(std::move(instance)), queries_(queries) {}

  // At interpreter shutdown the object is left to the interpreter.
  void Leak() { instance_.release(); }

  absl::Status Prepare(const RoutingSetup& setup) override {
    nb::gil_scoped_acquire gil;
    try {
      if (nb::hasattr(instance_, "prepare")) instance_.attr("prepare")(nb::cast(*setup.model));
    } catch (nb::python_error& e) {
      return Error("prepare", ExceptionText(e));
    } catch (const std::exception& e) {
      return Error("prepare", e.what());
    }
    return absl::OkStatus();
  }

  bool NeedsQueries() const override { return queries_ != QueryMode::kNone; }

  absl::StatusOr<RoutingDecision> Decide(const RoutingInput& input) override {
    RoutingBatch batch;
    batch.layer = input.layer;
    batch.num_layers = input.num_layers;
    batch.requests = std::span<const RoutingInput>(&input, 1);
    std::vector<RoutingDecision> decisions;
    FLUXATTN_RETURN_IF_ERROR(DecideBatch(batch, &decisions));
    return std::move(decisions.at(0));
  }

  absl::Status DecideBatch(const RoutingBatch& batch,
                           std::vector<RoutingDecision>* decisions) override {
    nb::gil_scoped_acquire gil;
    decisions->clear();
    try {
      // One buffer for the queries of every request (shared by their arrays): one allocation a
      // layer instead of one a request.
      size_t total = 0;
      if (queries_ == QueryMode::kFull) {
        for (const RoutingInput& in : batch.requests) {
          if (in.queries != nullptr) {
            total += static_cast<size_t>(in.query_rows) * in.num_q_heads * in.head_dim;
          }
        }
      }
      float* copies = new float[total == 0 ? 1 : total];
      nb::capsule owner(copies, [](void* p) noexcept { delete[] static_cast<float*>(p); });
      size_t copied = 0;
      PolicyBatch py_batch;
      py_batch.layer = batch.layer;
      py_batch.num_layers = batch.num_layers;
      for (const RoutingInput& in : batch.requests) {
        PolicyRequest r;
        r.request_id = in.request_id;
        r.seed = in.request_seed;
        r.prompt_tokens = in.prompt_tokens;
        r.query_rows = in.query_rows;
        if (in.hints != nullptr) {
          for (const auto& [key, value] : *in.hints) r.hints[nb::str(key.c_str())] = value;
        }
        if (in.queries != nullptr) {
          r.queries = nb::none();
          if (queries_ == QueryMode::kFull) {
            const size_t width = static_cast<size_t>(in.num_q_heads) * in.head_dim;
            float* data = copies + copied;
            std::memcpy(data, in.queries,
                        static_cast<size_t>(in.query_rows) * width * sizeof(float));
            copied += static_cast<size_t>(in.query_rows) * width;
            r.queries = nb::cast(nb::ndarray<nb::numpy, float>(
                data,
                {static_cast<size_t>(in.query_rows), static_cast<size_t>(in.num_q_heads),
                 static_cast<size_t>(in.head_dim)},
                owner));
          }
          r.pooled_queries = Pooled(in);
        } else {
          r.queries = nb::none();
          r.pooled_queries = nb::none();
        }
        py_batch.requests.append(nb::cast(std::move(r)));
      }
      nb::object result = instance_.attr("decide")(nb::cast(std::move(py_batch)));
      if (PyUnicode_Check(result.ptr()) || !nb::hasattr(result, "__len__")) {
        return Error("decide", absl::StrCat("expected a sequence with one choice per request, "
                                            "found ",
                                            nb::cast<std::string>(nb::repr(result))));
      }
      const size_t n = nb::len(result);
      if (n != batch.requests.size()) {
        return Error("decide", absl::StrCat("expected ", batch.requests.size(),
                                            " choices (one per request", "), found ", n));
      }
      size_t i = 0;
      for (nb::handle item : result) {
        absl::StatusOr<RoutingDecision> d = Parse(item);
        if (!d.ok()) {
          return Error("decide", absl::StrCat("request ", batch.requests[i].request_id, ": ",
                                              d.status().message()));
        }
        decisions->push_back(std::move(*d));
        ++i;
      }
    } catch (nb::python_error& e) {
      return Error("decide", ExceptionText(e));
    } catch (const std::exception& e) {
      return Error("decide", e.what());
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(const char* method, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("python policy '", name_, "': ", method, ": ", what));
  }

  static absl::StatusOr<AttentionChoice> ParseChoice(nb::handle c) {
    if (PyUnicode_Check(c.ptr())) {
      const std::string s = nb::cast<std::string>(c);
      if (s == "full") return AttentionChoice::kFull;
      if (s == "sparse") return AttentionChoice::kSparse;
    } else if (PyBool_Check(c.ptr()) || PyLong_Check(c.ptr()) ||
               nb::cast<std::string>(nb::handle(Py_TYPE(c.ptr())).attr("__name__")) == "bool") {
      // True / 1: sparse (numpy booleans too).
      const int truth = PyObject_IsTrue(c.ptr());
      if (truth < 0) throw nb::python_error();
      if (!PyLong_Check(c.ptr()) || PyBool_Check(c.ptr()) || nb::cast<long>(c) == truth) {
        return truth != 0 ? AttentionChoice::kSparse : AttentionChoice::kFull;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "expected \"full\", \"sparse\", a bool (True: sparse) or a (choice, logits) pair, found ",
        nb::cast<std::string>(nb::repr(c))));
  }

  static absl::StatusOr<RoutingDecision> Parse(nb::handle item) {
    RoutingDecision d;
    if (PyTuple_Check(item.ptr()) || PyList_Check(item.ptr())) {
      if (nb::len(item) != 2) {
        return absl::InvalidArgumentError(absl::StrCat("expected a (choice, logits) pair, found ",
                                                       nb::cast<std::string>(nb::repr(item))));
      }
      FLUXATTN_ASSIGN_OR_RETURN(d.choice, ParseChoice(item[0]));
      for (nb::handle v : item[1]) {
        const double x = PyFloat_AsDouble(v.ptr());
        if (x == -1.0 && PyErr_Occurred()) throw nb::python_error();
        d.logits.push_back(static_cast<float>(x));
      }
      return d;
    }
    FLUXATTN_ASSIGN_OR_RETURN(d.choice, ParseChoice(item));
    return d;
  }

  std::string name_;
  nb::object instance_;
  QueryMode queries_;
};

void DestroyPythonPolicy(void* p) noexcept {
  auto* policy = static_cast<PythonPolicy*>(p);
  if (!Py_IsInitialized() || Finalizing()) {
    policy->Leak();
    delete policy;
    return;
  }
  nb::gil_scoped_acquire gil;
  delete policy;
}

// A Python policy object from its class: `cls(**params)`.
absl::StatusOr<void*> CreatePythonPolicy(const std::string& name, PyObject* cls_ptr,
                                         const ParamValues& params) {
  nb::gil_scoped_acquire gil;
  nb::handle cls(cls_ptr);
  try {
    nb::dict kwargs;
    for (const auto& [key, value] : params.values()) kwargs[nb::str(key.c_str())] = value;
    nb::object instance = cls(**kwargs);
    if (!nb::hasattr(instance, "decide")) {
      return absl::InvalidArgumentError(absl::StrCat("python policy '", name,
                                                     "': expected a class with a decide(batch) "
                                                     "method, found none"));
    }
    const QueryMode queries = QueryModeOf(instance);
    return static_cast<void*>(new PythonPolicy(name, std::move(instance), queries));
  } catch (nb::python_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("python policy '", name, "': constructor: ", ExceptionText(e)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("python policy '", name, "': ", e.what()));
  }
}

// The ParamSpecs of a class's `params` dict (name -> default value).
absl::StatusOr<std::vector<ParamSpec>> SpecsOf(const std::string& name, const nb::object& cls) {
  std::vector<ParamSpec> specs;
  if (!nb::hasattr(cls, "params")) return specs;
  nb::object params = cls.attr("params");
  if (!PyDict_Check(params.ptr())) {
    return absl::InvalidArgumentError(
        absl::StrCat("python policy '", name, "': expected `params` to be a dict of defaults, ",
                     "found ", nb::cast<std::string>(nb::repr(params))));
  }
  for (auto [key, value] : nb::borrow<nb::dict>(params)) {
    const std::string k = nb::cast<std::string>(nb::str(key));
    const std::string description = absl::StrCat("parameter of the Python policy ", name);
    if (PyBool_Check(value.ptr())) {
      specs.push_back(BoolParamSpec(k, nb::cast<bool>(value), description));
    } else if (PyLong_Check(value.ptr())) {
      ParamSpec spec;
      spec.name = k;
      spec.type = ParamType::kInt;
      spec.default_value = nb::cast<int64_t>(value);
      spec.description = description;
      specs.push_back(std::move(spec));
    } else if (PyFloat_Check(value.ptr())) {
      ParamSpec spec;
      spec.name = k;
      spec.type = ParamType::kFloat;
      spec.default_value = nb::cast<double>(value);
      spec.description = description;
      specs.push_back(std::move(spec));
    } else if (PyUnicode_Check(value.ptr())) {
      ParamSpec spec;
      spec.name = k;
      spec.type = ParamType::kString;
      spec.default_value = nb::cast<std::string>(value);
      spec.description = description;
      specs.push_back(std::move(spec));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("python policy '", name, "': params['", k,
                       "']: expected a bool, int, float or str default, found ",
                       nb::cast<std::string>(nb::repr(value))));
    }
  }
  return specs;
}

}  // namespace

void SetPolicyResolver(nb::object resolver) {
  Py_XDECREF(g_resolver);
  g_resolver = resolver.release().ptr();
}

absl::Status RegisterPythonPolicies(const EngineConfig& config, PluginRegistry& registry) {
  std::vector<const PluginInstanceConfig*> instances = {&config.router};
  for (const auto& [name, instance] : config.routers) instances.push_back(&instance);
  for (const PluginInstanceConfig* instance : instances) {
    const std::string& plugin = instance->plugin;
    if (plugin.rfind(kPythonPluginPrefix, 0) != 0) continue;
    if (registry.Find(plugin, PluginKind::kRoutingPolicy).ok()) continue;
    const std::string key = absl::StrCat(instance->table, ".plugin");
    auto loc = config.locations.find(key);
    const std::string where = absl::StrCat(
        loc != config.locations.end() ? loc->second.ToString() : instance->where.ToString(),
        ": key '", key, "': ");
    const std::string name = plugin.substr(sizeof(kPythonPluginPrefix) - 1);
    nb::gil_scoped_acquire gil;
    nb::object cls;
    try {
      if (g_resolver == nullptr) throw std::runtime_error("import fluxattn first");
      cls = nb::borrow(g_resolver)(name);
    } catch (nb::python_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expected a Python routing policy (a registered name or module.Class), found '",
          name, "' (", ExceptionText(e), ")"));
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(where, e.what()));
    }
    absl::StatusOr<std::vector<ParamSpec>> specs = SpecsOf(plugin, cls);
    if (!specs.ok()) return Annotate(specs.status(), where.substr(0, where.size() - 2));
    InProcessPlugin p;
    p.info.name = plugin;
    p.info.kind = PluginKind::kRoutingPolicy;
    p.info.version = "python";
    p.info.build_id = "python";
    p.info.path = plugin;
    p.info.params = std::move(*specs);
    try {
      nb::object doc = cls.attr("__doc__");
      if (!doc.is_none()) p.info.summary = nb::cast<std::string>(doc);
    } catch (...) {
    }
    auto shared_cls = std::shared_ptr<PyObject>(cls.release().ptr(), [](PyObject* o) {
      if (Py_IsInitialized() && !Finalizing()) {
        nb::gil_scoped_acquire gil;
        Py_DECREF(o);
      }
    });
    p.create = [plugin, shared_cls](const ParamValues& params) {
      return CreatePythonPolicy(plugin, shared_cls.get(), params);
    };
    p.destroy = &DestroyPythonPolicy;
    FLUXATTN_RETURN_IF_ERROR(registry.RegisterInProcess(std::move(p)).status());
  }
  return absl::OkStatus();
}

void BindPolicyTypes(nb::module_& m) {
  nb::class_<PolicyRequest>(
      m, "PolicyRequest", "One request of a layer, as a Python routing policy's decide() sees it.")
      .def_ro("request_id", &PolicyRequest::request_id)
      .def_ro("seed", &PolicyRequest::seed, "The request's own seed.")
      .def_ro("prompt_tokens", &PolicyRequest::prompt_tokens, "Length of the whole prompt.")
      .def_ro("query_rows", &PolicyRequest::query_rows, "Rows of `queries` (prompt positions).")
      .def_ro("hints", &PolicyRequest::hints, "The request's free-form hints (str -> str).")
      .def_ro("queries", &PolicyRequest::queries,
              "float32 [query_rows, num_q_heads, head_dim]: the layer's queries before RoPE, or "
              "None when the policy sets needs_queries = False.")
      .def_ro("pooled_queries", &PolicyRequest::pooled_queries,
              "float32 [num_q_heads, head_dim]: `queries` averaged over the rows, or None.")
      .def("__repr__", [](const PolicyRequest& r) {
        return absl::StrCat("PolicyRequest(request_id=", r.request_id,
                            ", prompt_tokens=", r.prompt_tokens, ")");
      });
  nb::class_<PolicyBatch>(m, "PolicyBatch",
                          "Every request of one layer that needs a decision at this step.")
      .def_ro("layer", &PolicyBatch::layer)
      .def_ro("num_layers", &PolicyBatch::num_layers)
      .def_ro("requests", &PolicyBatch::requests, "list[PolicyRequest], in order.")
      .def("__len__", [](const PolicyBatch& b) { return nb::len(b.requests); })
      .def("__iter__", [](const PolicyBatch& b) { return b.requests.attr("__iter__")(); })
      .def("__repr__", [](const PolicyBatch& b) {
        return absl::StrCat("PolicyBatch(layer=", b.layer, ", num_layers=", b.num_layers,
                            ", requests=", nb::len(b.requests), ")");
      });
}

double TimeDecideBatch(nb::object policy_object, int requests, int64_t rows, int heads,
                       int head_dim, int iterations) {
  const QueryMode mode = QueryModeOf(policy_object);
  const bool needs_queries = mode != QueryMode::kNone;
  PythonPolicy policy("benchmark", policy_object, mode);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> queries(static_cast<size_t>(rows) * heads * head_dim);
  for (float& q : queries) q = normal(rng);
  std::map<std::string, std::string> hints = {{"task", "benchmark"}};
  std::vector<RoutingInput> inputs(requests);
  for (int i = 0; i < requests; ++i) {
    RoutingInput& in = inputs[i];
    in.request_id = static_cast<uint64_t>(i + 1);
    in.num_layers = 1;
    in.query_rows = rows;
    in.prompt_tokens = rows;
    in.num_q_heads = heads;
    in.head_dim = head_dim;
    in.hints = &hints;
    in.queries = needs_queries ? queries.data() : nullptr;
  }
  RoutingBatch batch;
  batch.num_layers = 1;
  batch.requests = inputs;
  std::vector<RoutingDecision> decisions;
  double seconds = 0.0;
  {
    nb::gil_scoped_release release;
    const auto start = std::chrono::steady_clock::now();
    for (int it = 0; it < iterations; ++it) {
      absl::Status st = policy.DecideBatch(batch, &decisions);
      if (!st.ok()) throw std::runtime_error(std::string(st.message()));
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return seconds / iterations;
}

}  // namespace fluxattn::python
