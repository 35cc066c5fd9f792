// Loading tokenizer.json / tokenizer_config.json and the encode/decode pipeline.
#include "fluxattn/models/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "fluxattn/status.h"
#include "nlohmann/json.hpp"
#include "tokenizer_internal.h"

namespace fluxattn::models {

using json = nlohmann::json;
using namespace tokenizer_internal;  // NOLINT(build/namespaces): private building blocks

namespace {

// ---- JSON access with errors that name the file and key --------------------------------------

std::string Describe(const json* value) {
  if (value == nullptr) return "nothing (key missing)";
  switch (value->type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return absl::StrCat("boolean ", value->get<bool>() ? "true" : "false");
    case json::value_t::string: {
      std::string s = value->get<std::string>();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return absl::StrCat("string \"", s, "\"");
    }
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return absl::StrCat("number ", value->dump());
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    default:
      return "an unsupported JSON value";
  }
}

class JsonReader {
 public:
  explicit JsonReader(std::string origin) : origin_(std::move(origin)) {}

  // Keys and found values quote the file's strings; OneLine keeps the message one line.
  absl::Status Error(const std::string& key, absl::string_view expected, const json* found) const {
    return InvalidInput(OneLine(absl::StrCat(origin_, ": ", key)), expected,
                        OneLine(Describe(found)));
  }
  absl::Status Error(const std::string& key, absl::string_view expected,
                     absl::string_view found) const {
    return InvalidInput(OneLine(absl::StrCat(origin_, ": ", key)), expected, OneLine(found));
  }

  // nullptr when absent.
  static const json* Find(const json& object, const char* name) {
    if (!object.is_object()) return nullptr;
    auto it = object.find(name);
    return it == object.end() ? nullptr : &*it;
  }

  absl::StatusOr<std::string> String(const json& object, const char* name,
                                     const std::string& key) const {
    const json* v = Find(object, name);
    if (v == nullptr || !v->is_string()) return Error(key, "a string", v);
    return v->get<std::string>();
  }

  absl::StatusOr<bool> Bool(const json& object, const char* name, const std::string& key,
                            bool default_value) const {
    const json* v = Find(object, name);
    if (v == nullptr || v->is_null()) return default_value;
    if (!v->is_boolean()) return Error(key, "a boolean", v);
    return v->get<bool>();
  }

  // Id tables are sized by the largest id, so ids are bounded well above any real vocabulary
  // (Gemma's 262144) but far below what would make a bad file allocate gigabytes.
  static constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

  absl::StatusOr<int32_t> Id(const json& value, const std::string& key) const {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() > kMaxTokenId) {
      return Error(key, absl::StrCat("an integer token id in [0, ", kMaxTokenId, "]"), &value);
    }
    return static_cast<int32_t>(value.get<int64_t>());
  }

  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open file (", std::strerror(errno), ")"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return text.str();
}

// Rust's char::is_whitespace (the Unicode White_Space property), used by lstrip/rstrip.
bool IsWhitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Start of the code point that ends at `end` (exclusive).
size_t PreviousCharStart(absl::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// Byte trie over the contents of added tokens, for leftmost-longest matching.
class TokenTrie {
 public:
  TokenTrie() : nodes_(1) {}
  void Add(absl::string_view content, int token_index) {
    if (content.empty()) return;
    int node = 0;
    for (char c : content) {
      auto it = nodes_[node].children.find(c);
      if (it == nodes_[node].children.end()) {
        int next = static_cast<int>(nodes_.size());
        nodes_[node].children.emplace(c, next);
        nodes_.emplace_back();
        node = next;
      } else {
        node = it->second;
      }
    }
    nodes_[node].token = token_index;
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // Longest token starting at `pos`: its index and end, or -1.
  int LongestAt(absl::string_view text, size_t pos, size_t* end) const {
    int node = 0, best = -1;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = nodes_[node].children.find(text[i]);
      if (it == nodes_[node].children.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        *end = i + 1;
      }
    }
    return best;
  }

 private:
  struct Node {
    absl::flat_hash_map<char, int> children;
    int token = -1;
  };
  std::vector<Node> nodes_;
  bool empty_ = true;
};

// A piece of the input: either text still to be tokenized or one added token.
struct Segment {
  std::string text;
  int32_t id = -1;
};

// One element of a TemplateProcessing "single" template.
struct TemplateItem {
  bool is_sequence = false;
  std::vector<int32_t> ids;  // of the special token when !is_sequence
};

}  // namespace

struct Tokenizer::Impl {
  std::string origin;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  TokenTrie raw_trie;                                // added tokens matched before normalization
  TokenTrie normalized_trie;                         // added tokens with normalized = true
  std::unique_ptr<Regex> word_char;                  // \w, only when some token is single_word
  std::vector<std::vector<TemplateItem>> templates;  // applied in order when adding specials
  std::vector<std::string> id_to_token;
  std::vector<std::string> id_to_bytes;
  std::vector<uint8_t> id_known;
  std::vector<uint8_t> id_special;
  absl::flat_hash_map<std::string, int32_t> added_by_content;
  std::optional<int32_t> bos, eos, pad;

