#include "serve/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fluxattn/status.h"
#include "nlohmann/json.hpp"

namespace fluxattn::serve {
namespace {

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

absl::StatusOr<ChatFormat> ChatFormat::FromModelDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::string source;
  std::string origin;
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(jinja)) {
    source = ReadFile(jinja);
    origin = jinja.string();
  } else if (fs::exists(config)) {
    nlohmann::json j = nlohmann::json::parse(ReadFile(config), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return InvalidInput(config.string(), "valid JSON", "a parse error");
    origin = config.string() + ": chat_template";
    auto t = j.find("chat_template");
    if (t != j.end() && t->is_string()) {
      source = t->get<std::string>();
    } else if (t != j.end() && t->is_array()) {
      for (const auto& entry : *t) {
        if (entry.is_object() && entry.value("name", "") == "default" &&
            entry.value("template", nlohmann::json()).is_string()) {
          source = entry["template"].get<std::string>();
        }
      }
    }
  }
  if (source.empty()) return ChatFormat(Kind::kChatMl);
  if (source.find("<|im_start|>") != std::string::npos) return ChatFormat(Kind::kChatMl);
  if (source.find("<|start_header_id|>") != std::string::npos) return ChatFormat(Kind::kLlama3);
  return InvalidInput(origin, "a ChatML or Llama 3 chat template", "a template of another format");
}

std::string ChatFormat::Render(const std::vector<ChatMessage>& messages) const {
  std::string out;
  if (kind_ == Kind::kChatMl) {
    for (const ChatMessage& m : messages) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    }
    out += "<|im_start|>assistant\n";
  } else {
    out += "<|begin_of_text|>";
    for (const ChatMessage& m : messages) {
      out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
    }
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

std::vector<std::string> ChatFormat::end_of_turn() const {
  if (kind_ == Kind::kChatMl) return {"<|im_end|>"};
  return {"<|eot_id|>"};
}

}  // namespace fluxattn::serve
