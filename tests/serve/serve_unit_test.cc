// Unit tests of the server's text stream (stop strings across token boundaries) and request
// parsing, on the demo model's tokenizer with random token sequences.
#include <random>
#include <string>
#include <vector>

#include "fluxattn/models/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "serve/protocol.h"
#include "serve/text_stream.h"

namespace fluxattn::serve {
namespace {

using nlohmann::json;

const models::Tokenizer& DemoTokenizer() {
  static auto* tokenizer = [] {
    auto t = models::Tokenizer::FromModelDir(FLUXATTN_SOURCE_DIR "/models/demo/flux-tiny");
    EXPECT_TRUE(t.ok()) << t.status();
    return t->release();
  }();
  return *tokenizer;
}

// What the client must get: the decoded text (special tokens skipped) cut before the stop
// string that is complete in the shortest prefix of the text (found by trying every prefix).
std::string Expected(const std::string& text, const std::vector<std::string>& stop, bool* cut) {
  for (size_t end = 1; end <= text.size(); ++end) {
    const std::string prefix = text.substr(0, end);
    size_t at = std::string::npos;
    for (const std::string& s : stop) at = std::min(at, prefix.find(s));
    if (at != std::string::npos) {
      *cut = true;
      return text.substr(0, at);
    }
  }
  *cut = false;
  return text;
}

TEST(TextStreamTest, StopStringsAcrossTokenBoundariesMatchFindOnTheWholeText) {
  const models::Tokenizer& tok = DemoTokenizer();
  std::mt19937_64 rng(12345);
  int cut_count = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 40);
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % tok.vocab_size());
    auto whole = tok.Decode(ids, /*skip_special_tokens=*/true);
    ASSERT_TRUE(whole.ok());
    // Stop strings: pieces of the text of 1 to 6 bytes, whole UTF-8 characters as a JSON
    // string holds them, and one that never occurs.
    auto boundary = [&](size_t i) {
      return i >= whole->size() || (static_cast<unsigned char>((*whole)[i]) & 0xC0) != 0x80;
    };
    std::vector<std::string> stop;
    const int k = static_cast<int>(rng() % 3);
    for (int i = 0; i < k && !whole->empty(); ++i) {
      size_t at = rng() % whole->size();
      size_t end = std::min(whole->size(), at + 1 + rng() % 6);
      while (!boundary(at)) --at;
      while (!boundary(end)) ++end;
      stop.push_back(whole->substr(at, end - at));
    }
    stop.push_back("\x01\x02\x03");
    bool cut = false;
    const std::string expected = Expected(*whole, stop, &cut);
    TextStream stream(tok, stop);
    std::string got;
    for (int32_t id : ids) {
      got += stream.Push(id);
      // Nothing sent may ever be taken back: what is out is a prefix of the answer.
      ASSERT_EQ(expected.compare(0, got.size(), got), 0) << "trial " << trial;
      if (stream.stopped()) break;
    }
    got += stream.Finish();
    EXPECT_EQ(got, expected) << "trial " << trial;
    EXPECT_EQ(stream.stopped(), cut) << "trial " << trial;
    EXPECT_EQ(stream.text(), got);
    cut_count += cut;
  }
  EXPECT_GT(cut_count, 100);
}

TEST(TextStreamTest, HoldsBackOnlyWhatCouldStartAStopString) {
  const models::Tokenizer& tok = DemoTokenizer();
  auto ids = tok.Encode("hello world", false);
  ASSERT_TRUE(ids.ok());
  TextStream stream(tok, {"world peace"});
  std::string got;
  for (int32_t id : *ids) got += stream.Push(id);
  // "world" may be the start of "world peace": held back until the end.
  EXPECT_EQ(got.find("world"), std::string::npos);
  got += stream.Finish();
  EXPECT_EQ(got, "hello world");
  EXPECT_FALSE(stream.stopped());
}

