// The built-in long-context suite, in the spirit of RULER: every sample is generated from a seed
// with the model's own tokenizer, so its length is measured in that model's tokens.
//
//   passkey            a five-digit pass key hidden once in filler text
//   niah_multikey      four "magic numbers" under different keys; one key is asked for
//   kv_retrieval       a list of random hexadecimal key/value pairs; one key is asked for
//   variable_tracking  VAR A = 12345, VAR B = VAR A, ... spread through filler (plus a decoy
//                      chain); the answer lists every variable holding the asked value
//   frequent_words     a numbered word list; the answer is its three most frequent words
//   lm_ppl             a long document; perplexity of its last tokens given everything before
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "fluxattn/models/tokenizer.h"

namespace fluxattn::eval {

enum class TaskKind {
  kPasskey,
  kNiahMultikey,
  kKvRetrieval,
  kVariableTracking,
  kFrequentWords,
  kLmPerplexity,
};

const char* TaskName(TaskKind kind);
const std::vector<TaskKind>& AllTasks();
// "passkey,lm_ppl" -> kinds; an unknown name is an error that lists the known ones.
absl::StatusOr<std::vector<TaskKind>> ParseTaskList(absl::string_view text, absl::string_view flag);

struct TaskSample {
  TaskKind kind = TaskKind::kPasskey;
  int64_t target_tokens = 0;
  std::string prompt;
  std::vector<int64_t>
      prompt_ids;  // prompt encoded with special tokens (BOS where the model has one)
  // Expected greedy continuation (exact match after whitespace normalization); empty for lm_ppl.
  std::string answer;
  // Strings the prompt must contain exactly once for the sample to be answerable (the pass key,
  // the asked value, ...). Checked by the generator; kept for tests and reports.
  std::vector<std::string> unique_in_prompt;
  // lm_ppl: the number of final prompt tokens whose log-likelihood is scored.
  int64_t scored_tokens = 0;
};

// Generates samples with one tokenizer. Lengths are hit from below: the prompt has at most
// target_tokens tokens and is shorter by less than one filler unit (a sentence, a list line).
class TaskGenerator {
 public:
  explicit TaskGenerator(const models::Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Sample `seed` of `kind` at `target_tokens`. Fails when the target is too short to hold the
  // task's fixed parts (the message says how many tokens are needed).
  absl::StatusOr<TaskSample> Generate(TaskKind kind, int64_t target_tokens, uint64_t seed) const;

  absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text) const;

 private:
  const models::Tokenizer* tokenizer_;
};

// Number of times `needle` occurs in `text` (overlapping occurrences count).
int64_t CountOccurrences(absl::string_view text, absl::string_view needle);

}  // namespace fluxattn::eval
