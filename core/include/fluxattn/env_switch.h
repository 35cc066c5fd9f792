// On/off switches read from the environment (A/B knobs of benchmarks): unset gives the default,
// "0" and "1" give false and true, anything else is an error naming the variable.
#pragma once

#include "absl/status/statusor.h"

namespace fluxattn {

absl::StatusOr<bool> EnvSwitch(const char* name, bool default_value);

}  // namespace fluxattn
