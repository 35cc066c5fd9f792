// Typed plugin parameters. A plugin describes its parameters (name, type, default, range,
// description); the core validates a config table against that description before the plugin
// ever sees it, and the same description generates docs/configuration.md and `fluxattn plugins`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace fluxattn {

enum class ParamType : uint8_t { kBool, kInt, kFloat, kString, kIntList, kStringList };

const char* ParamTypeName(ParamType type);  // "bool", "integer", "float", "string", ...

using ParamValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>,
                                std::vector<std::string>>;

std::string ParamValueToString(const ParamValue& value);

struct ParamSpec {
  std::string name;
  ParamType type = ParamType::kInt;
  std::string description;
  // Absent default means the parameter is required.
  std::optional<ParamValue> default_value;
  // Inclusive bounds for kInt/kFloat (and for every element of kIntList).
  std::optional<double> min_value;
  std::optional<double> max_value;
  // Allowed values for kString (empty: any string).
  std::vector<std::string> choices;
};

// An integer parameter with a default and inclusive bounds.
inline ParamSpec IntParamSpec(std::string name, int64_t default_value, double min_value,
                              double max_value, std::string description) {
  ParamSpec spec;
  spec.name = std::move(name);
  spec.type = ParamType::kInt;
  spec.default_value = default_value;
  spec.min_value = min_value;
  spec.max_value = max_value;
  spec.description = std::move(description);
  return spec;
}

// A float parameter with a default and inclusive bounds.
inline ParamSpec FloatParamSpec(std::string name, double default_value, double min_value,
                                double max_value, std::string description) {
  ParamSpec spec;
  spec.name = std::move(name);
  spec.type = ParamType::kFloat;
  spec.default_value = default_value;
  spec.min_value = min_value;
  spec.max_value = max_value;
  spec.description = std::move(description);
  return spec;
}

// A boolean parameter with a default.
inline ParamSpec BoolParamSpec(std::string name, bool default_value, std::string description) {
  ParamSpec spec;
  spec.name = std::move(name);
  spec.type = ParamType::kBool;
  spec.default_value = default_value;
  spec.description = std::move(description);
  return spec;
}

// A free string parameter with a default.
inline ParamSpec StringParamSpec(std::string name, std::string default_value,
                                 std::string description) {
  ParamSpec spec;
  spec.name = std::move(name);
  spec.type = ParamType::kString;
  spec.default_value = std::move(default_value);
  spec.description = std::move(description);
  return spec;
}

// A string parameter that must be one of `choices` (the default among them).
inline ParamSpec ChoiceParamSpec(std::string name, std::string default_value,
                                 std::vector<std::string> choices, std::string description) {
  ParamSpec spec =
      StringParamSpec(std::move(name), std::move(default_value), std::move(description));
  spec.choices = std::move(choices);
  return spec;
}

// Validated parameter values of one plugin instance: every declared parameter has a value
// (explicit or default) of the declared type.
class ParamValues {
 public:
  ParamValues() = default;
  explicit ParamValues(std::map<std::string, ParamValue> values) : values_(std::move(values)) {}

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  // Whether the value was given explicitly in the config (not a default).
  bool is_explicit(const std::string& name) const { return explicit_.count(name) != 0; }

  // Typed accessors; CHECK-fail on a programmer error (undeclared name or wrong type).
  bool GetBool(const std::string& name) const;
  int64_t GetInt(const std::string& name) const;
  double GetFloat(const std::string& name) const;
  const std::string& GetString(const std::string& name) const;
  const std::vector<int64_t>& GetIntList(const std::string& name) const;
  const std::vector<std::string>& GetStringList(const std::string& name) const;

  void Set(const std::string& name, ParamValue value, bool is_explicit);
  const std::map<std::string, ParamValue>& values() const { return values_; }

 private:
  std::map<std::string, ParamValue> values_;
  std::map<std::string, bool> explicit_;
};

}  // namespace fluxattn
