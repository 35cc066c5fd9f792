// The published chat templates of Qwen3, Qwen2.5-Instruct and Llama 3.1/3.2-Instruct rendered by
// serve's ChatFormat against what transformers' apply_chat_template renders
// (tests/fixtures/chat_templates/cases.json, made by tools/make_chat_template_fixtures.py), and
// how ChatFormat finds a checkpoint's template.
#include "serve/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace fluxattn::serve {
namespace {

namespace fs = std::filesystem;
using jinja::Json;

const fs::path kFixtures = fs::path(FLUXATTN_SOURCE_DIR) / "tests/fixtures/chat_templates";

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const Json& Cases() {
  static const Json cases = Json::parse(ReadFile(kFixtures / "cases.json"))["cases"];
  return cases;
}

// The fixture's time "2026-03-05T14:30:00" as a broken-down local time.
std::tm ParseNow(const std::string& iso) {
  std::tm tm{};
  std::istringstream in(iso);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  EXPECT_FALSE(in.fail()) << iso;
  std::tm copy = tm;
  copy.tm_isdst = -1;
  std::mktime(&copy);  // fills tm_wday and tm_yday
  return copy;
}

class FixtureTest : public testing::TestWithParam<size_t> {};

TEST_P(FixtureTest, RendersWhatTransformersRenders) {
  const Json& c = Cases()[GetParam()];
  const std::string file = c["template"].get<std::string>();
  Json special = Json::object();
  for (const char* key : {"bos_token", "eos_token"}) {
    if (c[key].is_string()) special[key] = c[key];
  }
  auto format = ChatFormat::FromTemplate(ReadFile(kFixtures / file), file, special);
  ASSERT_TRUE(format.ok()) << format.status();
  format->set_render_options({.now = ParseNow(c["now"].get<std::string>())});
  auto out = format->RenderJson(c["messages"], c.value("tools", Json()),
                                c["add_generation_prompt"].get<bool>(), c["kwargs"]);
  if (c.contains("error")) {
    ASSERT_FALSE(out.ok()) << "rendered instead of failing:\n" << *out;
    const std::string message(out.status().message());
    EXPECT_EQ(message.rfind(file + ":", 0), 0u) << message;
    if (message.find("the template raised an error: ") != std::string::npos) {
      EXPECT_NE(message.find(c["error"].get<std::string>()), std::string::npos) << message;
    }
    return;
  }
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, c["expected"].get<std::string>());
}

std::string CaseName(const testing::TestParamInfo<size_t>& info) {
  const Json& c = Cases()[info.param];
  std::string name = c["template"].get<std::string>() + "_" + c["name"].get<std::string>();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Transformers, FixtureTest, testing::Range<size_t>(0, Cases().size()),
                         CaseName);

TEST(FixtureCoverage, EveryTemplateHasRenderedAndFailingCases) {
  std::map<std::string, int> rendered, failing;
  for (const Json& c : Cases()) (c.contains("error") ? failing : rendered)[c["template"]]++;
  EXPECT_EQ(rendered.size(), 4u);
  for (const auto& [file, n] : rendered) EXPECT_GE(n, 12) << file;
  EXPECT_GE(failing["llama-3.1-instruct.jinja"], 2);
}

TEST(EndOfTurn, TheTemplatesTurnEndsAndEos) {
  auto qwen = ChatFormat::FromTemplate(ReadFile(kFixtures / "qwen3.jinja"), "qwen3.jinja",
                                       {{"eos_token", "<|im_end|>"}});
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->end_of_turn(), std::vector<std::string>{"<|im_end|>"});
  auto llama = ChatFormat::FromTemplate(
      ReadFile(kFixtures / "llama-3.1-instruct.jinja"), "l.jinja",
      {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}});
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->end_of_turn(),
            (std::vector<std::string>{"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"}));
}

class ModelDirTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() / ("fluxattn_chat_template_" + std::to_string(::getpid()) + "_" +
                                     testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  fs::path dir_;
};

std::vector<ChatMessage> Conversation() { return {{"system", "Be brief."}, {"user", "Hi"}}; }

TEST_F(ModelDirTest, NoTemplateIsChatMl) {
  Write("tokenizer_config.json", R"({"eos_token": "<|endoftext|>"})");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->name(), "chatml");
  EXPECT_EQ(*f->Render(Conversation()),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(f->end_of_turn(), std::vector<std::string>{"<|im_end|>"});
}

TEST_F(ModelDirTest, TokenizerConfigTemplateGetsTheSpecialTokens) {
  Write("tokenizer_config.json",
        R"({"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
            "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}{{ flag | default('-') }}"})");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->name(), "jinja");
  EXPECT_EQ(*f->Render(Conversation()), "<s>[system] Be brief.</s>[user] Hi</s>[assistant]-");
  EXPECT_EQ(*f->Render(Conversation(), {{"flag", true}}),
            "<s>[system] Be brief.</s>[user] Hi</s>[assistant]True");
  EXPECT_EQ(f->end_of_turn(), std::vector<std::string>{"</s>"});
}

TEST_F(ModelDirTest, NamedTemplatesUseDefault) {
  Write("tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "T"},
                              {"name": "default", "template": "D{{ messages|length }}"}]})");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f->Render(Conversation()), "D2");
}

TEST_F(ModelDirTest, NamedTemplatesWithoutDefaultAreAnError) {
  Write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"}]})");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("tokenizer_config.json: chat_template: expected a template "
                                      "named 'default', found 'tool_use'"),
            std::string::npos)
      << f.status();
}

TEST_F(ModelDirTest, JinjaFileWinsAndParseErrorsNameIt) {
  Write("tokenizer_config.json", R"({"chat_template": "config"})");
  Write("chat_template.jinja", "line one\n{% if x %}\n{{ 1 + }}\n{% endif %}\n");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_FALSE(f.ok());
  EXPECT_NE(
      f.status().message().find("chat_template.jinja:3:8: expected an expression, found '}}'"),
      std::string::npos)
      << f.status();
}

TEST_F(ModelDirTest, ReasoningAndNullContentReachTheTemplate) {
  Write("chat_template.jinja",
        "{% for m in messages %}{{ m.role }}:{{ m.content is defined }}:"
        "{{ m.reasoning_content | default('none') }}:{{ m.thinking | default('none') }};"
        "{% endfor %}");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_TRUE(f.ok()) << f.status();
  ChatMessage a{"assistant", "", false, "why"};
  EXPECT_EQ(*f->Render({{"user", "q"}, a}), "user:True:none:none;assistant:False:why:why;");
}

TEST_F(ModelDirTest, TemplateErrorsAtRenderNameTheLine) {
  Write("chat_template.jinja",
        "{% for m in messages %}\n{% if m.role == 'system' %}\n"
        "{{ raise_exception('System role not supported') }}\n{% endif %}\n{% endfor %}");
  auto f = ChatFormat::FromModelDir(dir_.string());
  ASSERT_TRUE(f.ok()) << f.status();
  auto out = f->Render(Conversation());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(std::string(out.status().message()),
            (dir_ / "chat_template.jinja").string() +
                ":3:4: the template raised an error: System role not supported");
}

}  // namespace
}  // namespace fluxattn::serve
