#include "eval/scoring.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace fluxattn::eval {
namespace {

TEST(NormalizeWhitespace, CollapsesAndTrims) {
  EXPECT_EQ(NormalizeWhitespace("  a \t b\n\nc  "), "a b c");
  EXPECT_EQ(NormalizeWhitespace(""), "");
  EXPECT_EQ(NormalizeWhitespace(" \n\t "), "");
  EXPECT_EQ(NormalizeWhitespace("x"), "x");
}

TEST(ExactMatch, AcceptsWhitespaceVariantsOfTheFirstLine) {
  EXPECT_TRUE(ExactMatch(" 71432", "71432"));
  EXPECT_TRUE(ExactMatch(" 71432.\nWhat else", "71432"));
  EXPECT_TRUE(ExactMatch("\n\n  71432  \n", "71432"));
  EXPECT_TRUE(ExactMatch(" ABCDE  FGHIJ\tKLMNO", "ABCDE FGHIJ KLMNO"));
}

TEST(ExactMatch, RejectsAnythingElse) {
  EXPECT_FALSE(ExactMatch(" 71433", "71432"));
  EXPECT_FALSE(ExactMatch(" 714321", "71432"));
  EXPECT_FALSE(ExactMatch(" 71432 is the key", "71432"));
  EXPECT_FALSE(ExactMatch("", "71432"));
  EXPECT_FALSE(ExactMatch("\n\n", "71432"));
  EXPECT_FALSE(ExactMatch(" the key\n71432", "71432"));  // only the first non-empty line counts
  EXPECT_FALSE(ExactMatch(" FGHIJ ABCDE", "ABCDE FGHIJ"));
  EXPECT_FALSE(ExactMatch(" 71432..", "71432"));
}

TEST(NegativeLogLikelihood, MatchesNaiveSoftmaxOnRandomLogits) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0.0, 4.0);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 300);
    std::vector<float> logits(n);
    for (float& x : logits) x = static_cast<float>(normal(rng));
    const int target = static_cast<int>(rng() % n);
    double z = 0.0;
    for (float x : logits) z += std::exp(static_cast<double>(x));
    const double expected = -std::log(std::exp(static_cast<double>(logits[target])) / z);
    EXPECT_NEAR(NegativeLogLikelihood(logits, target), expected, 1e-9 * (1 + expected));
  }
  // Large logits must not overflow.
  std::vector<float> big = {1000.0f, 1000.0f};
  EXPECT_NEAR(NegativeLogLikelihood(big, 0), std::log(2.0), 1e-12);
}

}  // namespace
}  // namespace fluxattn::eval
