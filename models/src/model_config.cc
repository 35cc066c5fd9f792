#include "fluxattn/models/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/status.h"
#include "nlohmann/json.hpp"

namespace fluxattn::models {
namespace {

using nlohmann::json;

struct ArchitectureEntry {
  const char* name;
  ModelFamily family;
  bool flux;
};

constexpr ArchitectureEntry kArchitectures[] = {
    {"LlamaForCausalLM", ModelFamily::kLlama, false},
    {"Qwen2ForCausalLM", ModelFamily::kQwen2, false},
    {"Qwen3ForCausalLM", ModelFamily::kQwen3, false},
    {"PawLlamaForCausalLM", ModelFamily::kLlama, true},
    {"PawQwen3ForCausalLM", ModelFamily::kQwen3, true},
};

// Typed access to config.json keys with errors naming the file and key.
class ConfigReader {
 public:
  ConfigReader(const json& root, std::string source) : root_(root), source_(std::move(source)) {}

  std::string Where(const std::string& key) const { return absl::StrCat(source_, ": ", key); }

  bool Present(const json& obj, const std::string& key) const {
    return obj.contains(key) && !obj.at(key).is_null();
  }

  // Sizes are stored as int and multiplied into tensor shapes; a cap far above any real model
  // keeps an absurd config.json (hidden_size 2^40) from wrapping around or reaching an
  // allocation.
  static constexpr int64_t kMaxSize = int64_t{1} << 24;

  absl::StatusOr<int64_t> Int(const json& obj, const std::string& key, const std::string& path,
                              std::optional<int64_t> fallback, int64_t min_value) const {
    if (!Present(obj, key)) {
      if (fallback) return *fallback;
      return InvalidInput(Where(path), "an integer", "nothing (key missing)");
    }
    const json& v = obj.at(key);
    if (!v.is_number_integer()) {
      return InvalidInput(Where(path), "an integer", v.dump());
    }
    int64_t value = v.get<int64_t>();
    if (value < min_value || value > kMaxSize) {
      return InvalidInput(
          Where(path), absl::StrCat("an integer in [", min_value, ", ", kMaxSize, "]"), v.dump());
    }
    return value;
  }

  absl::StatusOr<double> Number(const json& obj, const std::string& key, const std::string& path,
                                std::optional<double> fallback) const {
    if (!Present(obj, key)) {
      if (fallback) return *fallback;
      return InvalidInput(Where(path), "a number", "nothing (key missing)");
    }
    const json& v = obj.at(key);
    if (!v.is_number()) return InvalidInput(Where(path), "a number", v.dump());
    return v.get<double>();
  }

  absl::StatusOr<bool> Bool(const json& obj, const std::string& key, bool fallback) const {
    if (!Present(obj, key)) return fallback;
    const json& v = obj.at(key);
    if (!v.is_boolean()) return InvalidInput(Where(key), "true or false", v.dump());
    return v.get<bool>();
  }

  const json& root() const { return root_; }