TEST(ProtocolTest, ParsesTheFieldsAndNamesTheBadOne) {
  CompletionRequest r;
  json ok = {{"model", "m"},    {"prompt", {{1, 2, 3}}},
             {"max_tokens", 5}, {"temperature", 0},
             {"top_p", 0.5},    {"top_k", -1},
             {"seed", -7},      {"stop", "x"},
             {"stream", true},  {"stream_options", {{"include_usage", true}}},
             {"routing", "r"},  {"unknown_field", {1, 2}}};
  ASSERT_FALSE(ParseCompletionRequest(ok, Endpoint::kCompletions, r).has_value());
  EXPECT_EQ(*r.prompt_ids, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(*r.max_tokens, 5);
  EXPECT_EQ(r.top_k, 0);
  EXPECT_EQ(*r.seed, -7);
  EXPECT_EQ(r.stop, std::vector<std::string>{"x"});
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(r.routing, "r");
  const std::vector<std::pair<json, std::string>> bad = {{{{"max_tokens", -1}}, "max_tokens"},
                                                         {{{"max_tokens", 1.5}}, "max_tokens"},
                                                         {{{"temperature", "0"}}, "temperature"},
                                                         {{{"top_p", 0}}, "top_p"},
                                                         {{{"seed", 0.5}}, "seed"},
                                                         {{{"stop", {"a", 1}}}, "stop"},
                                                         {{{"n", 3}}, "n"},
                                                         {{{"routing", false}}, "routing"},
                                                         {{{"prompt", nullptr}}, "prompt"},
                                                         {{{"model", 1}}, "model"}};
  for (const auto& [patch, param] : bad) {
    json body = ok;
    body.merge_patch(patch);
    auto e = ParseCompletionRequest(body, Endpoint::kCompletions, r);
    ASSERT_TRUE(e.has_value()) << patch.dump();
    EXPECT_EQ(e->status, 400);
    EXPECT_EQ(e->param, param) << e->message;
    EXPECT_NE(e->message.find(param), std::string::npos) << e->message;
  }
  json chat = {{"model", "m"},
               {"messages",
                {{{"role", "developer"}, {"content", "a"}},
                 {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "b"}}}}}}}};
  ASSERT_FALSE(ParseCompletionRequest(chat, Endpoint::kChat, r).has_value());
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "b");
}

TEST(ProtocolTest, ChatTemplateFields) {
  CompletionRequest r;
  json chat = {{"model", "m"},
               {"messages",
                {{{"role", "user"}, {"content", "q"}},
                 {{"role", "assistant"}, {"content", nullptr}, {"reasoning_content", "r1"}},
                 {{"role", "assistant"}, {"content", "a"}, {"reasoning", "r2"}}}},
               {"chat_template_kwargs", {{"enable_thinking", false}}}};
  ASSERT_FALSE(ParseCompletionRequest(chat, Endpoint::kChat, r).has_value());
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_TRUE(r.messages[0].has_content);
  EXPECT_FALSE(r.messages[0].reasoning_content.has_value());
  EXPECT_FALSE(r.messages[1].has_content);
  EXPECT_EQ(r.messages[1].reasoning_content, "r1");
  EXPECT_EQ(r.messages[2].reasoning_content, "r2");
  EXPECT_EQ(r.chat_template_kwargs, json({{"enable_thinking", false}}));
  const std::vector<std::pair<json, std::string>> bad = {
      {{{"chat_template_kwargs", "x"}}, "chat_template_kwargs"},
      {{{"chat_template_kwargs", {{"add_generation_prompt", false}}}},
       "chat_template_kwargs.add_generation_prompt"},
      {{{"messages", {{{"role", "user"}, {"content", "q"}, {"reasoning_content", "r"}}}}},
       "messages[0].reasoning_content"}};
  for (const auto& [patch, param] : bad) {
    json body = chat;
    body.merge_patch(patch);
    auto e = ParseCompletionRequest(body, Endpoint::kChat, r);
    ASSERT_TRUE(e.has_value()) << patch.dump();
    EXPECT_EQ(e->param, param) << e->message;
  }
}

TEST(ProtocolTest, DumpReplacesInvalidUtf8) {
  EXPECT_EQ(Dump(json{{"t", std::string("a\xff")}}), "{\"t\":\"a\xEF\xBF\xBD\"}");
}

}  // namespace
}  // namespace fluxattn::serve
