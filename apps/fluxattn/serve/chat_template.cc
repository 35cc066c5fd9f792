#include "serve/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/status.h"

namespace fluxattn::serve {
namespace {

using jinja::Json;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The special tokens transformers passes to every chat template (its special_tokens_map):
// strings, or added-token objects {"content": ...}.
Json SpecialTokens(const nlohmann::json& config) {
  Json out = Json::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    auto it = config.find(key);
    if (it == config.end()) continue;
    if (it->is_string()) {
      out[key] = it->get<std::string>();
    } else if (it->is_object() && it->value("content", nlohmann::json()).is_string()) {
      out[key] = (*it)["content"].get<std::string>();
    }
  }
  return out;
}

// Turn-ending special tokens a template may write.
constexpr const char* kEndOfTurnMarkers[] = {"<|im_end|>", "<|eot_id|>",    "<|eom_id|>",
                                             "<|end|>",    "<end_of_turn>", "<|endoftext|>"};

// transformers' message normalization: keys whose value is null are dropped, and reasoning
// given under any of its names is passed as "thinking" and "reasoning_content" too.
Json NormalizeMessages(const Json& messages) {
  Json out = Json::array();
  for (const Json& m : messages) {
    if (!m.is_object()) {
      out.push_back(m);
      continue;
    }
    Json msg = Json::object();
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it->is_null()) msg[it.key()] = *it;
    }
    const Json* reasoning = nullptr;
    for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
      auto it = msg.find(key);
      if (it != msg.end()) {
        reasoning = &*it;
        break;
      }
    }
    if (reasoning != nullptr) {
      const Json r = *reasoning;
      Json aliased = Json::object();
      aliased["thinking"] = r;
      for (auto it = msg.begin(); it != msg.end(); ++it) aliased[it.key()] = *it;
      aliased["reasoning_content"] = r;
      msg = std::move(aliased);
    }
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace

absl::StatusOr<ChatFormat> ChatFormat::FromTemplate(std::string_view source, std::string origin,
                                                    const Json& special_tokens) {
  auto parsed = jinja::Template::Parse(source, std::move(origin));
  if (!parsed.ok()) return parsed.status();
  ChatFormat format;
  format.template_ = std::move(*parsed);
  format.special_tokens_ = special_tokens.is_object() ? special_tokens : Json::object();
  format.end_of_turn_.clear();
  for (const char* marker : kEndOfTurnMarkers) {
    if (source.find(marker) != std::string_view::npos) format.end_of_turn_.push_back(marker);
  }
  auto eos = format.special_tokens_.find("eos_token");
  if (eos != format.special_tokens_.end()) {
    const std::string text = eos->get<std::string>();
    if (std::find(format.end_of_turn_.begin(), format.end_of_turn_.end(), text) ==
        format.end_of_turn_.end()) {
      format.end_of_turn_.push_back(text);
    }
  }
  return format;
}

absl::StatusOr<ChatFormat> ChatFormat::FromModelDir(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  nlohmann::json cfg = nlohmann::json::object();
  if (fs::exists(config)) {
    cfg = nlohmann::json::parse(ReadFile(config), nullptr, /*allow_exceptions=*/false);
    if (cfg.is_discarded()) return InvalidInput(config.string(), "valid JSON", "a parse error");
    if (!cfg.is_object()) return InvalidInput(config.string(), "a JSON object", cfg.type_name());
  }
  const Json special = SpecialTokens(cfg);
  if (fs::exists(jinja)) return FromTemplate(ReadFile(jinja), jinja.string(), special);
  auto t = cfg.find("chat_template");
  if (t == cfg.end() || t->is_null()) return ChatMl();
  const std::string where = config.string() + ": chat_template";
  if (t->is_string()) return FromTemplate(t->get<std::string>(), where, special);
  if (!t->is_array()) {
    return InvalidInput(where, "a string or a list of {\"name\", \"template\"} objects",
                        t->type_name());
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < t->size(); ++i) {
    const nlohmann::json& entry = (*t)[i];
    if (!entry.is_object() || !entry.value("name", nlohmann::json()).is_string() ||
        !entry.value("template", nlohmann::json()).is_string()) {
      return InvalidInput(absl::StrCat(where, "[", i, "]"),
                          "an object with string \"name\" and \"template\"", entry.dump());
    }
    const std::string name = entry["name"].get<std::string>();
    if (name == "default") {
      return FromTemplate(entry["template"].get<std::string>(),
                          absl::StrCat(where, "[", i, "] (default)"), special);
    }
    names.push_back("'" + name + "'");
  }
  return InvalidInput(where, "a template named 'default'",
                      names.empty() ? "an empty list" : absl::StrJoin(names, ", "));
}

absl::StatusOr<std::string> ChatFormat::RenderJson(const Json& messages, const Json& tools,
                                                   bool add_generation_prompt,
                                                   const Json& kwargs) const {
  if (!template_) {
    std::string out;
    for (const Json& m : messages) {
      const Json content = m.value("content", Json());
      out += "<|im_start|>" + m.value("role", std::string()) + "\n" +
             (content.is_string() ? content.get<std::string>() : std::string()) + "<|im_end|>\n";
    }
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
    return out;
  }
  Json context = Json::object();
  context["messages"] = NormalizeMessages(messages);
  context["tools"] = tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it) {
    context[it.key()] = *it;
  }
  if (kwargs.is_object()) {
    for (auto it = kwargs.begin(); it != kwargs.end(); ++it) context[it.key()] = *it;
  }
  return template_->Render(context, options_);
}

absl::StatusOr<std::string> ChatFormat::Render(const std::vector<ChatMessage>& messages,
                                               const nlohmann::json& kwargs) const {
  Json list = Json::array();
  for (const ChatMessage& m : messages) {
    Json msg = {{"role", m.role}};
    if (m.has_content) msg["content"] = m.content;
    if (m.reasoning_content) msg["reasoning_content"] = *m.reasoning_content;
    list.push_back(std::move(msg));
  }
  return RenderJson(list, nullptr, /*add_generation_prompt=*/true, Json(kwargs));
}

}  // namespace fluxattn::serve