 private:
  const json& root_;
  std::string source_;
};

absl::Status AppendTokenIds(const json& obj, const std::string& key, const std::string& where,
                            std::vector<int64_t>* out) {
  if (!obj.contains(key) || obj.at(key).is_null()) return absl::OkStatus();
  const json& v = obj.at(key);
  auto add = [&](const json& id) -> absl::Status {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return InvalidInput(absl::StrCat(where, ": ", key), "non-negative token ids", v.dump());
    }
    int64_t value = id.get<int64_t>();
    for (int64_t existing : *out) {
      if (existing == value) return absl::OkStatus();
    }
    out->push_back(value);
    return absl::OkStatus();
  };
  if (v.is_array()) {
    for (const json& id : v) FLUXATTN_RETURN_IF_ERROR(add(id));
    return absl::OkStatus();
  }
  return add(v);
}

absl::Status ParseRope(const ConfigReader& r, ModelSpec* spec) {
  const json& root = r.root();
  RopeConfig rope;
  FLUXATTN_ASSIGN_OR_RETURN(rope.theta, r.Number(root, "rope_theta", "rope_theta", 10000.0));
  // transformers 5 writes `rope_parameters` (theta inside); older files write `rope_scaling`.
  const json* params = nullptr;
  std::string key;
  if (r.Present(root, "rope_parameters")) {
    params = &root.at("rope_parameters");
    key = "rope_parameters";
    // Models with several attention types nest one entry per type.
    if (params->is_object() && params->contains("full_attention")) {
      params = &params->at("full_attention");
      key = "rope_parameters.full_attention";
    }
  } else if (r.Present(root, "rope_scaling")) {
    params = &root.at("rope_scaling");
    key = "rope_scaling";
  }
  if (params != nullptr) {
    if (!params->is_object()) return InvalidInput(r.Where(key), "an object", params->dump());
    std::string type = "default";
    for (const char* type_key : {"rope_type", "type"}) {
      if (params->contains(type_key) && params->at(type_key).is_string()) {
        type = params->at(type_key).get<std::string>();
        break;
      }
    }
    if (type != "default" && type != "linear" && type != "llama3") {
      return InvalidInput(r.Where(absl::StrCat(key, ".rope_type")),
                          "one of \"default\", \"linear\", \"llama3\"",
                          absl::StrCat("\"", type, "\""));
    }
    rope.type = type;
    FLUXATTN_ASSIGN_OR_RETURN(
        rope.theta, r.Number(*params, "rope_theta", absl::StrCat(key, ".rope_theta"), rope.theta));
    if (type != "default") {
      FLUXATTN_ASSIGN_OR_RETURN(
          rope.factor, r.Number(*params, "factor", absl::StrCat(key, ".factor"), std::nullopt));
      if (!(rope.factor > 0)) {
        return InvalidInput(r.Where(absl::StrCat(key, ".factor")), "a positive number",
                            absl::StrCat(rope.factor));
      }
    }
    if (type == "llama3") {
      FLUXATTN_ASSIGN_OR_RETURN(rope.low_freq_factor,
                                r.Number(*params, "low_freq_factor",
                                         absl::StrCat(key, ".low_freq_factor"), std::nullopt));
      FLUXATTN_ASSIGN_OR_RETURN(rope.high_freq_factor,
                                r.Number(*params, "high_freq_factor",
                                         absl::StrCat(key, ".high_freq_factor"), std::nullopt));
      FLUXATTN_ASSIGN_OR_RETURN(
          rope.original_max_position_embeddings,
          r.Number(*params, "original_max_position_embeddings",
                   absl::StrCat(key, ".original_max_position_embeddings"), std::nullopt));
      if (!(rope.high_freq_factor > rope.low_freq_factor)) {
        return InvalidInput(r.Where(absl::StrCat(key, ".high_freq_factor")),
                            "a value greater than low_freq_factor",
                            absl::StrCat(rope.high_freq_factor));
      }
    }
    if (params->contains("partial_rotary_factor") &&
        params->at("partial_rotary_factor") != json(1.0)) {
      return InvalidInput(r.Where(absl::StrCat(key, ".partial_rotary_factor")), "1.0",
                          params->at("partial_rotary_factor").dump());
    }
  }
  if (!(rope.theta > 0)) {
    return InvalidInput(r.Where("rope_theta"), "a positive number", absl::StrCat(rope.theta));
  }
  spec->rope = rope;
  return absl::OkStatus();
}

// A string key of a Paw* config.json that must be one of `supported`; `known` lists values the
// original modeling code defines that FluxAttn does not run.
absl::StatusOr<std::string> FluxChoice(const ConfigReader& r, const std::string& key,
                                       const std::string& fallback,
                                       const std::vector<std::string>& supported,
                                       const std::vector<std::string>& known,
                                       const std::string& what) {
  std::vector<std::string> quoted;
  for (const std::string& v : supported) quoted.push_back(absl::StrCat("\"", v, "\""));
  const std::string expected = absl::StrCat(quoted.size() == 1 ? "" : "one of ",
                                            absl::StrJoin(quoted, ", "), " (", what, ")");
  if (!r.Present(r.root(), key)) {
    for (const std::string& v : supported) {
      if (v == fallback) return fallback;
    }
    return InvalidInput(
        r.Where(key), expected,
        absl::StrCat("nothing (key missing: the original then uses \"", fallback, "\")"));
  }
  const json& v = r.root().at(key);
  if (!v.is_string()) return InvalidInput(r.Where(key), expected, v.dump());
  const std::string value = v.get<std::string>();
  for (const std::string& s : supported) {
    if (value == s) return value;
  }
  for (const std::string& s : known) {
    if (value == s) {
      return InvalidInput(r.Where(key), expected,
                          absl::StrCat(v.dump(), " (defined by the original code, not supported)"));
    }
  }
  return InvalidInput(r.Where(key), expected, absl::StrCat(v.dump(), " (unknown value)"));
}

// The Flux Attention keys of PawQwen3Config / PawLlamaConfig (docs/models.md lists each one).
absl::Status ParseFluxSettings(const ConfigReader& r, FluxSettings* flux) {
  const FluxSettings defaults;
  FLUXATTN_ASSIGN_OR_RETURN(
      flux->toggle_type,
      FluxChoice(r, "toggle_type", defaults.toggle_type, {"streaming", "triangle", "xattn"},
                 {"local", "topk", "none", "full"}, "the sparse attention of SA layers"));
  FLUXATTN_ASSIGN_OR_RETURN(
      flux->retrieval_mode,
      FluxChoice(r, "retrieval_mode", defaults.retrieval_mode, {"full", "xattn"}, {"triangle"},
                 "the attention of FA layers"));
  // PawQwen3Config's default is "first_token", a training-time pooling the evaluation code
  // refuses; a checkpoint without the key could not run there either.
  FLUXATTN_ASSIGN_OR_RETURN(
      flux->pooling_mode, FluxChoice(r, "pooling_mode", "first_token", {"ctx_q"},
                                     {"first_token", "q"}, "the only router pooling implemented"));
  const json& root = r.root();
  FLUXATTN_ASSIGN_OR_RETURN(flux->sink_size,
                            r.Int(root, "sink_size", "sink_size", defaults.sink_size, 0));
  FLUXATTN_ASSIGN_OR_RETURN(
      flux->local_window_size,
      r.Int(root, "local_window_size", "local_window_size", defaults.local_window_size, 1));
  FLUXATTN_ASSIGN_OR_RETURN(flux->triangle_n_last, r.Int(root, "triangle_n_last", "triangle_n_last",
                                                         defaults.triangle_n_last, 0));
  FLUXATTN_ASSIGN_OR_RETURN(flux->pool_size,
                            r.Int(root, "pool_size", "pool_size", defaults.pool_size, 1));
  FLUXATTN_ASSIGN_OR_RETURN(flux->use_softmax, r.Bool(root, "use_softmax", defaults.use_softmax));
  // Keys that only shape training (losses, schedules, task embeddings the evaluation forward
  // never reads): accepted when well-typed, otherwise ignored.
  for (const char* key : {"use_task_emb_for_mask", "enable_ada_sparsity", "enable_lambda_task",
                          "disable_linear_regularization_term", "pooling_seq"}) {
    FLUXATTN_RETURN_IF_ERROR(r.Bool(root, key, false).status());
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int head_dim) {
  const int half = head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(rope.theta), exponent);
  }
  if (rope.type == "linear") {
    for (float& f : inv) f = f / static_cast<float>(rope.factor);
  } else if (rope.type == "llama3") {
    // Long wavelengths are slowed by `factor`, short ones kept, and the band between is
    // interpolated smoothly (Llama 3.1 long-context recipe).
    const double old_len = rope.original_max_position_embeddings;
    const double low_wavelen = old_len / rope.low_freq_factor;
    const double high_wavelen = old_len / rope.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rope.factor);
        continue;
      }
      const double smooth = (old_len / wavelen - rope.low_freq_factor) /
                            (rope.high_freq_factor - rope.low_freq_factor);
      f = static_cast<float>((1.0 - smooth) * f / rope.factor + smooth * f);
    }
  }
  return inv;
}

