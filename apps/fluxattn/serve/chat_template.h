// Renders chat messages into the prompt text of a checkpoint. This first version knows two
// formats and picks one from the checkpoint's chat template (tokenizer_config.json
// "chat_template" or chat_template.jinja): ChatML (Qwen2.5, Qwen3, and checkpoints without a
// template) and the Llama 3 header format. It does not interpret the Jinja source: template
// features beyond plain system/user/assistant turns (tools, Qwen3 thinking blocks, Llama 3.1's
// date preamble) are not reproduced.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "serve/protocol.h"

namespace fluxattn::serve {

class ChatFormat {
 public:
  enum class Kind { kChatMl, kLlama3 };

  // Reads the template of the checkpoint folder `dir`; a template of neither family is an error
  // that names the file.
  static absl::StatusOr<ChatFormat> FromModelDir(const std::string& dir);
  static ChatFormat Of(Kind kind) { return ChatFormat(kind); }

  Kind kind() const { return kind_; }
  std::string name() const { return kind_ == Kind::kChatMl ? "chatml" : "llama3"; }
  // The prompt text, ending with the opening of the assistant's turn.
  std::string Render(const std::vector<ChatMessage>& messages) const;
  // Texts of the special tokens that end an assistant turn (added as stop tokens when the
  // tokenizer knows them).
  std::vector<std::string> end_of_turn() const;

 private:
  explicit ChatFormat(Kind kind) : kind_(kind) {}
  Kind kind_;
};

}  // namespace fluxattn::serve
