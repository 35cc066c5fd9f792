// Fuzz target: a chat template parsed and rendered by serve's Jinja subset (serve/jinja.h). The
// first line of the input is the template variables (a JSON object; otherwise a fixed
// conversation), the rest the template. Any input must give either text or one error line that
// names the template; rendering twice gives the same result; and a source without a trailing
// newline renders as the same source with one (jinja2 drops one trailing newline).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "serve/jinja.h"

namespace {

using fluxattn::serve::jinja::Json;
using fluxattn::serve::jinja::RenderOptions;
using fluxattn::serve::jinja::Template;

const Json& Conversation() {
  static const Json j = Json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ü"},
                 {"role": "assistant", "content": "<think>\nx\n</think>\n\nHello",
                  "tool_calls": [{"type": "function",
                                  "function": {"name": "f", "arguments": {"a": [1, 2.5]}}}]},
                 {"role": "tool", "content": "{\"r\": null}"}, {"role": "user", "content": ""}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
  return j;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using fluxattn::fuzz::CheckUserError;
  using fluxattn::fuzz::Fail;
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\n');
  const std::string first = split == std::string::npos ? "" : input.substr(0, split);
  const std::string source = split == std::string::npos ? input : input.substr(split + 1);
  Json vars = Json::parse(first, nullptr, /*allow_exceptions=*/false);
  if (vars.is_discarded() || !vars.is_object()) vars = Conversation();
  std::tm now{};
  now.tm_year = 126;
  now.tm_mday = 5;
  const RenderOptions options{.now = now};

  auto t = Template::Parse(source, "fuzz.jinja");
  if (!t.ok()) {
    CheckUserError(t.status(), "fuzz.jinja");
    return 0;
  }
  auto a = t->Render(vars, options);
  auto b = t->Render(vars, options);
  if (a.ok() != b.ok() || (a.ok() ? *a != *b : a.status() != b.status())) {
    Fail("rendering is deterministic", source);
  }
  if (!a.ok()) CheckUserError(a.status(), "fuzz.jinja");
  if (!source.empty() && source.back() != '\n' && source.back() != '\r') {
    auto t2 = Template::Parse(source + "\n", "fuzz.jinja");
    if (!t2.ok())
      Fail("a trailing newline does not change parsing", std::string(t2.status().message()));
    auto c = t2->Render(vars, options);
    if (c.ok() != a.ok() || (c.ok() && *c != *a)) Fail("a trailing newline is dropped", source);
  }
  return 0;
}
