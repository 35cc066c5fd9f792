// Task generators against the fixture tokenizers: lengths hit their targets from below, the
// answer is where it must be, and an independent reading of the prompt gives the same answer.
#include "eval/tasks.h"

#include <algorithm>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "fluxattn/models/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fluxattn::eval {
namespace {

using ::testing::HasSubstr;

const models::Tokenizer& FixtureTokenizer(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<models::Tokenizer>>();
  auto& slot = (*cache)[name];
  if (!slot) {
    auto tok = models::Tokenizer::FromModelDir(
        absl::StrCat(FLUXATTN_SOURCE_DIR, "/tests/fixtures/tokenizer/", name));
    if (!tok.ok()) {
      ADD_FAILURE() << tok.status();
      std::abort();
    }
    slot = std::move(*tok);
  }
  return *slot;
}

// Occurrences counted without the library's helper.
int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t i = 0; i + needle.size() <= text.size(); ++i) {
    if (text.compare(i, needle.size(), needle) == 0) ++n;
  }
  return n;
}

struct Case {
  std::string tokenizer;
  TaskKind kind;
  int64_t target;
};

class TaskGeneratorTest : public ::testing::TestWithParam<Case> {};

TEST_P(TaskGeneratorTest, LengthIsAtMostTargetAndClose) {
  const Case& c = GetParam();
  const models::Tokenizer& tok = FixtureTokenizer(c.tokenizer);
  TaskGenerator gen(tok);
  for (uint64_t seed : {1u, 2u, 3u}) {
    auto sample = gen.Generate(c.kind, c.target, seed);
    ASSERT_TRUE(sample.ok()) << sample.status();
    // The ids are the tokenizer's encoding of the prompt text.
    auto ids = tok.Encode(sample->prompt, true);
    ASSERT_TRUE(ids.ok());
    ASSERT_EQ(ids->size(), sample->prompt_ids.size());
    EXPECT_TRUE(std::equal(ids->begin(), ids->end(), sample->prompt_ids.begin()));
    const int64_t n = static_cast<int64_t>(sample->prompt_ids.size());
    EXPECT_LE(n, c.target);
    // Short by less than one unit of filler: a sentence or a list line is well under 64 tokens
    // even with these small vocabularies, and never more than 6% of the target.
    EXPECT_GE(n, c.target - std::max<int64_t>(64, c.target * 6 / 100))
        << TaskName(c.kind) << " seed " << seed;
    for (const std::string& s : sample->unique_in_prompt) {
      EXPECT_EQ(Count(sample->prompt, s), 1) << s;
    }
    // Deterministic in the seed.
    auto again = gen.Generate(c.kind, c.target, seed);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->prompt, sample->prompt);
    EXPECT_EQ(again->answer, sample->answer);
  }
  auto a = gen.Generate(c.kind, c.target, 11);
  auto b = gen.Generate(c.kind, c.target, 12);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->prompt, b->prompt);
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const char* tok : {"qwen2", "llama3", "gpt2"}) {
    for (TaskKind kind : AllTasks()) {
      for (int64_t target : {700, 2500}) cases.push_back({tok, kind, target});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllTasks, TaskGeneratorTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) {
                           return absl::StrCat(info.param.tokenizer, "_", TaskName(info.param.kind),
                                               "_", info.param.target);
                         });

TaskSample Make(TaskKind kind, int64_t target, uint64_t seed) {
  TaskGenerator gen(FixtureTokenizer("qwen2"));
  auto sample = gen.Generate(kind, target, seed);
  EXPECT_TRUE(sample.ok()) << sample.status();
  return sample.ok() ? *sample : TaskSample{};
}

TEST(Passkey, TheKeyOccursOnceAndIsTheAnswer) {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    TaskSample s = Make(TaskKind::kPasskey, 600, seed);
    std::smatch m;
    const std::regex re("The pass key is ([0-9]+)\\.");
    ASSERT_TRUE(std::regex_search(s.prompt, m, re));
    EXPECT_EQ(m[1].str(), s.answer);
    EXPECT_EQ(Count(s.prompt, s.answer), 1);
    EXPECT_EQ(s.answer.size(), 5u);
  }
}

TEST(NiahMultikey, TheAskedKeysValueIsTheAnswer) {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    TaskSample s = Make(TaskKind::kNiahMultikey, 800, seed);
    std::map<std::string, std::string> needles;
    const std::regex re("special magic numbers for ([a-z]+-[a-z]+) is: ([0-9]+)\\.");
    for (auto it = std::sregex_iterator(s.prompt.begin(), s.prompt.end(), re);
         it != std::sregex_iterator(); ++it) {
      needles[(*it)[1].str()] = (*it)[2].str();
    }
    EXPECT_EQ(needles.size(), 4u);
    std::smatch q;
    ASSERT_TRUE(std::regex_search(s.prompt, q, std::regex("magic number for ([a-z]+-[a-z]+) is$")));
    ASSERT_TRUE(needles.count(q[1].str()));
    EXPECT_EQ(needles[q[1].str()], s.answer);
    EXPECT_EQ(Count(s.prompt, s.answer), 1);
  }
}

