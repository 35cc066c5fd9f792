#include "fluxattn/env_switch.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "fluxattn/status.h"

namespace fluxattn {

absl::StatusOr<bool> EnvSwitch(const char* name, bool default_value) {
  const char* env = std::getenv(name);
  if (env == nullptr) return default_value;
  const std::string v(env);
  if (v == "0") return false;
  if (v == "1") return true;
  return InvalidInput(absl::StrCat("environment variable ", name), "0 or 1",
                      absl::StrCat("\"", v, "\""));
}

}  // namespace fluxattn
