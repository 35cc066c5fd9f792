#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "command.h"
#include "eval/csv.h"
#include "fluxattn/version.h"

namespace fluxattn::cli {

std::vector<Command>& Commands() {
  static std::vector<Command> commands;
  return commands;
}

void PrintError(const std::string& message) { std::cerr << "fluxattn: error: " << message << "\n"; }

bool WriteOutputFile(const std::string& path, const std::string& contents) {
  absl::Status status = eval::WriteTextFile(path, contents);
  if (!status.ok()) PrintError(std::string(status.message()));
  return status.ok();
}

}  // namespace fluxattn::cli

int main(int argc, char** argv) {
  using namespace fluxattn::cli;
  CLI::App app{"fluxattn: long-context LLM inference with pluggable attention and layer routing"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("fluxattn ") + fluxattn::kCoreVersion);
  std::map<CLI::App*, std::function<int()>> runners;
  for (const Command& command : Commands()) {
    CLI::App* sub = app.add_subcommand(command.name);
    runners[sub] = command.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (CLI::App* sub : app.get_subcommands()) {
    auto it = runners.find(sub);
    if (it != runners.end()) return it->second();
  }
  return kExitUsage;
}
