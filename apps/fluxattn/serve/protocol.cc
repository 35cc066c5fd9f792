#include "serve/protocol.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "fluxattn/engine.h"

namespace fluxattn::serve {
namespace {

using nlohmann::json;

ApiError Bad(const std::string& param, const std::string& expected, const json& found) {
  std::string shown = found.is_string() ? found.get<std::string>() : Dump(found);
  if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
  if (found.is_string()) shown = absl::StrCat("'", shown, "'");
  return ApiError{400, absl::StrCat("'", param, "': expected ", expected, ", found ", shown),
                  "invalid_request_error", param, ""};
}

// A field that is absent or null counts as not given.
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> GetInt(const json& body, const char* name, int64_t lo, int64_t hi,
                               std::optional<int64_t>& out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  const std::string range = absl::StrCat("an integer in [", lo, ", ", hi, "]");
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) return Bad(name, range, *v);
    out = static_cast<int64_t>(u);
    return std::nullopt;
  }
  if (!v->is_number_integer()) return Bad(name, range, *v);
  const int64_t i = v->get<int64_t>();
  if (i < lo || i > hi) return Bad(name, range, *v);
  out = i;
  return std::nullopt;
}

std::optional<ApiError> GetNumber(const json& body, const char* name, double lo, double hi,
                                  double& out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  const std::string range = absl::StrCat("a number in [", lo, ", ", hi, "]");
  if (!v->is_number()) return Bad(name, range, *v);
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) return Bad(name, range, *v);
  out = d;
  return std::nullopt;
}

std::optional<ApiError> GetBool(const json& body, const char* name, bool& out) {
  const json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return Bad(name, "a boolean", *v);
  out = v->get<bool>();
  return std::nullopt;
}

// Fields of the API this server does not offer: accepted only at their neutral value.
std::optional<ApiError> CheckUnsupported(const json& body, Endpoint endpoint) {
  std::optional<int64_t> n;
  if (auto e = GetInt(body, "n", 1, 1, n)) {
    e->message += " (this server returns one choice per request)";
    return e;
  }
  std::optional<int64_t> best_of;
  if (auto e = GetInt(body, "best_of", 1, 1, best_of)) return e;
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    double d = 0.0;
    if (auto e = GetNumber(body, name, 0.0, 0.0, d)) {
      e->message += " (penalties are not implemented)";
      return e;
    }
  }
  if (endpoint == Endpoint::kCompletions) {
    bool echo = false;
    if (auto e = GetBool(body, "echo", echo)) return e;
    if (echo) return Bad("echo", "false (echo is not implemented)", true);
    if (const json* v = Field(body, "suffix")) {
      return Bad("suffix", "null (suffix is not implemented)", *v);
    }
  }
  for (const char* name : {"logit_bias", "tools", "functions"}) {
    if (const json* v = Field(body, name)) {
      if (!v->empty()) return Bad(name, "null or empty (not implemented)", *v);
    }
  }
  for (const char* name : {"tool_choice", "function_call"}) {
    if (const json* v = Field(body, name)) {
      if (!(v->is_string() && v->get<std::string>() == "none")) {
        return Bad(name, "null or \"none\" (tools are not implemented)", *v);
      }
    }
  }
  if (const json* v = Field(body, "response_format")) {
    if (!v->is_object() || v->value("type", json()) != "text") {
      return Bad("response_format", "null or {\"type\": \"text\"}", *v);
    }
  }
  return std::nullopt;
}

// Completions: `logprobs` = N alternatives (0..5). Chat: `logprobs` true, with `top_logprobs`
// alternatives (0..20).
std::optional<ApiError> ParseLogprobs(const json& body, Endpoint endpoint, CompletionRequest& out) {
  if (endpoint == Endpoint::kCompletions) {
    const json* v = Field(body, "logprobs");
    if (v != nullptr && v->is_boolean() && !v->get<bool>()) return std::nullopt;
    std::optional<int64_t> n;
    if (auto e = GetInt(body, "logprobs", 0, kMaxCompletionLogprobs, n)) return e;
    if (n) out.logprobs = static_cast<int>(*n);
    if (Field(body, "top_logprobs") != nullptr) {
      return Bad("top_logprobs", "null (completions take the count in 'logprobs')",
                 body["top_logprobs"]);
    }
    return std::nullopt;
  }
  bool want = false;
  if (auto e = GetBool(body, "logprobs", want)) return e;
  std::optional<int64_t> top;
  if (auto e = GetInt(body, "top_logprobs", 0, kMaxTopLogprobs, top)) return e;
  if (top && !want) return Bad("top_logprobs", "null unless 'logprobs' is true", *top);
  if (want) out.logprobs = static_cast<int>(top.value_or(0));
  return std::nullopt;
}

