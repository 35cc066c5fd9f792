#include "eval/tasks.h"

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "eval/words.h"
#include "fluxattn/status.h"

namespace fluxattn::eval {
namespace {

struct TaskInfo {
  TaskKind kind;
  const char* name;
};

constexpr TaskInfo kTasks[] = {
    {TaskKind::kPasskey, "passkey"},
    {TaskKind::kNiahMultikey, "niah_multikey"},
    {TaskKind::kKvRetrieval, "kv_retrieval"},
    {TaskKind::kVariableTracking, "variable_tracking"},
    {TaskKind::kFrequentWords, "frequent_words"},
    {TaskKind::kLmPerplexity, "lm_ppl"},
};

std::mt19937_64 TaskRng(TaskKind kind, uint64_t seed, uint64_t stream) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(kind), static_cast<uint32_t>(stream)};
  return std::mt19937_64(seq);
}

std::string Digits(std::mt19937_64& rng, int count) {
  std::string s(1, static_cast<char>('1' + PickIndex(rng, 9)));  // no leading zero
  while (static_cast<int>(s.size()) < count) s += static_cast<char>('0' + PickIndex(rng, 10));
  return s;
}

std::string Hex(std::mt19937_64& rng, int count) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  while (static_cast<int>(s.size()) < count) s += kHex[PickIndex(rng, 16)];
  return s;
}

std::string UpperName(std::mt19937_64& rng) {
  std::string s;
  while (s.size() < 5) s += static_cast<char>('A' + PickIndex(rng, 26));
  return s;
}

// The body of a task as a function of its size n (filler sentences, list lines): the prompt
// grows with n, and the generator looks for the largest n that fits the target.
struct TaskBuild {
  std::function<std::string(int64_t n)> text;
  int64_t min_units = 0;
  std::string answer;
  std::vector<std::string> unique_in_prompt;
};

