// Byte-pair encoding of one pre-tokenized piece: the lowest-ranked adjacent pair is merged first
// (leftmost on ties) until no pair of the merge table is left, driven by a priority queue.
#include <queue>

#include "fluxattn/status.h"
#include "tokenizer_internal.h"

namespace fluxattn::models::tokenizer_internal {
namespace {

// Pieces longer than this are not cached: they are rare and would crowd the cache.
constexpr size_t kMaxCachedPieceBytes = 128;
constexpr size_t kMaxCacheEntries = 1 << 16;

}  // namespace

BpeModel::BpeModel(absl::flat_hash_map<std::string, int32_t> vocab, bool ignore_merges,
                   std::optional<int32_t> unk_id)
    : vocab_(std::move(vocab)), ignore_merges_(ignore_merges), unk_id_(unk_id) {}

absl::Status BpeModel::AddMerge(const std::string& left, const std::string& right, int32_t rank,
                                const std::string& where) {
  auto l = vocab_.find(left);
  auto r = vocab_.find(right);
  auto merged = vocab_.find(left + right);
  if (l == vocab_.end() || r == vocab_.end() || merged == vocab_.end()) {
    const std::string& missing = l == vocab_.end()   ? left
                                 : r == vocab_.end() ? right
                                                     : left + right;
    return InvalidInput(where, "tokens that are in model.vocab",
                        absl::StrCat("\"", missing, "\", which is not"));
  }
  // A pair listed twice keeps its first (better) rank, as in `tokenizers`.
  merges_.try_emplace(PairKey(l->second, r->second), MergeResult{rank, merged->second});
  return absl::OkStatus();
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  bool cacheable = word.size() <= kMaxCachedPieceBytes;
  std::string key(cacheable ? word : absl::string_view());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids;
  Merge(word, &word_ids);
  ids->insert(ids->end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::move(key), std::move(word_ids));
  }
}

void BpeModel::Merge(absl::string_view word, std::vector<int32_t>* ids) const {
  // Symbols form a doubly linked list over the characters; a merge folds the right symbol into
  // the left one, so a symbol's index (its leftmost character) orders candidates by position.
  struct Symbol {
    int32_t id;
    int prev;
    int next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t begin = pos;
    NextCodePoint(word, &pos);
    auto it = vocab_.find(word.substr(begin, pos - begin));
    int32_t id;
    if (it != vocab_.end()) {
      id = it->second;
    } else if (unk_id_.has_value()) {
      id = *unk_id_;
    } else {
      continue;  // `tokenizers` drops characters it has no id for when there is no unk token
    }
    int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int left;
    int right;
    int32_t left_id;
    int32_t right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int left) {
    if (left < 0) return;
    int right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) {
      queue.push({it->second.rank, left, right, symbols[left].id, symbols[right].id});
    }
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_pair(i);

  while (!queue.empty()) {
    Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    // Skip candidates made stale by an earlier merge of one of their symbols.
    if (!left.alive || left.next != c.right || left.id != c.left_id ||
        symbols[c.right].id != c.right_id || !symbols[c.right].alive) {
      continue;
    }
    Symbol& right = symbols[c.right];
    left.id = merges_.find(PairKey(c.left_id, c.right_id))->second.id;
    left.next = right.next;
    right.alive = false;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(c.left);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace fluxattn::models::tokenizer_internal
