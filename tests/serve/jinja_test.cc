// The Jinja subset of serve/jinja.h: small templates against what the jinja2 environment of
// transformers renders (tests/fixtures/chat_templates/engine_cases.json, made by
// tools/make_chat_template_fixtures.py), and the errors of templates that are malformed or use
// what the subset leaves out.
#include "serve/jinja.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace fluxattn::serve::jinja {
namespace {

namespace fs = std::filesystem;

const Json& Cases() {
  static const Json cases = [] {
    std::ifstream in(fs::path(FLUXATTN_SOURCE_DIR) /
                     "tests/fixtures/chat_templates/engine_cases.json");
    std::stringstream s;
    s << in.rdbuf();
    return Json::parse(s.str())["cases"];
  }();
  return cases;
}

RenderOptions FixedNow() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 2;
  tm.tm_mday = 5;
  tm.tm_hour = 14;
  tm.tm_min = 30;
  tm.tm_isdst = -1;
  std::mktime(&tm);
  return {.now = tm};
}

class Jinja2Test : public testing::TestWithParam<size_t> {};

TEST_P(Jinja2Test, RendersWhatJinja2Renders) {
  const Json& c = Cases()[GetParam()];
  auto t = Template::Parse(c["template"].get<std::string>(), "case.jinja");
  ASSERT_TRUE(t.ok()) << t.status();
  auto out = t->Render(c["variables"], FixedNow());
  if (c.contains("error")) {
    ASSERT_FALSE(out.ok()) << "rendered instead of failing (" << c["error"] << "):\n" << *out;
    EXPECT_EQ(out.status().message().rfind("case.jinja:1:", 0), 0u) << out.status();
    return;
  }
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, c["expected"].get<std::string>()) << c["template"];
}

INSTANTIATE_TEST_SUITE_P(Engine, Jinja2Test, testing::Range<size_t>(0, Cases().size()),
                         [](const testing::TestParamInfo<size_t>& info) {
                           return Cases()[info.param]["name"].get<std::string>();
                         });

std::string ParseError(const std::string& source) {
  auto t = Template::Parse(source, "t.jinja");
  if (t.ok()) return "parsed";
  return std::string(t.status().message());
}

std::string RenderError(const std::string& source, const Json& vars = Json::object()) {
  auto t = Template::Parse(source, "t.jinja");
  if (!t.ok()) return "parse error: " + std::string(t.status().message());
  auto out = t->Render(vars);
  if (out.ok()) return "rendered: " + *out;
  return std::string(out.status().message());
}

TEST(JinjaErrors, SyntaxErrorsNameLineColumnExpectedAndFound) {
  EXPECT_EQ(ParseError("a\n  {{ 1 + }}"), "t.jinja:2:10: expected an expression, found '}}'");
  EXPECT_EQ(ParseError("{% if x %}\nno end"),
            "t.jinja:2:7: expected '{% elif %}' or '{% else %}' or '{% endif %}', found the end of "
            "the template");
  EXPECT_EQ(ParseError("{{ x "),
            "t.jinja:1:1: expected '}}' closing this tag, found the end of the template");
  EXPECT_EQ(ParseError("{# open"),
            "t.jinja:1:1: expected '#}' closing this comment, found the end of the template");
  EXPECT_EQ(ParseError("{{ 'abc }}"),
            "t.jinja:1:4: expected the end of this string, found the end of the template");
  EXPECT_EQ(ParseError("{% for x of y %}{% endfor %}"), "t.jinja:1:10: expected 'in', found 'of'");
  EXPECT_EQ(ParseError("{{ x @ y }}"), "t.jinja:1:6: expected an expression or '}}', found '@'");
  EXPECT_EQ(ParseError("{% endif %}"),
            "t.jinja:1:4: expected a tag (if, for, set, macro, ...), found 'endif'");
  EXPECT_EQ(ParseError("{% break %}"),
            "t.jinja:1:4: expected 'break' inside a for loop, found it outside one");
  EXPECT_EQ(
      ParseError("{{ f(a=1, 2) }}"),
      "t.jinja:1:11: expected a keyword argument (positional ones come first), found a number");
}