std::optional<ApiError> ParsePrompt(const json& body, CompletionRequest& out) {
  const json* p = Field(body, "prompt");
  const std::string expected = "a string, an array of token ids, or an array holding one of these";
  if (p == nullptr) return Bad("prompt", expected, json());
  const json* v = p;
  if (v->is_array() && v->size() == 1 && ((*v)[0].is_string() || (*v)[0].is_array())) {
    v = &(*v)[0];
  }
  if (v->is_string()) {
    out.prompt_text = v->get<std::string>();
    return std::nullopt;
  }
  if (v->is_array()) {
    if (v->empty()) return Bad("prompt", "a non-empty prompt", *p);
    std::vector<int64_t> ids;
    for (const json& id : *v) {
      if (!id.is_number_integer()) {
        if (id.is_string() || id.is_array()) {
          return Bad("prompt", "one prompt (batches of prompts are not served; send one each)", *p);
        }
        return Bad("prompt", expected, *p);
      }
      if (id.is_number_unsigned() && id.get<uint64_t>() > (1ull << 40)) {
        return Bad("prompt", "token ids in the vocabulary", id);
      }
      ids.push_back(id.get<int64_t>());
    }
    out.prompt_ids = std::move(ids);
    return std::nullopt;
  }
  return Bad("prompt", expected, *p);
}

std::optional<ApiError> ParseMessages(const json& body, CompletionRequest& out) {
  const json* m = Field(body, "messages");
  if (m == nullptr || !m->is_array() || m->empty()) {
    return Bad("messages", "a non-empty array of messages", m ? *m : json());
  }
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!msg.is_object()) return Bad(where, "an object with 'role' and 'content'", msg);
    auto role = msg.find("role");
    if (role == msg.end() || !role->is_string()) {
      return Bad(where + ".role", "one of \"system\", \"developer\", \"user\", \"assistant\"",
                 role == msg.end() ? json() : *role);
    }
    ChatMessage parsed;
    parsed.role = role->get<std::string>();
    if (parsed.role == "developer") parsed.role = "system";
    if (parsed.role != "system" && parsed.role != "user" && parsed.role != "assistant") {
      return Bad(where + ".role",
                 "one of \"system\", \"developer\", \"user\", \"assistant\" (tool messages are "
                 "not supported)",
                 *role);
    }
    auto content = msg.find("content");
    if (content == msg.end() || content->is_null()) {
      if (parsed.role != "assistant") return Bad(where + ".content", "a string", json());
      parsed.has_content = false;
    } else if (content->is_string()) {
      parsed.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        const std::string pw = absl::StrCat(where, ".content[", k, "]");
        if (!part.is_object() || part.value("type", json()) != "text") {
          return Bad(pw, "a {\"type\": \"text\", \"text\": ...} part (only text is supported)",
                     part);
        }
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) {
          return Bad(pw + ".text", "a string", text == part.end() ? json() : *text);
        }
        parsed.content += text->get<std::string>();
      }
    } else {
      return Bad(where + ".content", "a string or an array of text parts", *content);
    }
    for (const char* key : {"reasoning_content", "reasoning"}) {
      const json* r = Field(msg, key);
      if (r == nullptr) continue;
      if (parsed.role != "assistant" || !r->is_string()) {
        return Bad(absl::StrCat(where, ".", key), "a string on an assistant message", *r);
      }
      if (!parsed.reasoning_content) parsed.reasoning_content = r->get<std::string>();
    }
    out.messages.push_back(std::move(parsed));
  }
  if (const json* k = Field(body, "chat_template_kwargs")) {
    if (!k->is_object()) return Bad("chat_template_kwargs", "an object", *k);
    for (const char* reserved : {"messages", "tools", "documents", "add_generation_prompt"}) {
      if (k->contains(reserved)) {
        return Bad(absl::StrCat("chat_template_kwargs.", reserved),
                   "no such key (the server sets it)", (*k)[reserved]);
      }
    }
    out.chat_template_kwargs = *k;
  }
  return std::nullopt;
}

}  // namespace

