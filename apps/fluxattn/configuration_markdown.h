// docs/configuration.md, generated from the core's config keys and the ParamSpecs of the
// plugins found (`fluxattn plugins --markdown`), so the reference cannot drift from the code.
#pragma once

#include <string>
#include <vector>

#include "fluxattn/plugin_registry.h"

namespace fluxattn::cli {

// The whole document for `plugins` (ordered by kind, then name). Contains no file paths, so it
// is the same on every machine.
std::string ConfigurationMarkdown(const std::vector<PluginInfo>& plugins);

}  // namespace fluxattn::cli
