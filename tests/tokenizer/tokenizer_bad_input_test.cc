// Bad input: malformed tokenizer.json / tokenizer_config.json, unknown ids, invalid UTF-8. Each
// must give one error that names the file and key, what was expected and what was found.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "fluxattn/models/tokenizer.h"
#include "tokenizer_test_util.h"

namespace fluxattn::models {
namespace {

using testing::FixtureDir;
using ::testing::HasSubstr;
using testing::ReadJson;

// The llama3 fixture (no normalizer, so this also runs in builds without Unicode normalization).
nlohmann::json Base() { return ReadJson(FixtureDir("llama3") + "/tokenizer.json"); }

// Applies `edit` to the llama3 fixture and expects loading to fail with all `parts` in the message.
void ExpectLoadError(const std::function<void(nlohmann::json&)>& edit,
                     std::initializer_list<std::string> parts) {
  nlohmann::json data = Base();
  edit(data);
  auto tokenizer = Tokenizer::FromJson(data.dump(), "bad/tokenizer.json");
  ASSERT_FALSE(tokenizer.ok());
  std::string message(tokenizer.status().message());
  EXPECT_THAT(message, HasSubstr("bad/tokenizer.json"));
  for (const std::string& part : parts) EXPECT_THAT(message, HasSubstr(part));
  EXPECT_EQ(message.find('\n'), std::string::npos) << "error must be one line";
}

TEST(TokenizerBadInputTest, MissingOrWrongModel) {
  ExpectLoadError([](auto& d) { d.erase("model"); }, {"model", "expected an object", "missing"});
  ExpectLoadError([](auto& d) { d["model"] = 3; }, {"model", "number 3"});
  ExpectLoadError([](auto& d) { d["model"]["type"] = "WordPiece"; },
                  {"model.type", "BPE", "\"WordPiece\""});
  ExpectLoadError([](auto& d) { d["model"]["vocab"] = nlohmann::json::array(); },
                  {"model.vocab", "an array"});
  ExpectLoadError([](auto& d) { d["model"]["vocab"]["!"] = "one"; },
                  {"model.vocab[\"!\"]", "token id", "string \"one\""});
  ExpectLoadError([](auto& d) { d["model"]["byte_fallback"] = true; }, {"model.byte_fallback"});
  ExpectLoadError([](auto& d) { d["model"]["dropout"] = 0.1; }, {"model.dropout", "0.1"});
}

TEST(TokenizerBadInputTest, BadMerges) {
  ExpectLoadError([](auto& d) { d["model"].erase("merges"); }, {"model.merges", "missing"});
  ExpectLoadError([](auto& d) { d["model"]["merges"][3] = 17; }, {"model.merges[3]", "number 17"});
  ExpectLoadError([](auto& d) { d["model"]["merges"][2] = "a b c"; },
                  {"model.merges[2]", "\"a b c\""});
  ExpectLoadError([](auto& d) { d["model"]["merges"][1] = nlohmann::json::array({"a"}); },
                  {"model.merges[1]"});
  ExpectLoadError(
      [](auto& d) {
        d["model"]["merges"][0] = {"zzzq", "qqqz"};
      },
      {"model.merges[0]", "\"zzzq\""});
}

TEST(TokenizerBadInputTest, BadPipelineParts) {
  ExpectLoadError(
      [](auto& d) {
        d["normalizer"] = {{"type", "Lowercase"}};
      },
      {"normalizer.type", "NFC", "\"Lowercase\""});
  ExpectLoadError(
      [](auto& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; },
      {"pre_tokenizer.pretokenizers[0].pattern.Regex", "regular expression", "(a"});
  ExpectLoadError([](auto& d) { d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
                  {"pre_tokenizer.pretokenizers[0].behavior", "\"Sideways\""});
  ExpectLoadError([](auto& d) { d["pre_tokenizer"]["pretokenizers"][1]["type"] = "Whitespace"; },
                  {"pre_tokenizer.pretokenizers[1].type", "\"Whitespace\""});
  ExpectLoadError([](auto& d) { d["pre_tokenizer"]["pretokenizers"] = "ByteLevel"; },
                  {"pre_tokenizer.pretokenizers", "an array"});
  ExpectLoadError([](auto& d) { d["decoder"] = nullptr; }, {"decoder", "ByteLevel", "null"});
  ExpectLoadError([](auto& d) { d["decoder"]["type"] = "WordPiece"; },
                  {"decoder.type", "\"WordPiece\""});
  ExpectLoadError(
      [](auto& d) {
        d["post_processor"] = {{"type", "BertProcessing"}};
      },
      {"post_processor.type", "\"BertProcessing\""});
  ExpectLoadError([](auto& d) { d["added_tokens"][0]["id"] = -4; },
                  {"added_tokens[0].id", "number -4"});
  ExpectLoadError([](auto& d) { d["added_tokens"][1]["special"] = "yes"; },
                  {"added_tokens[1].special", "a boolean", "string \"yes\""});
  ExpectLoadError([](auto& d) { d = nlohmann::json::array(); }, {"a JSON object", "an array"});
}

TEST(TokenizerBadInputTest, SyntaxErrorAndMissingFiles) {
  auto broken = Tokenizer::FromJson("{\"model\": {", "cut/tokenizer.json");
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(std::string(broken.status().message()),
              HasSubstr("cut/tokenizer.json: expected valid JSON"));
  auto missing = Tokenizer::FromModelDir("/nonexistent/model");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("/nonexistent/model/tokenizer.json"));
}

TEST(TokenizerBadInputTest, ConfigNamingAnUnknownToken) {
  // A private folder: tests of several build trees may run at the same time.
  char pattern[] = "/tmp/fluxattn_tokenizer_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  std::filesystem::path dir(pattern);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(FixtureDir("llama3") + "/tokenizer.json", dir / "tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  {
    FILE* f = std::fopen((dir / "tokenizer_config.json").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"<|no_such_token|>\"}", f);
    std::fclose(f);
  }
  auto tokenizer = Tokenizer::FromModelDir(dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_FALSE(tokenizer.ok());
  std::string message(tokenizer.status().message());
  EXPECT_THAT(message, HasSubstr("tokenizer_config.json: eos_token"));
  EXPECT_THAT(message, HasSubstr("<|no_such_token|>"));
}

TEST(TokenizerBadInputTest, UnknownIdsNameTheIdAndVocabSize) {
  auto tokenizer = Tokenizer::FromModelDir(FixtureDir("llama3"));
  ASSERT_TRUE(tokenizer.ok());
  const Tokenizer& tok = **tokenizer;
  const std::string size = std::to_string(tok.vocab_size());
  for (int32_t id : {tok.vocab_size(), -1, 1 << 30}) {
    auto text = tok.Decode({5, id});
    ASSERT_FALSE(text.ok());
    EXPECT_THAT(std::string(text.status().message()), HasSubstr(std::to_string(id)));
    EXPECT_THAT(std::string(text.status().message()), HasSubstr("vocab_size " + size));
    EXPECT_FALSE(tok.IdToToken(id).ok());
    StreamingDecoder decoder = tok.NewStreamingDecoder();
    EXPECT_FALSE(decoder.Push(id).ok());
  }
}

TEST(TokenizerBadInputTest, InvalidUtf8TextIsRejected) {
  auto tokenizer = Tokenizer::FromModelDir(FixtureDir("llama3"));
  ASSERT_TRUE(tokenizer.ok());
  for (const std::string text : {std::string("ok\xC3"), std::string("a\xED\xA0\x80"),
                                 std::string("\xFF"), std::string("x\xC0\xAFy")}) {
    auto ids = (*tokenizer)->Encode(text, false);
    ASSERT_FALSE(ids.ok());
    EXPECT_THAT(std::string(ids.status().message()), HasSubstr("UTF-8"));
  }
}

}  // namespace
}  // namespace fluxattn::models