TEST(JinjaErrors, UnsupportedFeaturesAreErrorsNotOutput) {
  EXPECT_EQ(ParseError("{% include 'x.jinja' %}"),
            "t.jinja:1:4: expected a supported tag, found '{% include %}' (not supported by this "
            "Jinja subset)");
  EXPECT_EQ(ParseError("line\n{% filter upper %}x{% endfilter %}"),
            "t.jinja:2:4: expected a supported tag, found '{% filter %}' (not supported by this "
            "Jinja subset)");
  EXPECT_EQ(ParseError("{{ x | wordwrap }}"),
            "t.jinja:1:8: expected a supported filter, found 'wordwrap'");
  EXPECT_EQ(ParseError("{{ x is prime }}"),
            "t.jinja:1:9: expected a supported test, found 'prime'");
  EXPECT_EQ(ParseError("{% for x in y recursive %}{% endfor %}"),
            "t.jinja:1:15: expected '%}', found 'recursive' (recursive loops are not supported)");
  EXPECT_EQ(ParseError("{{ f(*args) }}"),
            "t.jinja:1:6: expected an argument, found '*' (argument unpacking is not supported)");
  EXPECT_EQ(RenderError("{{ s.center(9) }}", {{"s", "x"}}),
            "t.jinja:1:5: the string method 'center' is not supported");
  EXPECT_EQ(RenderError("{{ l.append(1) }}", {{"l", Json::array()}}),
            "t.jinja:1:5: the list method 'append' is not supported");
  EXPECT_EQ(RenderError("{{ d.update({}) }}", {{"d", Json::object()}}),
            "t.jinja:1:5: the dict method 'update' is not supported");
  EXPECT_EQ(RenderError("{% for x in [1] %}{{ loop.cycle('a', 'b') }}{% endfor %}"),
            "t.jinja:1:26: loop.cycle is not supported");
  EXPECT_EQ(RenderError("{{ 'ä' | upper }}"),
            "t.jinja:1:10: upper of non-ASCII text is not supported");
  EXPECT_EQ(RenderError("{{ '%s' % 1 }}"),
            "t.jinja:1:9: string formatting with '%' is not supported");
  EXPECT_EQ(RenderError("{{ lipsum() }}"), "t.jinja:1:4: 'lipsum' is undefined");
  EXPECT_EQ(RenderError("{{ [1] | select }}"),
            "t.jinja:1:10: printing a generator object is not supported (apply |list)");
  EXPECT_EQ(RenderError("{{ range(2) }}"),
            "t.jinja:1:4: printing a range object is not supported (apply |list)");
  EXPECT_EQ(RenderError("{% set ns = namespace(a=1) %}{{ ns }}"),
            "t.jinja:1:33: printing a Namespace object is not supported");
}

TEST(JinjaErrors, RuntimeErrorsNameTheirLine) {
  EXPECT_EQ(RenderError("ok\n{{ 'a' + n }}", {{"n", 1}}),
            "t.jinja:2:8: unsupported operand types for +: 'str' and 'int'");
  EXPECT_EQ(RenderError("\n\n  {{ m.content.x }}", {{"m", Json::object()}}),
            "t.jinja:3:15: 'content' is undefined");
  EXPECT_EQ(RenderError("{% set d = {} %}\n{% set d.x = 1 %}"),
            "t.jinja:2:4: expected a namespace() object to set 'd.x', found dict");
  EXPECT_EQ(RenderError("{{ 1 // 0 }}"), "t.jinja:1:6: division by zero");
  EXPECT_EQ(RenderError("{% set a, b = [1] %}"),
            "t.jinja:1:4: expected 2 values to unpack, found 1");
  EXPECT_EQ(RenderError("{{ x | tojson }}", {{"x", Json::object()}}), "rendered: {}");
  EXPECT_EQ(RenderError("{{ y | tojson }}"),
            "t.jinja:1:8: tojson: an object of type Undefined is not JSON serializable");
  EXPECT_EQ(RenderError("{{ raise_exception('no ' ~ 'way') }}"),
            "t.jinja:1:4: the template raised an error: no way");
  EXPECT_EQ(RenderError("{{ 1 < 'a' }}"),
            "t.jinja:1:8: '<' is not supported between 'int' and 'str'");
}

