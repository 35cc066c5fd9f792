// Renders chat messages into the prompt text of a checkpoint with the checkpoint's own chat
// template (chat_template.jinja, or "chat_template" in tokenizer_config.json: a string, or a
// list of named templates of which "default" is used), interpreted by the Jinja subset of
// serve/jinja.h the way transformers' `apply_chat_template` renders it. A checkpoint without a
// template gets ChatML.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "serve/jinja.h"
#include "serve/protocol.h"

namespace fluxattn::serve {

class ChatFormat {
 public:
  // Reads the template and the special tokens (bos_token, eos_token, ...) of the checkpoint
  // folder `dir`; a template that does not parse, or a malformed tokenizer_config.json, is an
  // error naming the file.
  static absl::StatusOr<ChatFormat> FromModelDir(const std::string& dir);
  // A template given as text; `special_tokens` is a JSON object such as
  // {"bos_token": "<s>", "eos_token": "</s>"}.
  static absl::StatusOr<ChatFormat> FromTemplate(std::string_view source, std::string origin,
                                                 const jinja::Json& special_tokens);
  // ChatML, for checkpoints without a template.
  static ChatFormat ChatMl() { return ChatFormat(); }

  // "chatml" (no template) or "jinja" (the checkpoint's template).
  std::string name() const { return template_ ? "jinja" : "chatml"; }

  // The prompt text of `messages` ending with the opening of the assistant's turn
  // (add_generation_prompt). `kwargs` (a JSON object) are further template variables, such as
  // Qwen3's enable_thinking; they override the special tokens. An error of the template (a
  // raise_exception, an undefined value used) names the template, its line and column.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     const nlohmann::json& kwargs = nlohmann::json::object()) const;

  // What transformers' apply_chat_template(messages, tools=tools, add_generation_prompt=...,
  // **kwargs) renders: messages and tools as JSON (tools null when none), with transformers'
  // message normalization (keys whose value is null are dropped; reasoning given as
  // "reasoning_content", "thinking" or "reasoning" is passed under all three names).
  absl::StatusOr<std::string> RenderJson(const jinja::Json& messages, const jinja::Json& tools,
                                         bool add_generation_prompt,
                                         const jinja::Json& kwargs) const;

  // Texts of the special tokens that end an assistant turn (added as stop tokens when the
  // tokenizer knows them): the end-of-turn markers the template writes, and eos_token.
  const std::vector<std::string>& end_of_turn() const { return end_of_turn_; }

  // Fixes the time strftime_now sees (Llama 3.2's date preamble); otherwise the local time.
  void set_render_options(const jinja::RenderOptions& options) { options_ = options; }

 private:
  ChatFormat() : end_of_turn_{"<|im_end|>"} {}
  std::optional<jinja::Template> template_;
  jinja::Json special_tokens_ = jinja::Json::object();
  std::vector<std::string> end_of_turn_;
  jinja::RenderOptions options_;
};

}  // namespace fluxattn::serve
