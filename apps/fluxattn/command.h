// Subcommands of the `fluxattn` command line register themselves here.
// Exit codes: 0 ok, 1 runtime failure, 2 usage error.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace fluxattn::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

struct Command {
  std::string name;
  // Adds the subcommand and its options to `app`; returns the function that runs it once the
  // command line has been parsed (returning the exit code).
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<Command>& Commands();

struct CommandRegistration {
  explicit CommandRegistration(Command command) { Commands().push_back(std::move(command)); }
};

// Prints "fluxattn: error: <message>" to stderr (one line).
void PrintError(const std::string& message);

// Writes `contents` to `path`; on failure prints the error and returns false.
bool WriteOutputFile(const std::string& path, const std::string& contents);

}  // namespace fluxattn::cli

#define FLUXATTN_REGISTER_COMMAND(name, setup_fn) \
  static ::fluxattn::cli::CommandRegistration fluxattn_command_##name({#name, setup_fn})