TEST(JinjaRender, VariablesMustBeAnObject) {
  auto t = Template::Parse("x", "t.jinja");
  ASSERT_TRUE(t.ok());
  auto out = t->Render(Json::array());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(),
            "t.jinja: expected the template variables as a JSON object, found array");
}

TEST(JinjaErrors, NestingIsBounded) {
  std::string deep = "{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}";
  EXPECT_NE(ParseError(deep).find("nested at most 200 deep"), std::string::npos)
      << ParseError(deep);
  std::string ifs;
  for (int i = 0; i < 300; ++i) ifs += "{% if true %}";
  EXPECT_NE(ParseError(ifs).find("nested at most 200 deep"), std::string::npos);
  EXPECT_EQ(RenderError("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            "t.jinja:1:20: expected macro calls nested at most 100 deep");
  Json v = 1;
  for (int i = 0; i < 200; ++i) v = Json::array({v});
  EXPECT_EQ(RenderError("{{ v }}", {{"v", v}}),
            "t.jinja: expected template variables nested at most 128 deep");
  EXPECT_EQ(ParseError("{% if a if b else c %}{% endif %}"),
            "t.jinja:1:9: expected '%}' ending the 'if' tag, found 'if'");
}

TEST(JinjaErrors, RenderingIsBounded) {
  EXPECT_EQ(RenderError("{{ 9223372036854775807 + 1 }}"),
            "t.jinja:1:24: integer overflow in 9223372036854775807 + 1 (Python's big integers are "
            "not supported)");
  EXPECT_EQ(RenderError("{{ 3 ** 40 }}"),
            "t.jinja:1:6: integer overflow in 3 ** 40 (Python's big integers are not supported)");
  EXPECT_EQ(RenderError("{{ 2 ** 62 }} {{ (-1) ** 1000000000000 }} {{ -2 ** 3 }}"),
            "rendered: 4611686018427387904 1 -8");
  EXPECT_EQ(RenderError("{{ 'ab' * 100000000 }}"),
            "t.jinja:1:9: expected a repetition of at most 67108864 items, found 2 * 100000000");
  EXPECT_EQ(
      RenderError("{% for i in range(100) %}{% for j in range(1001) %}{% endfor %}{% endfor %}"),
      "t.jinja:1:29: expected at most 100000 loop iterations and macro calls in a render");
  EXPECT_EQ(RenderError("{% macro f(n) %}{% if n < 30 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}"
                        "{% endmacro %}{{ f(0) }}"),
            "t.jinja:1:35: expected at most 100000 loop iterations and macro calls in a render");
  EXPECT_EQ(RenderError("{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
            "t.jinja:1:76: expected a string of at most 67108864 bytes, found 134217728");
  EXPECT_EQ(RenderError("{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}"),
            "t.jinja:1:26: expected at most 67108864 bytes of output");
  EXPECT_EQ(RenderError("{{ raise_exception('two\nlines') }}"),
            "t.jinja:1:4: the template raised an error: two\\nlines");
}

TEST(JinjaRender, StrftimeNowUsesTheInjectedTime) {
  auto t = Template::Parse("{{ strftime_now('%d %b %Y') }}", "t.jinja");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t->Render(Json::object(), FixedNow()), "05 Mar 2026");
  std::tm other{};
  other.tm_year = 2024 - 1900;
  other.tm_mon = 6;
  other.tm_mday = 26;
  EXPECT_EQ(*t->Render(Json::object(), {.now = other}), "26 Jul 2024");
}

TEST(JinjaRender, InvalidUtf8BytesPassThroughUnchanged) {
  auto t = Template::Parse("[{{ s }}|{{ s.strip() }}|{{ s[0:3] }}]", "t.jinja");
  ASSERT_TRUE(t.ok());
  // Values come from JSON (valid UTF-8); a template's own text may hold any bytes.
  auto raw = Template::Parse("a\xff{{ 'b\xfe' | trim }}", "t.jinja");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw->Render(Json::object()),
            "a\xff"
            "b\xfe");
  EXPECT_EQ(*t->Render({{"s", " añb "}}), "[ añb |añb| añ]");
}

}  // namespace
}  // namespace fluxattn::serve::jinja