// Filler sentences with `inserts` placed before sentence round(depth * n) (in the given order
// when depths are equal).
std::string Haystack(FillerText& filler, int64_t n,
                     const std::vector<std::pair<double, std::string>>& inserts) {
  std::vector<std::pair<int64_t, std::string>> at;
  for (const auto& [depth, text] : inserts) {
    at.emplace_back(static_cast<int64_t>(depth * static_cast<double>(n) + 0.5), text);
  }
  std::stable_sort(at.begin(), at.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string out;
  size_t next = 0;
  for (int64_t i = 0; i <= n; ++i) {
    while (next < at.size() && at[next].first <= i) out += at[next++].second;
    if (i < n) out += filler.Sentence(i);
  }
  return out;
}

TaskBuild BuildPasskey(uint64_t seed) {
  std::mt19937_64 rng = TaskRng(TaskKind::kPasskey, seed, 0);
  const std::string key = Digits(rng, 5);
  const double depth = static_cast<double>(PickIndex(rng, 1001)) / 1000.0;
  auto filler = std::make_shared<FillerText>(seed);
  TaskBuild b;
  b.answer = key;
  b.unique_in_prompt = {key};
  b.text = [=](int64_t n) {
    return absl::StrCat(
        "A pass key is hidden somewhere in the long text below. Find it and remember it; the "
        "text around it does not matter.\n\n",
        Haystack(*filler, n, {{depth, absl::StrCat("The pass key is ", key, ". Remember it. ")}}),
        "\n\nWhat is the pass key? The pass key is");
  };
  return b;
}

TaskBuild BuildNiahMultikey(uint64_t seed) {
  std::mt19937_64 rng = TaskRng(TaskKind::kNiahMultikey, seed, 0);
  constexpr int kNeedles = 4;
  std::vector<std::string> keys, values;
  std::vector<std::pair<double, std::string>> inserts;
  while (static_cast<int>(keys.size()) < kNeedles) {
    std::string key = absl::StrCat(Pick(rng, Adjectives()), "-", Pick(rng, Nouns()));
    std::string value = Digits(rng, 7);
    if (std::find(keys.begin(), keys.end(), key) != keys.end() ||
        std::find(values.begin(), values.end(), value) != values.end()) {
      continue;
    }
    const double depth = static_cast<double>(PickIndex(rng, 1001)) / 1000.0;
    inserts.emplace_back(
        depth, absl::StrCat("One of the special magic numbers for ", key, " is: ", value, ". "));
    keys.push_back(std::move(key));
    values.push_back(std::move(value));
  }
  const size_t asked = PickIndex(rng, kNeedles);
  auto filler = std::make_shared<FillerText>(seed);
  TaskBuild b;
  b.answer = values[asked];
  b.unique_in_prompt = {values[asked]};
  const std::string key = keys[asked];
  b.text = [=](int64_t n) {
    return absl::StrCat(
        "Some special magic numbers are hidden inside the following text. Memorize them; you "
        "will be asked about one of them.\n\n",
        Haystack(*filler, n, inserts), "\n\nWhat is the special magic number for ", key,
        " mentioned in the text? The special magic number for ", key, " is");
  };
  return b;
}

TaskBuild BuildKvRetrieval(uint64_t seed) {
  std::mt19937_64 rng = TaskRng(TaskKind::kKvRetrieval, seed, 0);
  const double depth = static_cast<double>(PickIndex(rng, 1001)) / 1000.0;
  // Pair i is a pure function of (seed, i); the asked pair is drawn separately so it is new.
  const std::string asked_key = Hex(rng, 8);
  const std::string asked_value = Hex(rng, 8);
  TaskBuild b;
  b.answer = asked_value;
  b.unique_in_prompt = {absl::StrCat("key ", asked_key, ":"), asked_value};
  b.min_units = 1;
  b.text = [=](int64_t n) {
    std::mt19937_64 pairs = TaskRng(TaskKind::kKvRetrieval, seed, 1);
    const int64_t at =
        std::min<int64_t>(static_cast<int64_t>(depth * static_cast<double>(n)), n - 1);
    std::string list;
    for (int64_t i = 0; i < n; ++i) {
      std::string k = Hex(pairs, 8), v = Hex(pairs, 8);
      // Keep the asked strings unique; a clash has probability ~2^-30 per line.
      while (k == asked_key || k == asked_value || v == asked_key || v == asked_value) {
        k = Hex(pairs, 8);
        v = Hex(pairs, 8);
      }
      if (i == at) {
        k = asked_key;
        v = asked_value;
      }
      absl::StrAppend(&list, "key ", k, ": value ", v, "\n");
    }
    return absl::StrCat("Below is a list of keys, each with its value. Every key occurs once.\n\n",
                        list, "\nWhat is the value of key ", asked_key, "? The value of key ",
                        asked_key, " is");
  };
  return b;
}

TaskBuild BuildVariableTracking(uint64_t seed) {
  std::mt19937_64 rng = TaskRng(TaskKind::kVariableTracking, seed, 0);
  constexpr int kHops = 4;
  std::set<std::string> used;
  auto fresh_name = [&] {
    std::string s;
    do {
      s = UpperName(rng);
    } while (!used.insert(s).second);
    return s;
  };
  const std::string value = Digits(rng, 5);
  std::string decoy_value;
  do {
    decoy_value = Digits(rng, 5);
  } while (decoy_value == value);
  std::vector<std::pair<double, std::string>> inserts;
  std::vector<std::string> chain;
  for (const std::string& v : {value, decoy_value}) {
    std::vector<std::string> names;
    for (int h = 0; h < kHops; ++h) names.push_back(fresh_name());
    for (int h = 0; h < kHops; ++h) {
      // Statements in order through the text: each assignment comes after what it reads.
      const double depth =
          (h + 0.2 + 0.6 * static_cast<double>(PickIndex(rng, 1001)) / 1000.0) / kHops;
      const std::string rhs = h == 0 ? v : absl::StrCat("VAR ", names[h - 1]);
      inserts.emplace_back(depth, absl::StrCat("VAR ", names[h], " = ", rhs, ". "));
    }
    if (chain.empty()) chain = names;
  }
  auto filler = std::make_shared<FillerText>(seed);
  TaskBuild b;
  b.answer = absl::StrJoin(chain, " ");
  // The value is also named in the question, so the assignment is what must occur once.
  b.unique_in_prompt = {absl::StrCat(" = ", value, ".")};
  for (const std::string& name : chain)
    b.unique_in_prompt.push_back(absl::StrCat("VAR ", name, " ="));
  b.text = [=](int64_t n) {
    return absl::StrCat("Memorize the variable assignments hidden in the following text.\n\n",
                        Haystack(*filler, n, inserts),
                        "\n\nQuestion: which variables are assigned the value ", value,
                        ", directly or through other variables? Answer: the variables are");
  };
  return b;
}

TaskBuild BuildFrequentWords(uint64_t seed) {
  std::mt19937_64 rng = TaskRng(TaskKind::kFrequentWords, seed, 0);
  std::vector<std::string> pool;
  for (const char* w : Nouns()) pool.push_back(w);
  for (const char* w : Adjectives()) pool.push_back(w);
  // Shuffle with our own draws so every standard library gives the same order.
  for (size_t i = pool.size(); i > 1; --i) std::swap(pool[i - 1], pool[PickIndex(rng, i)]);
  const std::vector<std::string> top(pool.begin(), pool.begin() + 3);
  const std::vector<std::string> rest(pool.begin() + 3, pool.end());
  TaskBuild b;
  b.answer = absl::StrJoin(top, " ");
  b.min_units = 12;
  b.text = [=](int64_t n) {
    // The three frequent words appear c + 2, c + 1 and c times; every other word at most
    // ceil(rest_slots / rest.size()) < c times, so the answer and its order are unambiguous.
    const int64_t c = std::max<int64_t>(3, n / 10);
    std::vector<std::string> items;
    for (int k = 0; k < 3; ++k) {
      for (int64_t j = 0; j < c + 2 - k; ++j) items.push_back(top[k]);
    }
    const int64_t rest_slots = std::max<int64_t>(0, n - static_cast<int64_t>(items.size()));
    for (int64_t j = 0; j < rest_slots; ++j) items.push_back(rest[j % rest.size()]);
    std::mt19937_64 order = TaskRng(TaskKind::kFrequentWords, seed, static_cast<uint64_t>(n));
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[PickIndex(order, i)]);
    std::string list;
    for (size_t i = 0; i < items.size(); ++i) absl::StrAppend(&list, i + 1, ". ", items[i], "\n");
    return absl::StrCat(
        "Below is a numbered list of words. A few words occur many more times than the "
        "others.\n\n",
        list,
        "\nQuestion: what are the three most frequent words in the list above, from the most "
        "frequent to the least? Answer: the three most frequent words are");
  };
  return b;
}