json ErrorJson(const ApiError& error) {
  return {{"error",
           {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? json() : json(error.param)},
            {"code", error.code.empty() ? json() : json(error.code)}}}};
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::optional<ApiError> ParseCompletionRequest(const json& body, Endpoint endpoint,
                                               CompletionRequest& out) {
  out = CompletionRequest();
  out.endpoint = endpoint;
  if (!body.is_object()) return Bad("body", "a JSON object", body);
  const json* model = Field(body, "model");
  if (model == nullptr || !model->is_string()) {
    return Bad("model", "the name of the served model (a string)", model ? *model : json());
  }
  out.model = model->get<std::string>();
  if (endpoint == Endpoint::kCompletions) {
    if (auto e = ParsePrompt(body, out)) return e;
  } else {
    if (auto e = ParseMessages(body, out)) return e;
  }
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  if (auto e = GetInt(body, "max_tokens", 0, kMaxInt, out.max_tokens)) return e;
  if (endpoint == Endpoint::kChat) {
    std::optional<int64_t> mct;
    if (auto e = GetInt(body, "max_completion_tokens", 0, kMaxInt, mct)) return e;
    if (mct) out.max_tokens = mct;
  }
  if (auto e = GetNumber(body, "temperature", 0.0, 2.0, out.temperature)) return e;
  if (auto e = GetNumber(body, "top_p", 0.0, 1.0, out.top_p)) return e;
  if (out.top_p <= 0.0) return Bad("top_p", "a number in (0, 1]", out.top_p);
  std::optional<int64_t> top_k;
  if (auto e = GetInt(body, "top_k", -1, kMaxInt, top_k)) return e;
  out.top_k = top_k && *top_k > 0 ? static_cast<int>(*top_k) : 0;
  if (auto e = GetInt(body, "seed", std::numeric_limits<int64_t>::min(),
                      std::numeric_limits<int64_t>::max(), out.seed)) {
    return e;
  }
  if (const json* s = Field(body, "stop")) {
    const std::string expected = "a string or an array of at most 4 non-empty strings";
    if (s->is_string()) {
      out.stop.push_back(s->get<std::string>());
    } else if (s->is_array() && s->size() <= 4) {
      for (const json& x : *s) {
        if (!x.is_string()) return Bad("stop", expected, *s);
        out.stop.push_back(x.get<std::string>());
      }
    } else {
      return Bad("stop", expected, *s);
    }
    for (const std::string& x : out.stop) {
      if (x.empty()) return Bad("stop", expected, *s);
    }
  }
  if (auto e = GetBool(body, "stream", out.stream)) return e;
  if (const json* so = Field(body, "stream_options")) {
    if (!so->is_object()) return Bad("stream_options", "an object", *so);
    if (auto e = GetBool(*so, "include_usage", out.include_usage)) {
      e->param = "stream_options.include_usage";
      return e;
    }
    if (!out.stream) return Bad("stream_options", "null unless 'stream' is true", *so);
  }
  if (auto e = GetBool(body, "ignore_eos", out.ignore_eos)) return e;
  if (auto e = ParseLogprobs(body, endpoint, out)) return e;
  if (const json* r = Field(body, "routing")) {
    if (!r->is_string()) return Bad("routing", "the name of a routing policy (a string)", *r);
    out.routing = r->get<std::string>();
  }
  if (const json* u = Field(body, "user")) {
    if (!u->is_string()) return Bad("user", "a string", *u);
  }
  return CheckUnsupported(body, endpoint);
}

json RoutingJson(const RoutingReport& report) {
  json layers = json::array();
  for (const auto& [layer, backend] : report.layer_backends) {
    layers.push_back({{"layer", layer}, {"backend", backend}});
  }
  return {{"request_id", report.request_id},
          {"routing", report.routing},
          {"sa_ratio", report.sa_ratio ? json(*report.sa_ratio) : json()},
          {"layers", layers}};
}

json UsageJson(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

json LogprobsJson(Endpoint endpoint, std::span<const LogprobEntry> entries, int64_t text_offset) {
  auto bytes = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(static_cast<int>(c));
    return b;
  };
  if (endpoint == Endpoint::kCompletions) {
    json tokens = json::array(), logprobs = json::array(), top = json::array(),
         offsets = json::array();
    for (const LogprobEntry& e : entries) {
      tokens.push_back(e.text);
      logprobs.push_back(e.logprob);
      json alternatives = json::object();
      for (const auto& [text, lp] : e.top) {
        if (!alternatives.contains(text)) alternatives[text] = lp;
      }
      top.push_back(alternatives);
      offsets.push_back(text_offset);
      text_offset += static_cast<int64_t>(e.text.size());
    }
    return {{"tokens", tokens},
            {"token_logprobs", logprobs},
            {"top_logprobs", top},
            {"text_offset", offsets}};
  }
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json top = json::array();
    for (const auto& [text, lp] : e.top) {
      top.push_back({{"token", text}, {"logprob", lp}, {"bytes", bytes(text)}});
    }
    content.push_back({{"token", e.text},
                       {"logprob", e.logprob},
                       {"bytes", bytes(e.text)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json CompletionResponse(Endpoint endpoint, const std::string& id, int64_t created,
                        const std::string& model, const std::string& text,
                        const std::string& finish_reason, const Usage& usage,
                        const RoutingReport& routing, const json& logprobs) {
  json choice = {{"index", 0}, {"logprobs", logprobs}, {"finish_reason", finish_reason}};
  if (endpoint == Endpoint::kCompletions) {
    choice["text"] = text;
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  }
  return {{"id", id},
          {"object", endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})},
          {"usage", UsageJson(usage)},
          {"fluxattn", RoutingJson(routing)}};
}

json StreamChunk(Endpoint endpoint, const std::string& id, int64_t created,
                 const std::string& model, const std::string& text,
                 const std::string& finish_reason, bool first, const json& logprobs) {
  json choice = {{"index", 0},
                 {"logprobs", logprobs},
                 {"finish_reason", finish_reason.empty() ? json() : json(finish_reason)}};
  if (endpoint == Endpoint::kCompletions) {
    choice["text"] = text;
  } else {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  }
  return {
      {"id", id},
      {"object", endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk"},
      {"created", created},
      {"model", model},
      {"choices", json::array({choice})}};
}

json UsageChunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                const Usage& usage) {
  return {
      {"id", id},
      {"object", endpoint == Endpoint::kCompletions ? "text_completion" : "chat.completion.chunk"},
      {"created", created},
      {"model", model},
      {"choices", json::array()},
      {"usage", UsageJson(usage)}};
}

}  // namespace fluxattn::serve
