// Fuzz target: TOML engine configs through ParseEngineConfig. Any input must give either a config
// or one error line that starts with the source name; never a crash, a hang or a leak.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fluxattn/config.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string source = "fuzz/engine.toml";
  absl::StatusOr<fluxattn::EngineConfig> config = fluxattn::ParseEngineConfig(text, source);
  if (!config.ok()) {
    fluxattn::fuzz::CheckUserError(config.status(), source);
    return 0;
  }
  // Every key the parser remembers a place for points into this source.
  for (const auto& [key, where] : config->locations) {
    if (where.file != source || where.line < 1 || where.column < 1) {
      fluxattn::fuzz::Fail("locations point into the source", key + " at " + where.ToString());
    }
  }
  return 0;
}
