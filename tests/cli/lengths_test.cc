#include "eval/lengths.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fluxattn::eval {
namespace {

using ::testing::HasSubstr;

TEST(ParseLength, SuffixesAndPlainNumbers) {
  EXPECT_EQ(*ParseLength("512", "--context"), 512);
  EXPECT_EQ(*ParseLength("4k", "--context"), 4096);
  EXPECT_EQ(*ParseLength("16K", "--context"), 16384);
  EXPECT_EQ(*ParseLength("1m", "--context"), 1048576);
  EXPECT_EQ(*ParseLength(" 32k ", "--context"), 32768);
}

TEST(ParseLength, RandomValuesRoundTripThroughFormat) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200; ++i) {
    const int64_t base = 1 + static_cast<int64_t>(rng() % 5000);
    const int64_t value = base << (rng() % 3 == 0 ? 10 : rng() % 3 == 1 ? 20 : 0);
    const std::string text = FormatLength(value);
    auto parsed = ParseLength(text, "--lengths");
    ASSERT_TRUE(parsed.ok()) << text;
    EXPECT_EQ(*parsed, value) << text;
    // The shortest spelling: no suffix would do for a value that is not a multiple of 1024.
    if (value % 1024 != 0) EXPECT_EQ(text, absl::StrCat(value));
  }
}

TEST(ParseLength, RejectsMalformedWithOneLineNamingTheFlag) {
  for (const char* bad : {"4q", "", "k", "-1", "0", "0k", "1.5k", "4kk", "k4", "4 k", "0x10",
                          "99999999999999999999", "2000000m"}) {
    auto parsed = ParseLength(bad, "--context");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr("--context"));
    EXPECT_THAT(parsed.status().message(), HasSubstr(absl::StrCat("\"", bad, "\"")));
    EXPECT_EQ(std::string(parsed.status().message()).find('\n'), std::string::npos);
  }
}

TEST(ParseLengthList, ListsAndEmptyEntries) {
  EXPECT_THAT(*ParseLengthList("1k,4k,100", "--lengths"), ::testing::ElementsAre(1024, 4096, 100));
  EXPECT_FALSE(ParseLengthList("1k,,4k", "--lengths").ok());
  EXPECT_FALSE(ParseLengthList("1k,", "--lengths").ok());
  auto bad = ParseLengthList("1k,4q", "--lengths");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"4q\""));
}

TEST(ParseNameList, TrimsAndRejectsEmpty) {
  EXPECT_THAT(*ParseNameList(" a, b ,c", "--tasks"), ::testing::ElementsAre("a", "b", "c"));
  EXPECT_FALSE(ParseNameList("a,,b", "--tasks").ok());
}

}  // namespace
}  // namespace fluxattn::eval