  absl::Status ParseAll(const json& root);
  absl::Status ParseModel(const JsonReader& r, const json& root);
  absl::Status ParseAddedTokens(const JsonReader& r, const json& root);
  absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const JsonReader& r,
                                                              const json& value,
                                                              const std::string& key);
  absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const JsonReader& r,
                                                                  const json& value,
                                                                  const std::string& key);
  absl::Status ParsePostProcessor(const JsonReader& r, const json& value, const std::string& key);
  absl::Status ParseConfig(const std::string& path);

  void SplitAddedTokens(const std::string& text, const TokenTrie& trie,
                        std::vector<Segment>* out) const;
  absl::Status CheckId(int32_t id) const;
};

// ---- Parsing ------------------------------------------------------------------------------------

absl::Status Tokenizer::Impl::ParseModel(const JsonReader& r, const json& root) {
  const json* model_json = JsonReader::Find(root, "model");
  if (model_json == nullptr || !model_json->is_object()) {
    return r.Error("model", "an object", model_json);
  }
  const json* type = JsonReader::Find(*model_json, "type");
  if (type != nullptr && !(type->is_string() && type->get<std::string>() == "BPE")) {
    return r.Error("model.type", "\"BPE\" (byte-level BPE is the supported model)", type);
  }
  const json* vocab_json = JsonReader::Find(*model_json, "vocab");
  if (vocab_json == nullptr || !vocab_json->is_object()) {
    return r.Error("model.vocab", "an object mapping tokens to ids", vocab_json);
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json->size());
  for (const auto& [token, id_json] : vocab_json->items()) {
    FLUXATTN_ASSIGN_OR_RETURN(int32_t id,
                              r.Id(id_json, absl::StrCat("model.vocab[\"", token, "\"]")));
    vocab[token] = id;
  }
  const json* byte_fallback = JsonReader::Find(*model_json, "byte_fallback");
  if (byte_fallback != nullptr && !byte_fallback->is_null() &&
      !(byte_fallback->is_boolean() && !byte_fallback->get<bool>())) {
    return r.Error("model.byte_fallback", "false (byte fallback is not supported)", byte_fallback);
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* v = JsonReader::Find(*model_json, affix);
    if (v != nullptr && !v->is_null() && !(v->is_string() && v->get<std::string>().empty())) {
      return r.Error(absl::StrCat("model.", affix), "null or \"\" (not supported)", v);
    }
  }
  const json* dropout = JsonReader::Find(*model_json, "dropout");
  if (dropout != nullptr && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return r.Error("model.dropout", "null (encoding is deterministic)", dropout);
  }
  FLUXATTN_ASSIGN_OR_RETURN(bool ignore_merges,
                            r.Bool(*model_json, "ignore_merges", "model.ignore_merges", false));
  std::optional<int32_t> unk_id;
  const json* unk = JsonReader::Find(*model_json, "unk_token");
  if (unk != nullptr && !unk->is_null()) {
    if (!unk->is_string()) return r.Error("model.unk_token", "null or a string", unk);
    auto it = vocab.find(unk->get<std::string>());
    if (it == vocab.end()) return r.Error("model.unk_token", "a token of model.vocab", unk);
    unk_id = it->second;
  }
  this->model = std::make_unique<BpeModel>(std::move(vocab), ignore_merges, unk_id);

  const json* merges = JsonReader::Find(*model_json, "merges");
  if (merges == nullptr || !merges->is_array()) {
    return r.Error("model.merges", "an array of \"a b\" strings or [\"a\", \"b\"] pairs", merges);
  }
  int32_t rank = 0;
  for (const json& merge : *merges) {
    std::string key = absl::StrCat("model.merges[", rank, "]");
    std::string left, right;
    if (merge.is_string()) {
      // The older form: two tokens separated by exactly one space (tokens never hold spaces).
      const std::string s = merge.get<std::string>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return r.Error(key, "\"a b\" (two tokens separated by one space)", &merge);
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return r.Error(key, "\"a b\" or [\"a\", \"b\"]", &merge);
    }
    FLUXATTN_RETURN_IF_ERROR(
        this->model->AddMerge(left, right, rank, absl::StrCat(r.origin(), ": ", key)));
    ++rank;
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::ParseAddedTokens(const JsonReader& r, const json& root) {
  const json* list = JsonReader::Find(root, "added_tokens");
  if (list == nullptr || list->is_null()) return absl::OkStatus();
  if (!list->is_array()) return r.Error("added_tokens", "an array", list);
  for (size_t i = 0; i < list->size(); ++i) {
    const json& entry = (*list)[i];
    std::string key = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object()) return r.Error(key, "an object", &entry);
    AddedToken token;
    const json* id = JsonReader::Find(entry, "id");
    if (id == nullptr) return r.Error(key + ".id", "a non-negative integer token id", id);
    FLUXATTN_ASSIGN_OR_RETURN(token.id, r.Id(*id, key + ".id"));
    FLUXATTN_ASSIGN_OR_RETURN(token.content, r.String(entry, "content", key + ".content"));
    if (token.content.empty()) return r.Error(key + ".content", "a non-empty string", "\"\"");
    FLUXATTN_ASSIGN_OR_RETURN(token.special, r.Bool(entry, "special", key + ".special", false));
    FLUXATTN_ASSIGN_OR_RETURN(token.lstrip, r.Bool(entry, "lstrip", key + ".lstrip", false));
    FLUXATTN_ASSIGN_OR_RETURN(token.rstrip, r.Bool(entry, "rstrip", key + ".rstrip", false));
    FLUXATTN_ASSIGN_OR_RETURN(token.single_word,
                              r.Bool(entry, "single_word", key + ".single_word", false));
    // As in `tokenizers`, special tokens default to being matched in the raw text.
    FLUXATTN_ASSIGN_OR_RETURN(token.normalized,
                              r.Bool(entry, "normalized", key + ".normalized", !token.special));
    added_tokens.push_back(std::move(token));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Normalizer>> Tokenizer::Impl::ParseNormalizer(
    const JsonReader& r, const json& value, const std::string& key) {
  if (value.is_null()) return std::unique_ptr<Normalizer>();
  if (!value.is_object()) return r.Error(key, "null or an object", &value);
  FLUXATTN_ASSIGN_OR_RETURN(std::string type, r.String(value, "type", key + ".type"));
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return MakeUnicodeNormalizer(type, absl::StrCat(r.origin(), ": ", key));
  }
  if (type == "Sequence") {
    const json* parts = JsonReader::Find(value, "normalizers");
    if (parts == nullptr || !parts->is_array()) {
      return r.Error(key + ".normalizers", "an array", parts);
    }
    std::vector<std::unique_ptr<Normalizer>> list;
    for (size_t i = 0; i < parts->size(); ++i) {
      FLUXATTN_ASSIGN_OR_RETURN(
          auto part, ParseNormalizer(r, (*parts)[i], absl::StrCat(key, ".normalizers[", i, "]")));
      if (part != nullptr) list.push_back(std::move(part));
    }
    return MakeSequenceNormalizer(std::move(list));
  }
  return r.Error(key + ".type", "one of NFC, NFD, NFKC, NFKD, Sequence", Describe(&value["type"]));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> Tokenizer::Impl::ParsePreTokenizer(
    const JsonReader& r, const json& value, const std::string& key) {
  if (value.is_null()) return std::unique_ptr<PreTokenizer>();
  if (!value.is_object()) return r.Error(key, "null or an object", &value);
  FLUXATTN_ASSIGN_OR_RETURN(std::string type, r.String(value, "type", key + ".type"));
  if (type == "Sequence") {
    const json* parts = JsonReader::Find(value, "pretokenizers");
    if (parts == nullptr || !parts->is_array()) {
      return r.Error(key + ".pretokenizers", "an array", parts);
    }
    std::vector<std::unique_ptr<PreTokenizer>> list;
    for (size_t i = 0; i < parts->size(); ++i) {
      FLUXATTN_ASSIGN_OR_RETURN(
          auto part,
          ParsePreTokenizer(r, (*parts)[i], absl::StrCat(key, ".pretokenizers[", i, "]")));
      if (part != nullptr) list.push_back(std::move(part));
    }
    return MakeSequencePreTokenizer(std::move(list));
  }
  if (type == "ByteLevel") {
    // Both default to true in `tokenizers` when absent.
    FLUXATTN_ASSIGN_OR_RETURN(bool prefix,
                              r.Bool(value, "add_prefix_space", key + ".add_prefix_space", true));
    FLUXATTN_ASSIGN_OR_RETURN(bool use_regex, r.Bool(value, "use_regex", key + ".use_regex", true));
    return MakeByteLevelPreTokenizer(prefix, use_regex);
  }
  if (type == "Digits") {
    FLUXATTN_ASSIGN_OR_RETURN(
        bool individual, r.Bool(value, "individual_digits", key + ".individual_digits", false));
    return MakeDigitsPreTokenizer(individual);
  }
  if (type == "Split") {
    const json* pattern = JsonReader::Find(value, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      return r.Error(key + ".pattern", "{\"Regex\": ...} or {\"String\": ...}", pattern);
    }
    std::unique_ptr<Regex> regex;
    std::string literal;
    if (const json* re = JsonReader::Find(*pattern, "Regex"); re != nullptr) {
      if (!re->is_string()) return r.Error(key + ".pattern.Regex", "a string", re);
      FLUXATTN_ASSIGN_OR_RETURN(
          regex, Regex::Compile(re->get<std::string>(),
                                absl::StrCat(r.origin(), ": ", key, ".pattern.Regex")));
    } else if (const json* str = JsonReader::Find(*pattern, "String"); str != nullptr) {
      if (!str->is_string()) return r.Error(key + ".pattern.String", "a string", str);
      literal = str->get<std::string>();
    } else {
      return r.Error(key + ".pattern", "{\"Regex\": ...} or {\"String\": ...}", pattern);
    }
    FLUXATTN_ASSIGN_OR_RETURN(std::string behavior_name,
                              r.String(value, "behavior", key + ".behavior"));
    SplitBehavior behavior;
    if (behavior_name == "Isolated") {
      behavior = SplitBehavior::kIsolated;
    } else if (behavior_name == "Removed") {
      behavior = SplitBehavior::kRemoved;
    } else if (behavior_name == "MergedWithPrevious") {
      behavior = SplitBehavior::kMergedWithPrevious;
    } else if (behavior_name == "MergedWithNext") {
      behavior = SplitBehavior::kMergedWithNext;
    } else if (behavior_name == "Contiguous") {
      behavior = SplitBehavior::kContiguous;
    } else {
      return r.Error(key + ".behavior",
                     "one of Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous",
                     Describe(JsonReader::Find(value, "behavior")));
    }
    FLUXATTN_ASSIGN_OR_RETURN(bool invert, r.Bool(value, "invert", key + ".invert", false));
    return MakeSplitPreTokenizer(std::move(regex), std::move(literal), behavior, invert);
  }
  return r.Error(key + ".type", "one of Split, ByteLevel, Digits, Sequence",
                 Describe(JsonReader::Find(value, "type")));
}

absl::Status Tokenizer::Impl::ParsePostProcessor(const JsonReader& r, const json& value,
                                                 const std::string& key) {
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_object()) return r.Error(key, "null or an object", &value);
  FLUXATTN_ASSIGN_OR_RETURN(std::string type, r.String(value, "type", key + ".type"));
  if (type == "ByteLevel") return absl::OkStatus();  // only adjusts offsets
  if (type == "Sequence") {
    const json* parts = JsonReader::Find(value, "processors");
    if (parts == nullptr || !parts->is_array()) {
      return r.Error(key + ".processors", "an array", parts);
    }
    for (size_t i = 0; i < parts->size(); ++i) {
      FLUXATTN_RETURN_IF_ERROR(
          ParsePostProcessor(r, (*parts)[i], absl::StrCat(key, ".processors[", i, "]")));
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return r.Error(key + ".type", "one of ByteLevel, TemplateProcessing, Sequence",
                   Describe(JsonReader::Find(value, "type")));
  }
  const json* specials = JsonReader::Find(value, "special_tokens");
  if (specials == nullptr || !specials->is_object()) {
    return r.Error(key + ".special_tokens", "an object", specials);
  }
  const json* single = JsonReader::Find(value, "single");
  if (single == nullptr || !single->is_array()) return r.Error(key + ".single", "an array", single);
  std::vector<TemplateItem> items;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& entry = (*single)[i];
    std::string item_key = absl::StrCat(key, ".single[", i, "]");
    TemplateItem item;
    if (const json* seq = JsonReader::Find(entry, "Sequence"); seq != nullptr) {
      item.is_sequence = true;
    } else if (const json* special = JsonReader::Find(entry, "SpecialToken"); special != nullptr) {
      FLUXATTN_ASSIGN_OR_RETURN(std::string name,
                                r.String(*special, "id", item_key + ".SpecialToken.id"));
      const json* def = JsonReader::Find(*specials, name.c_str());
      std::string def_key = absl::StrCat(key, ".special_tokens[\"", name, "\"]");
      if (def == nullptr) return r.Error(def_key, "a definition of the template's token", def);
      const json* ids = JsonReader::Find(*def, "ids");
      if (ids == nullptr || !ids->is_array()) return r.Error(def_key + ".ids", "an array", ids);
      for (size_t k = 0; k < ids->size(); ++k) {
        const std::string id_key = absl::StrCat(def_key, ".ids[", k, "]");
        FLUXATTN_ASSIGN_OR_RETURN(int32_t id, r.Id((*ids)[k], id_key));
        // Encode would otherwise return ids that Decode refuses.
        const bool known = std::any_of(added_tokens.begin(), added_tokens.end(),
                                       [id](const AddedToken& t) { return t.id == id; }) ||
                           std::any_of(model->vocab().begin(), model->vocab().end(),
                                       [id](const auto& entry) { return entry.second == id; });
        if (!known) {
          return r.Error(id_key, "an id of model.vocab or added_tokens", &(*ids)[k]);
        }
        item.ids.push_back(id);
      }
    } else {
      return r.Error(item_key, "{\"Sequence\": ...} or {\"SpecialToken\": ...}", &entry);
    }
    items.push_back(std::move(item));
  }
  templates.push_back(std::move(items));
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::ParseAll(const json& root) {
  JsonReader r(origin);
  if (!root.is_object()) return r.Error("(top level)", "a JSON object", &root);
  FLUXATTN_RETURN_IF_ERROR(ParseModel(r, root));
  FLUXATTN_RETURN_IF_ERROR(ParseAddedTokens(r, root));

  const json null_value;
  const json* normalizer_json = JsonReader::Find(root, "normalizer");
  FLUXATTN_ASSIGN_OR_RETURN(
      normalizer,
      ParseNormalizer(r, normalizer_json ? *normalizer_json : null_value, "normalizer"));
  const json* pre_json = JsonReader::Find(root, "pre_tokenizer");
  FLUXATTN_ASSIGN_OR_RETURN(
      pre_tokenizer, ParsePreTokenizer(r, pre_json ? *pre_json : null_value, "pre_tokenizer"));
  const json* post_json = JsonReader::Find(root, "post_processor");
  FLUXATTN_RETURN_IF_ERROR(
      ParsePostProcessor(r, post_json ? *post_json : null_value, "post_processor"));
  const json* decoder = JsonReader::Find(root, "decoder");
  if (decoder == nullptr || !decoder->is_object() || !decoder->contains("type") ||
      (*decoder)["type"] != "ByteLevel") {
    const json* found =
        decoder != nullptr && decoder->is_object() ? JsonReader::Find(*decoder, "type") : decoder;
    return r.Error(decoder != nullptr && decoder->is_object() ? "decoder.type" : "decoder",
                   "a ByteLevel decoder", found);
  }

  // Id tables: the model's vocabulary, overridden by added tokens (as `tokenizers` does).
  int32_t size = 0;
  for (const auto& [token, id] : model->vocab()) size = std::max(size, id + 1);
  for (const AddedToken& token : added_tokens) size = std::max(size, token.id + 1);
  id_to_token.assign(size, "");
  id_known.assign(size, 0);
  id_special.assign(size, 0);
  for (const auto& [token, id] : model->vocab()) {
    id_to_token[id] = token;
    id_known[id] = 1;
  }
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const AddedToken& token = added_tokens[i];
    id_to_token[token.id] = token.content;
    id_known[token.id] = 1;
    id_special[token.id] = token.special;
    added_by_content[token.content] = token.id;
    if (token.normalized) {
      normalized_trie.Add(normalizer ? normalizer->Normalize(token.content) : token.content,
                          static_cast<int>(i));
    } else {
      raw_trie.Add(token.content, static_cast<int>(i));
    }
    if (token.single_word && word_char == nullptr) {
      FLUXATTN_ASSIGN_OR_RETURN(
          word_char, Regex::Compile(R"([\p{L}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])", "\\w"));
    }
  }
  id_to_bytes.resize(size);
  for (int32_t id = 0; id < size; ++id) {
    if (id_known[id]) id_to_bytes[id] = ByteLevelDecodeToken(id_to_token[id]);
  }
  // A template that starts with one special token names the BOS token.
  if (!templates.empty() && !templates.front().empty() && !templates.front()[0].is_sequence &&
      templates.front()[0].ids.size() == 1) {
    bos = templates.front()[0].ids[0];
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::ParseConfig(const std::string& path) {
  FLUXATTN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  JsonReader r(path);
  if (root.is_discarded()) return r.Error("(top level)", "valid JSON", "a syntax error");
  if (!root.is_object()) return r.Error("(top level)", "a JSON object", &root);
  for (auto [name, slot] : {std::pair<const char*, std::optional<int32_t>*>{"bos_token", &bos},
                            {"eos_token", &eos},
                            {"pad_token", &pad}}) {
    const json* v = JsonReader::Find(root, name);
    if (v == nullptr || v->is_null()) continue;
    const json* content = v;
    if (v->is_object()) content = JsonReader::Find(*v, "content");
    if (content == nullptr || !content->is_string()) {
      return r.Error(name, "a token string or {\"content\": ...}", v);
    }
    std::string token = content->get<std::string>();
    auto added = added_by_content.find(token);
    if (added != added_by_content.end()) {
      *slot = added->second;
    } else if (auto it = model->vocab().find(token); it != model->vocab().end()) {
      *slot = it->second;
    } else {
      return r.Error(name, absl::StrCat("a token of ", origin), Describe(content));
    }
  }
  return absl::OkStatus();
}

// ---- Encoding ----------------------------------------------------------------------------------

void Tokenizer::Impl::SplitAddedTokens(const std::string& text, const TokenTrie& trie,
                                       std::vector<Segment>* out) const {
  if (trie.empty()) {
    if (!text.empty()) out->push_back({text, -1});
    return;
  }
  absl::string_view s(text);
  size_t emitted = 0;  // end of the last piece handed out
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = 0;
    int index = trie.LongestAt(s, pos, &end);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_tokens[index];
    size_t begin = pos;
    if (token.single_word) {
      auto is_word = [&](size_t at, size_t to) {
        return word_char->FullMatch(s.substr(at, to - at));
      };
      bool before_ok = begin == 0 || !is_word(PreviousCharStart(s, begin), begin);
      size_t after_end = end;
      if (end < s.size()) NextCodePoint(s, &after_end);
      bool after_ok = end == s.size() || !is_word(end, after_end);
      if (!before_ok || !after_ok) {
        pos = end;  // the rejected match still consumes its text, as in leftmost matching
        continue;
      }
    }
    if (token.lstrip) {
      while (begin > emitted) {
        size_t prev = PreviousCharStart(s, begin);
        size_t p = prev;
        if (!IsWhitespace(NextCodePoint(s, &p))) break;
        begin = prev;
      }
    }
    if (token.rstrip) {
      while (end < s.size()) {
        size_t p = end;
        if (!IsWhitespace(NextCodePoint(s, &p))) break;
        end = p;
      }
    }
    if (begin > emitted) out->push_back({std::string(s.substr(emitted, begin - emitted)), -1});
    out->push_back({"", token.id});
    emitted = pos = end;
  }
  if (emitted < s.size()) out->push_back({std::string(s.substr(emitted)), -1});
}

absl::Status Tokenizer::Impl::CheckId(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_known.size()) || !id_known[id]) {
    return absl::OutOfRangeError(absl::StrCat(
        "token id ", id, " is not in the vocabulary of ", origin, " (vocab_size ", id_known.size(),
        (id >= 0 && id < static_cast<int32_t>(id_known.size())) ? ", and this id is unused)"
                                                                : ")"));
  }
  return absl::OkStatus();
}

// ---- Tokenizer ---------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view text,
                                                               absl::string_view origin) {
  auto impl = std::make_unique<Impl>();
  impl->origin = std::string(origin);
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    return InvalidInput(impl->origin, "valid JSON",
                        absl::StrCat("a syntax error at byte ", e.byte));
  } catch (const json::exception& e) {
    // Not only syntax errors throw: a number such as 1e999 overflows with out_of_range.
    return InvalidInput(impl->origin, "valid JSON", OneLine(e.what()));
  }
  FLUXATTN_RETURN_IF_ERROR(impl->ParseAll(root));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  FLUXATTN_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromJson(text, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelDir(const std::string& dir) {
  std::string base = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  FLUXATTN_ASSIGN_OR_RETURN(auto tokenizer, FromFile(base + "tokenizer.json"));
  std::string config = base + "tokenizer_config.json";
  if (std::ifstream(config).good()) {
    FLUXATTN_RETURN_IF_ERROR(tokenizer->impl_->ParseConfig(config));
  }
  return tokenizer;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (size_t bad = FindInvalidUtf8(text); bad != absl::string_view::npos) {
    return InvalidInput(
        "text to encode", "valid UTF-8",
        absl::StrFormat("byte 0x%02X at offset %d", static_cast<uint8_t>(text[bad]), bad));
  }
  // Added tokens are cut out of the raw text first, then the rest is normalized and searched
  // for the added tokens that are matched in normalized form.
  std::vector<Segment> raw_segments;
  m.SplitAddedTokens(std::string(text), m.raw_trie, &raw_segments);
  std::vector<Segment> segments;
  for (Segment& segment : raw_segments) {
    if (segment.id >= 0) {
      segments.push_back(std::move(segment));
      continue;
    }
    std::string normalized =
        m.normalizer ? m.normalizer->Normalize(segment.text) : std::move(segment.text);
    m.SplitAddedTokens(normalized, m.normalized_trie, &segments);
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<std::string> pieces;
  for (const Segment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    pieces.assign(1, segment.text);
    if (m.pre_tokenizer) m.pre_tokenizer->Apply(&pieces);
    for (const std::string& piece : pieces) m.model->Tokenize(piece, &ids);
  }
  if (add_special_tokens) {
    for (const std::vector<TemplateItem>& items : m.templates) {
      std::vector<int32_t> wrapped;
      for (const TemplateItem& item : items) {
        const std::vector<int32_t>& part = item.is_sequence ? ids : item.ids;
        wrapped.insert(wrapped.end(), part.begin(), part.end());
      }
      ids = std::move(wrapped);
    }
  }
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    FLUXATTN_RETURN_IF_ERROR(impl_->CheckId(id));
    if (skip_special_tokens && impl_->id_special[id]) continue;
    bytes += impl_->id_to_bytes[id];
  }
  return LossyUtf8(bytes);
}

absl::StatusOr<std::string> Tokenizer::IdToBytes(int32_t id) const {
  FLUXATTN_RETURN_IF_ERROR(impl_->CheckId(id));
  return impl_->id_to_bytes[id];
}

absl::StatusOr<std::string> Tokenizer::IdToToken(int32_t id) const {
  FLUXATTN_RETURN_IF_ERROR(impl_->CheckId(id));
  return impl_->id_to_token[id];
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  std::string key(token);
  if (auto it = impl_->added_by_content.find(key); it != impl_->added_by_content.end()) {
    return it->second;
  }
  if (auto it = impl_->model->vocab().find(key); it != impl_->model->vocab().end()) {
    return it->second;
  }
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_known.size()); }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->id_special[id];
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added_tokens; }
std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos; }
std::optional<int32_t> Tokenizer::pad_token_id() const { return impl_->pad; }

// ---- Streaming decoding -----------------------------------------------------------------------

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

absl::StatusOr<std::string> StreamingDecoder::Push(int32_t id) {
  FLUXATTN_ASSIGN_OR_RETURN(std::string bytes, tokenizer_->IdToBytes(id));
  if (skip_special_tokens_ && tokenizer_->IsSpecial(id)) return std::string();
  pending_ += bytes;
  // Everything before an unfinished trailing character can go out; a cut there cannot change
  // how the lossy UTF-8 conversion reads either side, so the output matches Decode.
  size_t ready = StreamableUtf8Prefix(pending_);
  std::string text = LossyUtf8(absl::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return text;
}

std::string StreamingDecoder::Finish() {
  std::string text = LossyUtf8(pending_);
  pending_.clear();
  return text;
}

}  // namespace fluxattn::models
