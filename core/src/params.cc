#include "fluxattn/params.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/status.h"

namespace fluxattn {

const char* ParamTypeName(ParamType type) {
  switch (type) {
    case ParamType::kBool:
      return "bool";
    case ParamType::kInt:
      return "integer";
    case ParamType::kFloat:
      return "float";
    case ParamType::kString:
      return "string";
    case ParamType::kIntList:
      return "integer list";
    case ParamType::kStringList:
      return "string list";
  }
  return "unknown";
}

namespace {

std::string FormatDouble(double v) {
  // Shortest form that reads back exactly, always recognizable as a float.
  char buffer[64];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, v);
    if (std::strtod(buffer, nullptr) == v) break;
  }
  std::string text = buffer;
  if (std::isfinite(v) && text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

std::string Quote(const std::string& s) { return absl::StrCat("\"", s, "\""); }

}  // namespace

std::string ParamValueToString(const ParamValue& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return absl::StrCat(i); }
    std::string operator()(double d) const { return FormatDouble(d); }
    std::string operator()(const std::string& s) const { return Quote(s); }
    std::string operator()(const std::vector<int64_t>& v) const {
      return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
    }
    std::string operator()(const std::vector<std::string>& v) const {
      std::vector<std::string> quoted;
      for (const std::string& s : v) quoted.push_back(Quote(s));
      return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
    }
  };
  return std::visit(Visitor{}, value);
}

namespace {

template <typename T>
const T& GetAs(const std::map<std::string, ParamValue>& values, const std::string& name) {
  auto it = values.find(name);
  if (it == values.end()) {
    std::fprintf(stderr, "fluxattn: parameter '%s' was never declared\n", name.c_str());
  }
  FLUXATTN_CHECK(it != values.end());
  const T* v = std::get_if<T>(&it->second);
  if (v == nullptr) {
    std::fprintf(stderr, "fluxattn: parameter '%s' read with the wrong type\n", name.c_str());
  }
  FLUXATTN_CHECK(v != nullptr);
  return *v;
}

}  // namespace

bool ParamValues::GetBool(const std::string& name) const { return GetAs<bool>(values_, name); }
int64_t ParamValues::GetInt(const std::string& name) const { return GetAs<int64_t>(values_, name); }
double ParamValues::GetFloat(const std::string& name) const { return GetAs<double>(values_, name); }
const std::string& ParamValues::GetString(const std::string& name) const {
  return GetAs<std::string>(values_, name);
}
const std::vector<int64_t>& ParamValues::GetIntList(const std::string& name) const {
  return GetAs<std::vector<int64_t>>(values_, name);
}
const std::vector<std::string>& ParamValues::GetStringList(const std::string& name) const {
  return GetAs<std::vector<std::string>>(values_, name);
}

void ParamValues::Set(const std::string& name, ParamValue value, bool is_explicit) {
  values_[name] = std::move(value);
  if (is_explicit) {
    explicit_[name] = true;
  } else {
    explicit_.erase(name);
  }
}

}  // namespace fluxattn
