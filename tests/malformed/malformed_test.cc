// Every input under tests/malformed/ goes through the reader that production uses and must be
// refused with one error line that names the file (or the text) and the offending key, tensor
// or byte, never a crash or a huge allocation (the sanitizer build runs this test too, where an
// allocation of gigabytes aborts). The command line gives the same line on stderr and a
// non-zero exit. make_inputs.py writes the inputs; each is broken in exactly one way.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/config.h"
#include "fluxattn/models/decoder_model.h"
#include "fluxattn/models/model_config.h"
#include "fluxattn/models/safetensors.h"
#include "fluxattn/models/tokenizer.h"
#include "fluxattn/plugin_registry.h"
#include "gtest/gtest.h"

namespace fluxattn {
namespace {

namespace fs = std::filesystem;

enum class Reader { kEngineConfig, kTokenizerJson, kPrompt, kSafetensors, kModelConfig, kPlugin };

struct MalformedCase {
  const char* file;  // under tests/malformed/, or a fixture plugin name for kPlugin
  Reader reader;
  // Besides the file name, the message must contain each of these.
  std::vector<std::string> must_contain;
};

std::string MalformedPath(const std::string& file) {
  return std::string(FLUXATTN_MALFORMED_DIR) + "/" + file;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

const models::Tokenizer& FixtureTokenizer() {
  static const models::Tokenizer* tokenizer = [] {
    auto loaded =
        models::Tokenizer::FromModelDir(std::string(FLUXATTN_TOKENIZER_FIXTURES) + "/qwen2");
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? loaded->release() : nullptr;
  }();
  return *tokenizer;
}

// Runs the reader; returns the error (OK when the input was wrongly accepted) and what the
// message must name as the source.
absl::Status Read(const MalformedCase& c, std::string* source) {
  switch (c.reader) {
    case Reader::kEngineConfig:
      *source = MalformedPath(c.file);
      return LoadEngineConfig(*source).status();
    case Reader::kTokenizerJson:
      *source = MalformedPath(c.file);
      return models::Tokenizer::FromFile(*source).status();
    case Reader::kPrompt:
      *source = "text to encode";
      return FixtureTokenizer().Encode(ReadBytes(MalformedPath(c.file)), true).status();
    case Reader::kSafetensors:
      *source = MalformedPath(c.file);
      return models::SafetensorsFile::Open(*source).status();
    case Reader::kModelConfig:
      *source = MalformedPath(c.file);
      return models::ParseModelConfig(ReadBytes(*source), *source).status();
    case Reader::kPlugin: {
      *source = std::string(c.file).find('/') != std::string::npos
                    ? MalformedPath(c.file)
                    : absl::StrCat(FLUXATTN_FIXTURE_PLUGIN_DIR, "/libfluxattn_", c.file, ".so");
      PluginRegistry registry;
      return registry.LoadFile(*source).status();
    }
  }
  return absl::InternalError("unknown reader");
}

class MalformedInputTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedInputTest, GivesOneClearErrorLine) {
  const MalformedCase& c = GetParam();
  std::string source;
  const absl::Status status = Read(c, &source);
  ASSERT_FALSE(status.ok()) << c.file << " was accepted";
  const std::string message(status.message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find(source), std::string::npos)
      << "does not name " << source << ": " << message;
  EXPECT_NE(message.find("expected"), std::string::npos) << message;
  for (const std::string& fragment : c.must_contain) {
    EXPECT_NE(message.find(fragment), std::string::npos)
        << "does not mention '" << fragment << "': " << message;
  }
}

const MalformedCase kCases[] = {
    // Engine configs.
    {"toml/deep_arrays.toml", Reader::kEngineConfig, {"syntax error", "nest"}},
    {"toml/deep_inline_tables.toml", Reader::kEngineConfig, {"syntax error", "nest"}},
    {"toml/deep_dotted_keys.toml", Reader::kEngineConfig, {"key '"}},
    {"toml/non_utf8.toml", Reader::kEngineConfig, {":2:", "syntax error"}},
    {"toml/wrong_type.toml", Reader::kEngineConfig, {"model.threads", "\"four\""}},
    {"toml/negative_threads.toml", Reader::kEngineConfig, {"model.threads", "-3"}},
    {"toml/unknown_section.toml", Reader::kEngineConfig, {"modle"}},
    {"toml/truncated.toml", Reader::kEngineConfig, {":2:", "syntax error"}},
    // tokenizer.json.
    {"tokenizer/non_utf8_token.json", Reader::kTokenizerJson, {"JSON"}},
    {"tokenizer/truncated.json", Reader::kTokenizerJson, {"JSON"}},
    {"tokenizer/wrong_id_type.json", Reader::kTokenizerJson, {"model.vocab[\"ab\"]", "\"two\""}},
    {"tokenizer/absurd_id.json", Reader::kTokenizerJson, {"model.vocab[\"ab\"]", "1099511627776"}},
    {"tokenizer/bad_merge.json", Reader::kTokenizerJson, {"model.merges[0]"}},
    {"tokenizer/bad_regex.json", Reader::kTokenizerJson, {"pre_tokenizer.pattern.Regex"}},
    {"tokenizer/deep_nesting.json", Reader::kTokenizerJson, {"(top level)"}},
    // Prompts that are not UTF-8: the message gives the byte offset.
    {"prompts/lone_continuation.txt", Reader::kPrompt, {"valid UTF-8", "6"}},
    {"prompts/overlong_slash.txt", Reader::kPrompt, {"valid UTF-8", "1"}},
    {"prompts/surrogate.txt", Reader::kPrompt, {"valid UTF-8", "1"}},
    {"prompts/truncated_sequence.txt", Reader::kPrompt, {"valid UTF-8", "3"}},
    {"prompts/above_unicode.txt", Reader::kPrompt, {"valid UTF-8", "0"}},
    // safetensors.
    {"safetensors/too_short.safetensors", Reader::kSafetensors, {"at least 8 bytes", "3 bytes"}},
    {"safetensors/truncated_header.safetensors", Reader::kSafetensors, {"truncated"}},
    {"safetensors/huge_header_size.safetensors",
     Reader::kSafetensors,
     {"4611686018427387904 bytes"}},
    {"safetensors/header_not_json.safetensors", Reader::kSafetensors, {"header", "valid JSON"}},
    {"safetensors/offsets_past_end.safetensors",
     Reader::kSafetensors,
     {"tensor 'w'", "data_offsets", "[0,1600]"}},
    {"safetensors/overlapping.safetensors", Reader::kSafetensors, {"'a'", "'b'", "overlapping"}},
    {"safetensors/size_mismatch.safetensors",
     Reader::kSafetensors,
     {"tensor 'w'", "[2, 3] F32 = 24 bytes", "16 bytes"}},
    {"safetensors/shape_overflow.safetensors",
     Reader::kSafetensors,
     {"tensor 'w'", "dimensions", "1099511627776"}},
    {"safetensors/negative_dim.safetensors", Reader::kSafetensors, {"tensor 'w'", "[-4]"}},
    {"safetensors/unknown_dtype.safetensors", Reader::kSafetensors, {"tensor 'w'", "Q4"}},
    {"safetensors/reversed_offsets.safetensors",
     Reader::kSafetensors,
     {"tensor 'w'", "begin <= end"}},
    {"safetensors/non_utf8_name.safetensors", Reader::kSafetensors, {"header", "valid JSON"}},
    // config.json.
    {"model_config/hidden_size_string.json", Reader::kModelConfig, {"hidden_size", "\"64\""}},
    {"model_config/hidden_size_negative.json", Reader::kModelConfig, {"hidden_size", "-64"}},
    {"model_config/hidden_size_absurd.json",
     Reader::kModelConfig,
     {"hidden_size", "1099511627776"}},
    {"model_config/layers_absurd.json", Reader::kModelConfig, {"num_hidden_layers", "2147483648"}},
    {"model_config/vocab_size_absurd.json", Reader::kModelConfig, {"vocab_size", "1099511627776"}},
    {"model_config/heads_zero.json", Reader::kModelConfig, {"num_attention_heads", "0"}},
    {"model_config/heads_not_dividing.json", Reader::kModelConfig, {"num_key_value_heads"}},
    {"model_config/kv_heads_not_dividing.json", Reader::kModelConfig, {"num_key_value_heads", "3"}},
    {"model_config/eps_float_string.json", Reader::kModelConfig, {"rms_norm_eps", "tiny"}},
    {"model_config/non_utf8.json", Reader::kModelConfig, {"valid JSON"}},
    {"model_config/truncated.json", Reader::kModelConfig, {"valid JSON"}},
    // Plugins exporting the wrong symbols or descriptors (tests/fixture_plugins).
    {"fixture_no_descriptor", Reader::kPlugin, {"fluxattn_plugin_descriptor"}},
    {"fixture_abi99", Reader::kPlugin, {"ABI"}},
    {"fixture_bad_kind", Reader::kPlugin, {"kind"}},
    {"fixture_bad_build", Reader::kPlugin, {"build id"}},
    {"fixture_short_descriptor", Reader::kPlugin, {"descriptor of at least"}},
    {"plugins/libfluxattn_not_elf.so", Reader::kPlugin, {"shared library"}},
};

std::string CaseName(const ::testing::TestParamInfo<MalformedCase>& info) {
  std::string name = fs::path(info.param.file).replace_extension().string();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Inputs, MalformedInputTest, ::testing::ValuesIn(kCases), CaseName);

// Every file in tests/malformed/ is listed above (so a new input cannot be forgotten).
TEST(MalformedCorpus, EveryInputHasACase) {
  std::vector<std::string> listed;
  for (const MalformedCase& c : kCases) listed.push_back(c.file);
  for (const auto& entry : fs::recursive_directory_iterator(FLUXATTN_MALFORMED_DIR)) {
    if (!entry.is_regular_file()) continue;
    const std::string rel = fs::relative(entry.path(), FLUXATTN_MALFORMED_DIR).string();
    if (rel.find('/') == std::string::npos) continue;  // the generator, this test, CMakeLists
    EXPECT_NE(std::find(listed.begin(), listed.end(), rel), listed.end())
        << rel << " has no case in malformed_test.cc";
  }
}

// NaN and infinite weights: the safetensors reader returns what is stored; loading a model
// refuses any non-finite value in a tensor it uses, naming the tensor and the element.
TEST(MalformedWeights, NonFiniteWeightIsRefusedAtLoad) {
  const fs::path fixture = fs::path(FLUXATTN_MODEL_FIXTURES) / "qwen2_f32";
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat("malformed_nan_", getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& entry : fs::directory_iterator(fixture)) {
      fs::copy_file(entry.path(), dir / entry.path().filename());
    }
    const std::string weights = (dir / "model.safetensors").string();
    const std::string tensor = "model.layers.1.mlp.up_proj.weight";
    {
      auto file = models::SafetensorsFile::Open(weights);
      ASSERT_TRUE(file.ok()) << file.status();
      const models::SafetensorsTensorInfo* info = (*file)->Find(tensor);
      ASSERT_NE(info, nullptr);
      ASSERT_EQ(info->dtype, "F32");
      std::fstream patch(weights, std::ios::in | std::ios::out | std::ios::binary);
      patch.seekp(static_cast<std::streamoff>(info->begin + 5 * sizeof(float)));
      patch.write(reinterpret_cast<const char*>(&bad), sizeof(bad));
    }
    auto model = models::LoadLanguageModel(dir.string(), {.threads = 1});
    ASSERT_FALSE(model.ok());
    const std::string message(model.status().message());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_NE(message.find(dir.string()), std::string::npos) << message;
    EXPECT_NE(message.find("tensor '" + tensor + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("expected finite weights"), std::string::npos) << message;
    EXPECT_NE(message.find("at element 5"), std::string::npos) << message;
    fs::remove_all(dir);
  }
}

// The command line: exit status and stderr of `fluxattn ARGS...`.
struct CliResult {
  int exit_code = -1;
  std::string stderr_text;
};

CliResult RunCli(const std::vector<std::string>& args) {
  const fs::path err = fs::path(::testing::TempDir()) / absl::StrCat("malformed_cli_", getpid());
  std::string command = absl::StrCat("'", FLUXATTN_CLI_PATH, "'");
  for (const std::string& arg : args) absl::StrAppend(&command, " '", arg, "'");
  absl::StrAppend(&command, " >/dev/null 2>'", err.string(), "'");
  CliResult result;
  const int status = std::system(command.c_str());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.stderr_text = ReadBytes(err.string());
  fs::remove(err);
  return result;
}

void ExpectOneErrorLine(const CliResult& result, const std::vector<std::string>& must_contain) {
  EXPECT_NE(result.exit_code, 0);
  ASSERT_FALSE(result.stderr_text.empty());
  EXPECT_EQ(result.stderr_text.find('\n'), result.stderr_text.size() - 1) << result.stderr_text;
  for (const std::string& fragment : must_contain) {
    EXPECT_NE(result.stderr_text.find(fragment), std::string::npos)
        << "stderr does not mention '" << fragment << "': " << result.stderr_text;
  }
}

TEST(MalformedCli, TokenizerJsonNamesFileAndKey) {
  const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat("malformed_tok_", getpid());
  fs::create_directories(dir);
  fs::copy_file(MalformedPath("tokenizer/wrong_id_type.json"), dir / "tokenizer.json",
                fs::copy_options::overwrite_existing);
  ExpectOneErrorLine(RunCli({"tokenize", "--model", dir.string(), "--text", "hi"}),
                     {(dir / "tokenizer.json").string(), "model.vocab[\"ab\"]"});
  fs::remove_all(dir);
}

TEST(MalformedCli, NonUtf8PromptNamesTheByte) {
  const std::string prompt = ReadBytes(MalformedPath("prompts/lone_continuation.txt"));
  ExpectOneErrorLine(
      RunCli({"tokenize", "--model", std::string(FLUXATTN_TOKENIZER_FIXTURES) + "/qwen2", "--text",
              prompt}),
      {"valid UTF-8"});
}

}  // namespace
}  // namespace fluxattn
