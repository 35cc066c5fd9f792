#include "fluxattn/model_info.h"

namespace fluxattn {

std::optional<double> ModelInfo::ConfigNumber(const std::string& key) const {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (const int64_t* i = std::get_if<int64_t>(&it->second)) return static_cast<double>(*i);
  if (const double* d = std::get_if<double>(&it->second)) return *d;
  return std::nullopt;
}

std::optional<std::string> ModelInfo::ConfigString(const std::string& key) const {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (const std::string* s = std::get_if<std::string>(&it->second)) return *s;
  return std::nullopt;
}

std::optional<bool> ModelInfo::ConfigBool(const std::string& key) const {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (const bool* b = std::get_if<bool>(&it->second)) return *b;
  return std::nullopt;
}

}  // namespace fluxattn