TaskBuild BuildLmPerplexity(uint64_t seed) {
  auto filler = std::make_shared<FillerText>(seed);
  TaskBuild b;
  b.min_units = 1;
  b.text = [=](int64_t n) { return filler->Sentences(n); };
  return b;
}

}  // namespace

const char* TaskName(TaskKind kind) {
  for (const TaskInfo& t : kTasks) {
    if (t.kind == kind) return t.name;
  }
  return "unknown";
}

const std::vector<TaskKind>& AllTasks() {
  static const std::vector<TaskKind> all = [] {
    std::vector<TaskKind> v;
    for (const TaskInfo& t : kTasks) v.push_back(t.kind);
    return v;
  }();
  return all;
}

absl::StatusOr<std::vector<TaskKind>> ParseTaskList(absl::string_view text,
                                                    absl::string_view flag) {
  std::vector<TaskKind> kinds;
  std::vector<std::string> known;
  for (const TaskInfo& t : kTasks) known.push_back(t.name);
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part == "all") {
      for (const TaskInfo& t : kTasks) kinds.push_back(t.kind);
      continue;
    }
    const TaskInfo* found = nullptr;
    for (const TaskInfo& t : kTasks) {
      if (part == t.name) found = &t;
    }
    if (found == nullptr) {
      return InvalidInput(
          flag, absl::StrCat("task names from {", absl::StrJoin(known, ", "), "} or \"all\""),
          absl::StrCat("\"", std::string(part), "\""));
    }
    if (std::find(kinds.begin(), kinds.end(), found->kind) == kinds.end()) {
      kinds.push_back(found->kind);
    }
  }
  return kinds;
}

int64_t CountOccurrences(absl::string_view text, absl::string_view needle) {
  if (needle.empty()) return 0;
  int64_t count = 0;
  for (size_t pos = text.find(needle); pos != absl::string_view::npos;
       pos = text.find(needle, pos + 1)) {
    ++count;
  }
  return count;
}

absl::StatusOr<std::vector<int64_t>> TaskGenerator::Encode(absl::string_view text) const {
  FLUXATTN_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                            tokenizer_->Encode(text, /*add_special_tokens=*/true));
  return std::vector<int64_t>(ids.begin(), ids.end());
}