std::vector<std::string> SupportedArchitectures() {
  std::vector<std::string> names;
  for (const auto& a : kArchitectures) names.push_back(a.name);
  return names;
}

absl::StatusOr<ModelSpec> ParseModelConfig(const std::string& config_json,
                                           const std::string& source,
                                           const std::string& generation_config_json,
                                           const std::string& generation_source) {
  json root;
  try {
    root = json::parse(config_json);
  } catch (const json::exception& e) {
    return InvalidInput(source, "valid JSON", absl::StrCat("a parse error (", e.what(), ")"));
  }
  if (!root.is_object()) {
    return InvalidInput(source, "a JSON object", std::string(root.type_name()));
  }
  ConfigReader r(root, source);
  ModelSpec spec;
  ModelInfo& info = spec.info;

  if (!root.contains("architectures") || !root["architectures"].is_array() ||
      root["architectures"].empty() || !root["architectures"][0].is_string()) {
    return InvalidInput(r.Where("architectures"), "a list with the architecture name",
                        root.contains("architectures") ? root["architectures"].dump()
                                                       : std::string("nothing (key missing)"));
  }
  info.architecture = root["architectures"][0].get<std::string>();
  const ArchitectureEntry* arch = nullptr;
  for (const auto& a : kArchitectures) {
    if (info.architecture == a.name) arch = &a;
  }
  if (arch == nullptr) {
    return InvalidInput(
        r.Where("architectures"),
        absl::StrCat("a supported architecture (", absl::StrJoin(SupportedArchitectures(), ", "),
                     ")"),
        absl::StrCat("\"", OneLine(info.architecture), "\" (unsupported architecture)"));
  }
  spec.family = arch->family;
  spec.flux = arch->flux;
  if (root.contains("model_type") && root["model_type"].is_string()) {
    info.model_type = root["model_type"].get<std::string>();
  }
  if (root.contains("hidden_act") && root["hidden_act"] != json("silu")) {
    return InvalidInput(r.Where("hidden_act"), "\"silu\"", root["hidden_act"].dump());
  }

  FLUXATTN_ASSIGN_OR_RETURN(int64_t hidden, r.Int(root, "hidden_size", "hidden_size", {}, 1));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t layers,
                            r.Int(root, "num_hidden_layers", "num_hidden_layers", {}, 1));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t heads,
                            r.Int(root, "num_attention_heads", "num_attention_heads", {}, 1));
  FLUXATTN_ASSIGN_OR_RETURN(int64_t kv_heads,
                            r.Int(root, "num_key_value_heads", "num_key_value_heads", heads, 1));
  if (heads % kv_heads != 0) {
    return InvalidInput(r.Where("num_key_value_heads"),
                        absl::StrCat("a divisor of num_attention_heads (", heads, ")"),
                        absl::StrCat(kv_heads));
  }
  std::optional<int64_t> default_head_dim;
  if (hidden % heads == 0) default_head_dim = hidden / heads;
  FLUXATTN_ASSIGN_OR_RETURN(int64_t head_dim,
                            r.Int(root, "head_dim", "head_dim", default_head_dim, 2));
  if (head_dim % 2 != 0) {
    return InvalidInput(r.Where("head_dim"), "an even head dimension (RoPE rotates pairs)",
                        absl::StrCat(head_dim));
  }
  FLUXATTN_ASSIGN_OR_RETURN(spec.intermediate_size,
                            r.Int(root, "intermediate_size", "intermediate_size", {}, 1));
  FLUXATTN_ASSIGN_OR_RETURN(info.vocab_size, r.Int(root, "vocab_size", "vocab_size", {}, 1));
  FLUXATTN_ASSIGN_OR_RETURN(
      spec.max_position_embeddings,
      r.Int(root, "max_position_embeddings", "max_position_embeddings", int64_t{0}, 0));
  FLUXATTN_ASSIGN_OR_RETURN(spec.rms_norm_eps,
                            r.Number(root, "rms_norm_eps", "rms_norm_eps", 1e-6));
  FLUXATTN_ASSIGN_OR_RETURN(spec.tie_word_embeddings, r.Bool(root, "tie_word_embeddings", false));
  info.num_layers = static_cast<int>(layers);
  info.hidden_size = static_cast<int>(hidden);
  info.num_q_heads = static_cast<int>(heads);
  info.num_kv_heads = static_cast<int>(kv_heads);
  info.head_dim = static_cast<int>(head_dim);

  switch (spec.family) {
    case ModelFamily::kLlama: {
      FLUXATTN_ASSIGN_OR_RETURN(bool bias, r.Bool(root, "attention_bias", false));
      spec.qkv_bias = spec.o_bias = bias;
      FLUXATTN_ASSIGN_OR_RETURN(spec.mlp_bias, r.Bool(root, "mlp_bias", false));
      break;
    }
    case ModelFamily::kQwen2:
      spec.qkv_bias = true;
      break;
    case ModelFamily::kQwen3: {
      FLUXATTN_ASSIGN_OR_RETURN(bool bias, r.Bool(root, "attention_bias", false));
      spec.qkv_bias = spec.o_bias = bias;
      spec.qk_norm = true;
      break;
    }
  }
  FLUXATTN_ASSIGN_OR_RETURN(bool sliding, r.Bool(root, "use_sliding_window", false));
  if (sliding) {
    return InvalidInput(r.Where("use_sliding_window"),
                        "false (sliding-window layers are not "
                        "supported)",
                        "true");
  }
  if (r.Present(root, "layer_types")) {
    const json& types = root["layer_types"];
    if (!types.is_array()) return InvalidInput(r.Where("layer_types"), "a list", types.dump());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] != json("full_attention")) {
        return InvalidInput(r.Where(absl::StrCat("layer_types[", i, "]")), "\"full_attention\"",
                            types[i].dump());
      }
    }
  }
  FLUXATTN_RETURN_IF_ERROR(ParseRope(r, &spec));
  if (spec.flux) FLUXATTN_RETURN_IF_ERROR(ParseFluxSettings(r, &spec.flux_settings));

  FLUXATTN_RETURN_IF_ERROR(AppendTokenIds(root, "eos_token_id", source, &spec.eos_token_ids));
  if (r.Present(root, "bos_token_id") && root["bos_token_id"].is_number_integer()) {
    spec.bos_token_id = root["bos_token_id"].get<int64_t>();
  }
  if (!generation_config_json.empty()) {
    json gen;
    const std::string gen_source =
        generation_source.empty() ? std::string("generation_config.json") : generation_source;
    try {
      gen = json::parse(generation_config_json);
    } catch (const json::exception& e) {
      return InvalidInput(gen_source, "valid JSON", absl::StrCat("a parse error (", e.what(), ")"));
    }
    if (gen.is_object()) {
      FLUXATTN_RETURN_IF_ERROR(
          AppendTokenIds(gen, "eos_token_id", gen_source, &spec.eos_token_ids));
    }
  }
  for (int64_t id : spec.eos_token_ids) {
    if (id >= info.vocab_size) {
      return InvalidInput(r.Where("eos_token_id"),
                          absl::StrCat("ids below vocab_size ", info.vocab_size), absl::StrCat(id));
    }
  }

  for (auto it = root.begin(); it != root.end(); ++it) {
    const json& v = it.value();
    if (v.is_boolean()) {
      info.config[it.key()] = v.get<bool>();
    } else if (v.is_number_integer()) {
      info.config[it.key()] = v.get<int64_t>();
    } else if (v.is_number()) {
      info.config[it.key()] = v.get<double>();
    } else if (v.is_string()) {
      info.config[it.key()] = v.get<std::string>();
    }
  }
  return spec;
}

absl::StatusOr<ModelSpec> LoadModelConfig(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path config_path = fs::path(dir) / "config.json";
  std::ifstream in(config_path);
  if (!in) {
    return InvalidInput(dir, "a checkpoint folder with config.json", "no config.json");
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string gen_text;
  std::ifstream gen(fs::path(dir) / "generation_config.json");
  if (gen) {
    std::stringstream g;
    g << gen.rdbuf();
    gen_text = g.str();
  }
  FLUXATTN_ASSIGN_OR_RETURN(ModelSpec spec,
                            ParseModelConfig(text.str(), config_path.string(), gen_text,
                                             (fs::path(dir) / "generation_config.json").string()));
  spec.info.path = dir;
  return spec;
}

}  // namespace fluxattn::models