TEST(KvRetrieval, TheAskedKeysValueIsTheAnswer) {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    TaskSample s = Make(TaskKind::kKvRetrieval, 900, seed);
    std::map<std::string, std::string> pairs;
    const std::regex re("key ([0-9a-f]{8}): value ([0-9a-f]{8})\n");
    int lines = 0;
    for (auto it = std::sregex_iterator(s.prompt.begin(), s.prompt.end(), re);
         it != std::sregex_iterator(); ++it, ++lines) {
      pairs[(*it)[1].str()] = (*it)[2].str();
    }
    EXPECT_EQ(static_cast<int>(pairs.size()), lines);  // keys are unique
    std::smatch q;
    ASSERT_TRUE(std::regex_search(s.prompt, q, std::regex("value of key ([0-9a-f]{8}) is$")));
    EXPECT_EQ(pairs[q[1].str()], s.answer);
    EXPECT_EQ(Count(s.prompt, s.answer), 1);
  }
}

TEST(VariableTracking, ResolvingTheAssignmentsGivesTheAnswer) {
  for (uint64_t seed = 0; seed < 10; ++seed) {
    TaskSample s = Make(TaskKind::kVariableTracking, 1000, seed);
    // Resolve every VAR statement in text order.
    std::map<std::string, std::string> value_of;
    std::vector<std::string> order;
    const std::regex re("VAR ([A-Z]{5}) = (VAR ([A-Z]{5})|([0-9]+))\\.");
    for (auto it = std::sregex_iterator(s.prompt.begin(), s.prompt.end(), re);
         it != std::sregex_iterator(); ++it) {
      const std::string name = (*it)[1].str();
      ASSERT_FALSE(value_of.count(name)) << name << " assigned twice";
      if ((*it)[4].matched) {
        value_of[name] = (*it)[4].str();
      } else {
        ASSERT_TRUE(value_of.count((*it)[3].str())) << "read before written: " << (*it)[3].str();
        value_of[name] = value_of[(*it)[3].str()];
      }
      order.push_back(name);
    }
    std::smatch q;
    ASSERT_TRUE(std::regex_search(s.prompt, q, std::regex("assigned the value ([0-9]+),")));
    std::vector<std::string> expected;
    for (const std::string& name : order) {
      if (value_of[name] == q[1].str()) expected.push_back(name);
    }
    EXPECT_EQ(expected.size(), 4u);
    EXPECT_EQ(absl::StrJoin(expected, " "), s.answer);
    EXPECT_EQ(Count(s.prompt, q[1].str()), 2);  // the assignment and the question
  }
}

TEST(FrequentWords, CountingTheListGivesTheAnswerInOrder) {
  for (int64_t target : {300, 1200}) {
    for (uint64_t seed = 0; seed < 6; ++seed) {
      TaskSample s = Make(TaskKind::kFrequentWords, target, seed);
      std::map<std::string, int> counts;
      const std::regex re("(^|\n)[0-9]+\\. ([a-z]+)\n");
      std::string::const_iterator from = s.prompt.begin();
      std::smatch m;
      // Entries share their newlines, so search from the end of each word.
      while (std::regex_search(from, s.prompt.cend(), m, re)) {
        ++counts[m[2].str()];
        from = m[2].second;
      }
      std::vector<std::pair<int, std::string>> ranked;
      for (const auto& [w, n] : counts) ranked.emplace_back(n, w);
      std::sort(ranked.rbegin(), ranked.rend());
      ASSERT_GE(ranked.size(), 4u);
      EXPECT_GT(ranked[0].first, ranked[1].first);
      EXPECT_GT(ranked[1].first, ranked[2].first);
      EXPECT_GT(ranked[2].first, ranked[3].first);
      EXPECT_EQ(absl::StrCat(ranked[0].second, " ", ranked[1].second, " ", ranked[2].second),
                s.answer);
    }
  }
}

TEST(LmPerplexity, ScoresTheLastTokensOfAPlainDocument) {
  TaskSample s = Make(TaskKind::kLmPerplexity, 1000, 5);
  EXPECT_TRUE(s.answer.empty());
  EXPECT_GE(s.scored_tokens, 1);
  EXPECT_LT(s.scored_tokens, static_cast<int64_t>(s.prompt_ids.size()));
  EXPECT_EQ(s.prompt.find_first_of("0123456789"), std::string::npos);
}

TEST(TaskGenerator, TooShortTargetIsAClearError) {
  TaskGenerator gen(FixtureTokenizer("qwen2"));
  auto s = gen.Generate(TaskKind::kNiahMultikey, 20, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("niah_multikey"));
  EXPECT_THAT(s.status().message(), HasSubstr("at least"));
}

TEST(ParseTaskList, NamesAllAndUnknown) {
  EXPECT_EQ(ParseTaskList("passkey,lm_ppl", "--tasks")->size(), 2u);
  EXPECT_EQ(ParseTaskList("all", "--tasks")->size(), AllTasks().size());
  EXPECT_EQ(ParseTaskList("passkey,passkey", "--tasks")->size(), 1u);
  auto bad = ParseTaskList("passkey,needle", "--tasks");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("\"needle\""));
  EXPECT_THAT(bad.status().message(), HasSubstr("kv_retrieval"));
}

}  // namespace
}  // namespace fluxattn::eval