absl::StatusOr<TaskSample> TaskGenerator::Generate(TaskKind kind, int64_t target_tokens,
                                                   uint64_t seed) const {
  TaskBuild build;
  switch (kind) {
    case TaskKind::kPasskey:
      build = BuildPasskey(seed);
      break;
    case TaskKind::kNiahMultikey:
      build = BuildNiahMultikey(seed);
      break;
    case TaskKind::kKvRetrieval:
      build = BuildKvRetrieval(seed);
      break;
    case TaskKind::kVariableTracking:
      build = BuildVariableTracking(seed);
      break;
    case TaskKind::kFrequentWords:
      build = BuildFrequentWords(seed);
      break;
    case TaskKind::kLmPerplexity:
      build = BuildLmPerplexity(seed);
      break;
  }
  const std::string where = absl::StrCat("task ", TaskName(kind), " at ", target_tokens, " tokens");

  // The largest n whose prompt fits: a secant step inside a bracket [lo fits, hi does not],
  // falling back to bisection, so a handful of encodings suffice even at 128k tokens.
  struct Fit {
    int64_t n = 0;
    std::string text;
    std::vector<int64_t> ids;
  };
  auto measure = [&](int64_t n) -> absl::StatusOr<Fit> {
    Fit f;
    f.n = n;
    f.text = build.text(n);
    FLUXATTN_ASSIGN_OR_RETURN(f.ids, Encode(f.text));
    return f;
  };
  FLUXATTN_ASSIGN_OR_RETURN(Fit lo, measure(build.min_units));
  if (static_cast<int64_t>(lo.ids.size()) > target_tokens) {
    return InvalidInput(
        where,
        absl::StrCat("a length of at least ", lo.ids.size(), " tokens (the task's fixed text)"),
        absl::StrCat(target_tokens));
  }
  int64_t hi = -1;  // smallest n known not to fit; -1: none yet
  double per_unit = 0.0;
  {
    FLUXATTN_ASSIGN_OR_RETURN(Fit probe, measure(lo.n + 8));
    per_unit = std::max(1.0, static_cast<double>(probe.ids.size() - lo.ids.size()) / 8.0);
    if (static_cast<int64_t>(probe.ids.size()) <= target_tokens) {
      lo = std::move(probe);
    } else {
      hi = probe.n;
    }
  }
  for (int iteration = 0; iteration < 64 && (hi < 0 || hi - lo.n > 1); ++iteration) {
    const double room = static_cast<double>(target_tokens - static_cast<int64_t>(lo.ids.size()));
    int64_t n = lo.n + std::max<int64_t>(1, static_cast<int64_t>(room / per_unit));
    if (hi >= 0) {
      n = std::clamp<int64_t>(n, lo.n + 1, hi - 1);
      // Alternate with bisection so a poor slope estimate cannot stall the search.
      if (iteration % 2 == 1) n = lo.n + (hi - lo.n) / 2;
    }
    FLUXATTN_ASSIGN_OR_RETURN(Fit f, measure(n));
    if (f.n > lo.n) {
      per_unit = std::max(
          1.0, static_cast<double>(f.ids.size() - lo.ids.size()) / static_cast<double>(f.n - lo.n));
    }
    if (static_cast<int64_t>(f.ids.size()) <= target_tokens) {
      lo = std::move(f);
    } else {
      hi = f.n;
    }
  }

  TaskSample sample;
  sample.kind = kind;
  sample.target_tokens = target_tokens;
  sample.prompt = std::move(lo.text);
  sample.prompt_ids = std::move(lo.ids);
  sample.answer = build.answer;
  sample.unique_in_prompt = build.unique_in_prompt;
  for (const std::string& s : sample.unique_in_prompt) {
    const int64_t count = CountOccurrences(sample.prompt, s);
    if (count != 1) {
      return absl::InternalError(absl::StrCat(where, ", seed ", seed, ": \"", s, "\" occurs ",
                                              count, " times, expected once"));
    }
  }
  if (kind == TaskKind::kLmPerplexity) {
    const int64_t n = static_cast<int64_t>(sample.prompt_ids.size());
    sample.scored_tokens = std::clamp<int64_t>(n / 8, 1, 8);
    if (n < 2) {
      return InvalidInput(where, "a document of at least 2 tokens", absl::StrCat(n));
    }
    sample.scored_tokens = std::min(sample.scored_tokens, n - 1);
  }
  return sample;
}

}  // namespace fluxattn::eval
