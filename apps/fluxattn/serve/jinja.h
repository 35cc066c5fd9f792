// A Jinja subset for chat templates: what the published templates of Qwen2.5, Qwen3 and
// Llama 3.x use, rendered the way transformers' `apply_chat_template` renders them (jinja2 with
// trim_blocks and lstrip_blocks on, a trailing newline of the source dropped, the loopcontrols
// extension, and the globals raise_exception, strftime_now, namespace, dict and range).
//
// Supported: {{ }}, {% %}, {# #}, whitespace control (`-` and `+`); if/elif/else, for (with
// `else`, an `if` filter, tuple unpacking, break/continue and the loop variable's index, index0,
// revindex, revindex0, first, last, length, previtem, nextitem), set (names, tuples,
// namespace attributes, `{% set x %}...{% endset %}`), macro, generation; literals (strings,
// numbers, lists, tuples, dicts), attribute and item access, slicing, calls with keyword
// arguments, the operators of Jinja (and, or, not, in, not in, is, is not, ==, !=, <, <=, >, >=,
// +, -, *, /, //, %, **, ~, conditional expressions) with Python's semantics; the filters and
// tests listed in docs/serve.md; the string methods startswith, endswith, strip, lstrip, rstrip,
// split, rsplit, replace, upper, lower, find, count, removeprefix and removesuffix; the dict
// methods get, items, keys and values.
//
// Anything else (an unknown tag, filter, test or method, include/extends/call blocks, ...) is an
// error naming the template, the line and the column, what was expected and what was found, at
// parse time where Jinja finds it at compile time and otherwise when rendering: never a silently
// different output.
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace fluxattn::serve::jinja {

// Template variables keep the order of their keys: tojson writes dicts in insertion order, as
// Python does.
using Json = nlohmann::ordered_json;

struct RenderOptions {
  // The local time that strftime_now formats; unset: the clock when rendering.
  std::optional<std::tm> now;
};

class Template {
 public:
  // Parses `source`. `origin` names the template in error messages (a file, or "file: key").
  static absl::StatusOr<Template> Parse(std::string_view source, std::string origin);

  // Renders with the variables of `context`, a JSON object.
  absl::StatusOr<std::string> Render(const Json& context, const RenderOptions& options = {}) const;

  const std::string& origin() const;

  struct Impl;

 private:
  explicit Template(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace fluxattn::serve::jinja
