#include "serve/server_options.h"

#include <toml++/toml.h>

#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fluxattn::serve {
namespace {

std::string Where(const std::string& path, const toml::source_region& region) {
  return absl::StrCat(path, ":", region.begin.line, ":", region.begin.column);
}

}  // namespace

absl::Status LoadServerTable(const std::string& path, ServerOptions& options) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(path, e.source()), ": ", std::string(e.description())));
  }
  const toml::node* server = root.get("server");
  if (server == nullptr) return absl::OkStatus();
  const toml::table* table = server->as_table();
  if (table == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(Where(path, server->source()), ": key 'server': expected a table"));
  }
  using Setter = std::function<absl::Status(const toml::node&, const std::string&)>;
  auto integer = [&](int64_t lo, int64_t hi, auto* field) -> Setter {
    return [=](const toml::node& n, const std::string& key) -> absl::Status {
      std::optional<int64_t> v = n.value<int64_t>();
      if (!n.is_integer() || !v || *v < lo || *v > hi) {
        return absl::InvalidArgumentError(absl::StrCat(Where(path, n.source()), ": key '", key,
                                                       "': expected an integer in [", lo, ", ", hi,
                                                       "]"));
      }
      *field = static_cast<std::remove_pointer_t<decltype(field)>>(*v);
      return absl::OkStatus();
    };
  };
  auto number = [&](double lo, double hi, double* field) -> Setter {
    return [=](const toml::node& n, const std::string& key) -> absl::Status {
      std::optional<double> v = n.value<double>();
      if (!(n.is_floating_point() || n.is_integer()) || !v || *v < lo || *v > hi) {
        return absl::InvalidArgumentError(absl::StrCat(Where(path, n.source()), ": key '", key,
                                                       "': expected a number in [", lo, ", ", hi,
                                                       "]"));
      }
      *field = *v;
      return absl::OkStatus();
    };
  };
  auto string = [&](std::string* field) -> Setter {
    return [=](const toml::node& n, const std::string& key) -> absl::Status {
      if (!n.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(path, n.source()), ": key '", key, "': expected a string"));
      }
      *field = *n.value<std::string>();
      return absl::OkStatus();
    };
  };
  const std::map<std::string, Setter> setters = {
      {"host", string(&options.host)},
      {"port", integer(0, 65535, &options.port)},
      {"api_key", string(&options.api_key)},
      {"model_name", string(&options.model_name)},
      {"max_running_requests", integer(1, 4096, &options.max_running_requests)},
      {"max_queued_requests", integer(0, 1 << 20, &options.max_queued_requests)},
      {"max_prompt_tokens", integer(0, 1 << 30, &options.max_prompt_tokens)},
      {"default_max_tokens", integer(1, 1 << 30, &options.default_max_tokens)},
      {"request_timeout_seconds", number(0.001, 1e7, &options.request_timeout_seconds)},
      {"max_body_bytes", integer(1024, int64_t{1} << 34, &options.max_body_bytes)},
      {"read_timeout_seconds", number(0.001, 3600, &options.read_timeout_seconds)},
      {"http_threads", integer(1, 4096, &options.http_threads)},
  };
  for (auto&& [key, node] : *table) {
    const std::string k(key.str());
    auto it = setters.find(k);
    if (it == setters.end()) {
      std::vector<std::string> names;
      for (const auto& [name, setter] : setters) names.push_back(name);
      return absl::InvalidArgumentError(absl::StrCat(Where(path, key.source()), ": key 'server.", k,
                                                     "': expected one of the keys of [server] (",
                                                     absl::StrJoin(names, ", "),
                                                     "), found unknown key '", k, "'"));
    }
    absl::Status st = it->second(node, "server." + k);
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace fluxattn::serve
