// The OpenAI API as `fluxattn serve` speaks it: request bodies of /v1/completions and
// /v1/chat/completions parsed and checked into one CompletionRequest, the error object, and the
// response and stream-chunk objects.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace fluxattn::serve {

// An error answered with `{"error": {...}}` in the OpenAI shape.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending body field ("" when none)
  std::string code;   // e.g. "context_length_exceeded" ("" when none)
};

nlohmann::json ErrorJson(const ApiError& error);
// Serializes JSON for the wire; invalid UTF-8 in strings becomes U+FFFD instead of throwing.
std::string Dump(const nlohmann::json& j);

struct ChatMessage {
  std::string role;
  std::string content;
  bool has_content = true;  // false: an assistant message whose content was null or absent
  // An assistant turn's reasoning ("reasoning_content", or "reasoning"), which templates such as
  // Qwen3's render in a <think> block.
  std::optional<std::string> reasoning_content;
};

enum class Endpoint { kCompletions, kChat };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  // Exactly one of these: text (completions), token ids (completions), messages (chat).
  std::optional<std::string> prompt_text;
  std::optional<std::vector<int64_t>> prompt_ids;
  std::vector<ChatMessage> messages;
  // Extra variables of the chat template (chat: "chat_template_kwargs", an object).
  nlohmann::json chat_template_kwargs = nlohmann::json::object();
  std::optional<int64_t> max_tokens;  // absent: the endpoint's default
  double temperature = 1.0;
  double top_p = 1.0;
  int top_k = 0;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;
  std::string routing;  // "" = the configuration's [router]
  // -1: no log probabilities; N >= 0: each token's, with N alternatives (completions:
  // `logprobs` = N; chat: `logprobs` true and `top_logprobs` = N).
  int logprobs = -1;
};

inline constexpr int kMaxCompletionLogprobs = 5;

// One generated token's log probability: its text (the bytes it decodes to; part of a UTF-8
// character is sent as U+FFFD, the chat form's `bytes` keeps them), and the alternatives.
struct LogprobEntry {
  std::string text;
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;
};

// The `logprobs` object of a choice: the legacy completions form (tokens, token_logprobs,
// top_logprobs, text_offset from `text_offset`) or the chat form ({"content": [...]}).
nlohmann::json LogprobsJson(Endpoint endpoint, std::span<const LogprobEntry> entries,
                            int64_t text_offset);

// Parses and checks a request body (already valid JSON). Unknown fields are ignored; known
// fields of the wrong type or out of range, and features that are not offered (n > 1, logprobs,
// echo, penalties, tools, ...) are a 400 naming the field.
std::optional<ApiError> ParseCompletionRequest(const nlohmann::json& body, Endpoint endpoint,
                                               CompletionRequest& out);

// What the server adds to every response under "fluxattn": the request's routing policy and
// what it did.
struct RoutingReport {
  uint64_t request_id = 0;
  std::string routing;
  std::optional<double> sa_ratio;  // unknown when the request was cut short by a stop string
  std::vector<std::pair<int, std::string>> layer_backends;
};

nlohmann::json RoutingJson(const RoutingReport& report);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

nlohmann::json UsageJson(const Usage& usage);

// A whole (non-streaming) response.
nlohmann::json CompletionResponse(Endpoint endpoint, const std::string& id, int64_t created,
                                  const std::string& model, const std::string& text,
                                  const std::string& finish_reason, const Usage& usage,
                                  const RoutingReport& routing,
                                  const nlohmann::json& logprobs = nullptr);

// One chunk of a stream: `text` is the delta; `finish_reason` empty while not finished. A chat
// stream's first chunk carries the role (`first`).
nlohmann::json StreamChunk(Endpoint endpoint, const std::string& id, int64_t created,
                           const std::string& model, const std::string& text,
                           const std::string& finish_reason, bool first,
                           const nlohmann::json& logprobs = nullptr);

// The final chunk of `stream_options.include_usage`: no choices, the usage.
nlohmann::json UsageChunk(Endpoint endpoint, const std::string& id, int64_t created,
                          const std::string& model, const Usage& usage);

}  // namespace fluxattn::serve
