// `fluxattn tokenize`: text to ids (and tokens) with a checkpoint's tokenizer.json, or ids back
// to text with --decode.
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "command.h"
#include "fluxattn/models/tokenizer.h"
#include "nlohmann/json.hpp"

namespace fluxattn::cli {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  std::string text;
  std::string decode;
  bool json = false;
  bool no_special_tokens = false;
  bool skip_special_tokens = false;
};

// Parses "1,2,3" (spaces allowed); on failure names the offending entry.
bool ParseIds(const std::string& list, std::vector<int32_t>* ids, std::string* bad) {
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      *bad = std::string(part);
      return false;
    }
    ids->push_back(id);
  }
  return true;
}

// Byte tokens may hold part of a UTF-8 character; such bytes are printed as U+FFFD.
std::string Dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int RunTokenize(const TokenizeOptions& options, const CLI::App& app) {
  bool has_text = app.count("--text") > 0;
  bool has_decode = app.count("--decode") > 0;
  if (has_text == has_decode) {
    PrintError("tokenize: give exactly one of --text or --decode");
    return kExitUsage;
  }
  std::vector<int32_t> decode_ids;
  if (has_decode) {
    std::string bad;
    if (!ParseIds(options.decode, &decode_ids, &bad)) {
      PrintError("--decode: expected comma-separated integer token ids, found \"" + bad + "\"");
      return kExitUsage;
    }
  }
  auto tokenizer = models::Tokenizer::FromModelDir(options.model_dir);
  if (!tokenizer.ok()) {
    PrintError(std::string(tokenizer.status().message()));
    return kExitFailure;
  }
  const models::Tokenizer& tok = **tokenizer;

  if (has_decode) {
    auto text = tok.Decode(decode_ids, options.skip_special_tokens);
    if (!text.ok()) {
      PrintError(std::string(text.status().message()));
      return kExitFailure;
    }
    if (options.json) {
      std::cout << Dump({{"ids", decode_ids}, {"text", *text}}) << "\n";
    } else {
      std::cout << *text << "\n";
    }
    return kExitOk;
  }

  auto ids = tok.Encode(options.text, !options.no_special_tokens);
  if (!ids.ok()) {
    PrintError(std::string(ids.status().message()));
    return kExitFailure;
  }
  nlohmann::json tokens = nlohmann::json::array();
  for (int32_t id : *ids) tokens.push_back(*tok.IdToToken(id));
  if (options.json) {
    std::cout << Dump({{"ids", *ids}, {"tokens", tokens}}) << "\n";
  } else {
    std::cout << "ids: " << Dump(*ids) << "\n";
    std::cout << "tokens: " << Dump(tokens) << "\n";
  }
  return kExitOk;
}

std::function<int()> SetupTokenize(CLI::App& app) {
  auto options = std::make_shared<TokenizeOptions>();
  app.description("Encode text to token ids, or decode ids to text, with a model's tokenizer");
  app.add_option("--model", options->model_dir,
                 "Checkpoint folder with tokenizer.json (and tokenizer_config.json)")
      ->required();
  app.add_option("--text", options->text, "Text to encode");
  app.add_option("--decode", options->decode, "Comma-separated token ids to decode, e.g. 1,2,3");
  app.add_flag("--json", options->json, "Print JSON: {\"ids\": [...], \"tokens\": [...]}");
  app.add_flag("--no-special-tokens", options->no_special_tokens,
               "Do not add the post-processor's special tokens (e.g. Llama 3's BOS)");
  app.add_flag("--skip-special-tokens", options->skip_special_tokens,
               "Leave special tokens out of decoded text");
  return [options, &app] { return RunTokenize(*options, app); };
}

}  // namespace
}  // namespace fluxattn::cli

FLUXATTN_REGISTER_COMMAND(tokenize, fluxattn::cli::SetupTokenize);
