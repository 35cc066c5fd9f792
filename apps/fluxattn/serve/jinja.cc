#include "serve/jinja.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fluxattn/status.h"

namespace fluxattn::serve::jinja {
namespace {

// ---------------------------------------------------------------------------------------------
// Errors: thrown inside the engine, turned into one absl::Status at the API boundary.

struct Pos {
  int line = 0;
  int col = 0;
};

struct Error {
  Pos pos;
  std::string message;
};

[[noreturn]] void Fail(Pos pos, std::string message) { throw Error{pos, std::move(message)}; }

// ---------------------------------------------------------------------------------------------
// UTF-8 and Python's notion of whitespace (str.isspace, the `\s` of the lexer's regexes).

// Decodes the code point at s[i] and advances i. A byte that is not valid UTF-8 decodes as
// U+DC80..U+DCFF (Python's surrogateescape) and encodes back as itself.
uint32_t NextCodePoint(std::string_view s, size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const int n = b < 0x80           ? 0
                : (b >> 5) == 0x6  ? 1
                : (b >> 4) == 0xe  ? 2
                : (b >> 3) == 0x1e ? 3
                                   : -1;
  if (n == 0) {
    ++i;
    return b;
  }
  if (n < 0 || i + static_cast<size_t>(n) >= s.size()) {
    ++i;
    return 0xdc00 | b;
  }
  uint32_t cp = b & (0x3f >> n);
  for (int k = 1; k <= n; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80) {
      ++i;
      return 0xdc00 | b;
    }
    cp = (cp << 6) | (c & 0x3f);
  }
  i += n + 1;
  return cp;
}

void AppendCodePoint(std::string& out, uint32_t cp) {
  if (cp >= 0xdc80 && cp <= 0xdcff) {
    out += static_cast<char>(cp & 0xff);
  } else if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

std::vector<uint32_t> CodePoints(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) out.push_back(NextCodePoint(s, i));
  return out;
}

std::string FromCodePoints(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) AppendCodePoint(out, cps[i]);
  return out;
}

bool IsSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

// Python's str.strip/lstrip/rstrip: `chars` null strips whitespace.
std::string Strip(std::string_view s, const std::vector<uint32_t>* chars, bool left, bool right) {
  const std::vector<uint32_t> cps = CodePoints(s);
  auto strip = [&](uint32_t cp) {
    return chars == nullptr ? IsSpace(cp)
                            : std::find(chars->begin(), chars->end(), cp) != chars->end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  return FromCodePoints(cps, b, e);
}

// Length of the whitespace run starting at s[i].
size_t SpaceRun(std::string_view s, size_t i) {
  size_t j = i;
  while (j < s.size()) {
    size_t k = j;
    if (!IsSpace(NextCodePoint(s, k))) break;
    j = k;
  }
  return j - i;
}

// ---------------------------------------------------------------------------------------------
// Values: Python's objects as jinja2 sees them in a chat template.

class Value;
struct Dict;
using List = std::vector<Value>;
using KwArgs = std::vector<std::pair<std::string, Value>>;
using Function = std::function<Value(Pos, std::vector<Value>&, KwArgs&)>;

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kLoop,
    kFunction
  };

  Value() = default;  // undefined
  static Value Undefined(std::string name) {
    Value v;
    v.str_ = std::move(name);
    return v;
  }
  static Value None() { return Value(Kind::kNone); }
  static Value Bool(bool b) {
    Value v(Kind::kBool);
    v.int_ = b;
    return v;
  }
  static Value Int(int64_t i) {
    Value v(Kind::kInt);
    v.int_ = i;
    return v;
  }
  static Value Float(double d) {
    Value v(Kind::kFloat);
    v.float_ = d;
    return v;
  }
  static Value String(std::string s) {
    Value v(Kind::kString);
    v.str_ = std::move(s);
    return v;
  }
  // The Python object a kList value stands for. All iterate like lists; only lists and tuples
  // print, index and slice, and the others keep Python's quirks where they show (a generator is
  // true even when empty, has no len(), compares equal to nothing).
  enum class Seq {
    kList,
    kTuple,
    kRange,
    kGenerator,
    kReversed,
    kDictKeys,
    kDictValues,
    kDictItems
  };
  static Value MakeList(List items, Seq seq = Seq::kList) {
    Value v(Kind::kList);
    v.list_ = std::make_shared<List>(std::move(items));
    v.seq_ = seq;
    return v;
  }
  static Value MakeDict(std::shared_ptr<Dict> d, Kind kind = Kind::kDict) {
    Value v(kind);
    v.dict_ = std::move(d);
    return v;
  }
  static Value MakeFunction(std::string name, Function fn) {
    Value v(Kind::kFunction);
    v.str_ = std::move(name);
    v.fn_ = std::make_shared<Function>(std::move(fn));
    return v;
  }
  static Value FromJson(const Json& j, int depth = 0);

  Kind kind() const { return kind_; }
  bool is(Kind k) const { return kind_ == k; }
  bool undefined() const { return kind_ == Kind::kUndefined; }
  bool number() const {
    return kind_ == Kind::kBool || kind_ == Kind::kInt || kind_ == Kind::kFloat;
  }
  bool integral() const { return kind_ == Kind::kBool || kind_ == Kind::kInt; }
  bool boolean() const { return int_ != 0; }
  int64_t integer() const { return int_; }
  double real() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& str() const { return str_; }  // the string; a function's or undefined's name
  const List& list() const { return *list_; }
  Seq seq() const { return seq_; }
  bool tuple() const { return seq_ == Seq::kTuple; }
  // A list or a tuple (what Python indexes, slices, prints and concatenates here).
  bool plain() const { return seq_ == Seq::kList || seq_ == Seq::kTuple; }
  // A generator or iterator: no len(), no indexing, always true.
  bool lazy() const { return seq_ == Seq::kGenerator || seq_ == Seq::kReversed; }
  Dict& dict() const { return *dict_; }
  const Function& function() const { return *fn_; }
  // What `is` compares for namespaces, loops and functions.
  const void* identity() const {
    return fn_ ? static_cast<const void*>(fn_.get()) : static_cast<const void*>(dict_.get());
  }

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  Kind kind_ = Kind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0;
  Seq seq_ = Seq::kList;
  std::string str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> fn_;
};

// A Python dict with string keys, in insertion order.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  const Value* Find(std::string_view key) const {
    for (const auto& [k, v] : entries) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  void Set(const std::string& key, Value value) {
    for (auto& [k, v] : entries) {
      if (k == key) {
        v = std::move(value);
        return;
      }
    }
    entries.emplace_back(key, std::move(value));
  }
};

Value Value::FromJson(const Json& j, int depth) {
  if (depth > 128) Fail(Pos{}, "expected template variables nested at most 128 deep");
  switch (j.type()) {
    case Json::value_t::null:
      return None();
    case Json::value_t::boolean:
      return Bool(j.get<bool>());
    case Json::value_t::number_integer:
      return Int(j.get<int64_t>());
    case Json::value_t::number_unsigned:
      if (j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return Float(j.get<double>());
      return Int(static_cast<int64_t>(j.get<uint64_t>()));
    case Json::value_t::number_float:
      return Float(j.get<double>());
    case Json::value_t::string:
      return String(j.get<std::string>());
    case Json::value_t::array: {
      List items;
      for (const Json& e : j) items.push_back(FromJson(e, depth + 1));
      return MakeList(std::move(items));
    }
    case Json::value_t::object: {
      auto d = std::make_shared<Dict>();
      for (auto it = j.begin(); it != j.end(); ++it)
        d->entries.emplace_back(it.key(), FromJson(*it, depth + 1));
      return MakeDict(std::move(d));
    }
    default:
      return None();  // binary values do not occur in parsed JSON
  }
}

using Kind = Value::Kind;
using Seq = Value::Seq;

const char* TypeName(const Value& v) {
  switch (v.kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      switch (v.seq()) {
        case Seq::kList:
          return "list";
        case Seq::kTuple:
          return "tuple";
        case Seq::kRange:
          return "range";
        case Seq::kGenerator:
          return "generator";
        case Seq::kReversed:
          return "list_reverseiterator";
        case Seq::kDictKeys:
          return "dict_keys";
        case Seq::kDictValues:
          return "dict_values";
        case Seq::kDictItems:
          return "dict_items";
      }
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kLoop:
      return "LoopContext";
    case Kind::kFunction:
      return "function";
  }
  return "object";
}

// Python's repr of a float: the shortest digits that read back, in scientific notation when the
// decimal exponent is below -4 or at least 16.
std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits += c;
  }
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  out += exp < 0 ? "e-" : "e+";
  const std::string ed = std::to_string(std::abs(exp));
  out += (ed.size() < 2 ? "0" : "") + ed;
  return out;
}

// The escapes Python's repr and json.dumps share.
const char* CommonEscape(uint32_t cp) {
  switch (cp) {
    case '\\':
      return "\\\\";
    case '\n':
      return "\\n";
    case '\r':
      return "\\r";
    case '\t':
      return "\\t";
    default:
      return nullptr;
  }
}

// Code points that Python's str.isprintable() rejects, as far as chat text meets them: controls,
// separators other than the space, and common format characters.
bool PythonUnprintable(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
         (cp >= 0x205f && cp <= 0x2064) || cp == 0x3000 || cp == 0xfeff ||
         (cp >= 0xdc80 && cp <= 0xdcff);
}

// Python's repr of a str.
std::string StringRepr(const std::string& s) {
  const char quote =
      (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = NextCodePoint(s, i);
    char buf[16];
    if (const char* e = CommonEscape(cp)) {
      out += e;
    } else if (cp == static_cast<uint32_t>(quote)) {
      out += '\\';
      out += quote;
    } else if (PythonUnprintable(cp)) {
      snprintf(buf, sizeof(buf), cp < 0x100 ? "\\x%02x" : "\\u%04x",
               cp < 0xdc80 || cp > 0xdcff ? cp : cp & 0xff);
      out += buf;
    } else {
      AppendCodePoint(out, cp);
    }
  }
  return out + quote;
}

std::string Repr(const Value& v, Pos pos);

// Python's str() of a value, as `{{ }}` prints it.
std::string ToStr(const Value& v, Pos pos) {
  switch (v.kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return v.str();
    default:
      return Repr(v, pos);
  }
}

std::string Repr(const Value& v, Pos pos) {
  switch (v.kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return v.boolean() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(v.integer());
    case Kind::kFloat:
      return FloatRepr(v.real());
    case Kind::kString:
      return StringRepr(v.str());
    case Kind::kList: {
      std::vector<std::string> parts;
      for (const Value& e : v.list()) parts.push_back(Repr(e, pos));
      const std::string list = "[" + absl::StrJoin(parts, ", ") + "]";
      switch (v.seq()) {
        case Seq::kList:
          return list;
        case Seq::kTuple:
          return "(" + absl::StrJoin(parts, ", ") + (parts.size() == 1 ? ",)" : ")");
        case Seq::kDictKeys:
        case Seq::kDictValues:
        case Seq::kDictItems:
          return absl::StrCat(TypeName(v), "(", list, ")");
        default:
          Fail(pos,
               absl::StrCat("printing a ", TypeName(v), " object is not supported (apply |list)"));
      }
    }
    case Kind::kDict: {
      std::vector<std::string> parts;
      for (const auto& [k, e] : v.dict().entries)
        parts.push_back(StringRepr(k) + ": " + Repr(e, pos));
      return "{" + absl::StrJoin(parts, ", ") + "}";
    }
    default:
      Fail(pos, absl::StrCat("printing a ", TypeName(v), " object is not supported"));
  }
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
    case Kind::kInt:
      return v.integer() != 0;
    case Kind::kFloat:
      return v.real() != 0;
    case Kind::kString:
      return !v.str().empty();
    case Kind::kList:
      return v.lazy() || !v.list().empty();
    case Kind::kDict:
      return !v.dict().entries.empty();
    default:
      return true;
  }
}

bool Equal(const Value& a, const Value& b) {
  if (a.number() && b.number()) {
    if (a.integral() && b.integral()) return a.integer() == b.integer();
    return a.real() == b.real();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return a.str() == b.str();
    case Kind::kList: {
      if (a.seq() != b.seq() || a.lazy() || a.list().size() != b.list().size()) return false;
      for (size_t i = 0; i < a.list().size(); ++i) {
        if (!Equal(a.list()[i], b.list()[i])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (a.dict().entries.size() != b.dict().entries.size()) return false;
      for (const auto& [k, v] : a.dict().entries) {
        const Value* o = b.dict().Find(k);
        if (o == nullptr || !Equal(v, *o)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

[[noreturn]] void FailUndefined(const Value& v, Pos pos) {
  Fail(pos, absl::StrCat("'", v.str(), "' is undefined"));
}

// -1, 0, 1; an error where Python's ordering is undefined.
int Compare(const Value& a, const Value& b, const char* op, Pos pos) {
  if (a.undefined()) FailUndefined(a, pos);
  if (b.undefined()) FailUndefined(b, pos);
  if (a.number() && b.number()) {
    if (a.integral() && b.integral())
      return a.integer() < b.integer() ? -1 : a.integer() > b.integer();
    return a.real() < b.real() ? -1 : a.real() > b.real();
  }
  if (a.is(Kind::kString) && b.is(Kind::kString)) return a.str() < b.str() ? -1 : a.str() > b.str();
  if (a.is(Kind::kList) && b.is(Kind::kList) && a.plain() && a.seq() == b.seq()) {
    const List &x = a.list(), &y = b.list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!Equal(x[i], y[i])) return Compare(x[i], y[i], op, pos);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  Fail(pos, absl::StrCat("'", op, "' is not supported between '", TypeName(a), "' and '",
                         TypeName(b), "'"));
}

// Python's json.dumps(value, ensure_ascii, indent, separators, sort_keys).
struct JsonStyle {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};

// A JSON string as Python's json.dumps writes it.
void JsonString(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = NextCodePoint(s, i);
    char buf[16];
    if (const char* e = CommonEscape(cp)) {
      out += e;
    } else if (cp == '"') {
      out += "\\\"";
    } else if (cp == '\b') {
      out += "\\b";
    } else if (cp == '\f') {
      out += "\\f";
    } else if (cp < 0x20 || (ensure_ascii && cp > 0x7e)) {
      if (cp >= 0x10000) {
        const uint32_t v = cp - 0x10000;
        snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
      } else {
        snprintf(buf, sizeof(buf), "\\u%04x", cp);
      }
      out += buf;
    } else {
      AppendCodePoint(out, cp);
    }
  }
  out += '"';
}

void DumpJson(const Value& v, const JsonStyle& style, int level, Pos pos, std::string& out) {
  auto newline = [&](int lvl) {
    out += '\n';
    for (int i = 0; i < lvl; ++i) out += *style.indent;
  };
  switch (v.kind()) {
    case Kind::kNone:
      out += "null";
      return;
    case Kind::kBool:
      out += v.boolean() ? "true" : "false";
      return;
    case Kind::kInt:
      out += std::to_string(v.integer());
      return;
    case Kind::kFloat: {
      const double d = v.real();
      out += std::isnan(d)   ? "NaN"
             : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity")
                             : FloatRepr(d);
      return;
    }
    case Kind::kString:
      JsonString(v.str(), style.ensure_ascii, out);
      return;
    case Kind::kList: {
      if (!v.plain()) {
        Fail(pos,
             absl::StrCat("tojson: an object of type ", TypeName(v), " is not JSON serializable"));
      }
      if (v.list().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const Value& e : v.list()) {
        if (!first) out += style.item_sep;
        first = false;
        if (style.indent) newline(level + 1);
        DumpJson(e, style, level + 1, pos, out);
      }
      if (style.indent) newline(level);
      out += ']';
      return;
    }
    case Kind::kDict: {
      if (v.dict().entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.dict().entries) entries.push_back(&e);
      if (style.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      out += '{';
      bool first = true;
      for (const auto* e : entries) {
        if (!first) out += style.item_sep;
        first = false;
        if (style.indent) newline(level + 1);
        JsonString(e->first, style.ensure_ascii, out);
        out += style.key_sep;
        DumpJson(e->second, style, level + 1, pos, out);
      }
      if (style.indent) newline(level);
      out += '}';
      return;
    }
    default:
      Fail(pos,
           absl::StrCat("tojson: an object of type ", TypeName(v), " is not JSON serializable"));
  }
}

// ---------------------------------------------------------------------------------------------
// Lexer.

enum class Tok {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  std::string text;  // text, name, string value or operator
  int64_t ival = 0;
  double fval = 0;
  Pos pos;
};

std::string Describe(const Token& t) {
  switch (t.type) {
    case Tok::kText:
      return "template text";
    case Tok::kVarBegin:
      return "'{{'";
    case Tok::kVarEnd:
      return "'}}'";
    case Tok::kBlockBegin:
      return "'{%'";
    case Tok::kBlockEnd:
      return "'%}'";
    case Tok::kName:
      return "'" + t.text + "'";
    case Tok::kString:
      return "a string";
    case Tok::kInt:
    case Tok::kFloat:
      return "a number";
    case Tok::kOp:
      return "'" + t.text + "'";
    case Tok::kEof:
      return "the end of the template";
  }
  return "?";
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // jinja2 reads \r\n, \r and \n as newlines and drops one trailing newline.
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
        src_ += '\n';
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> Run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t at = pos_;
      while ((at = src_.find('{', at)) != std::string::npos) {
        if (at + 1 < src_.size() &&
            (src_[at + 1] == '{' || src_[at + 1] == '%' || src_[at + 1] == '#'))
          break;
        ++at;
      }
      if (at == std::string::npos) {
        Emit(Tok::kText, src_.substr(pos_), pos_);
        break;
      }
      std::string text = src_.substr(pos_, at - pos_);
      const char kind = src_[at + 1];
      char sign = at + 2 < src_.size() ? src_[at + 2] : 0;
      if (sign != '-' && sign != '+') sign = 0;
      if (sign == '-') {
        text = Strip(text, nullptr, false, true);
      } else if (sign != '+' && kind != '{') {
        // lstrip_blocks: a block or comment tag preceded on its line by whitespace only.
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            SpaceRun(text, l_pos) == text.size() - l_pos) {
          text.resize(l_pos);
        }
      }
      if (!text.empty()) Emit(Tok::kText, text, pos_);
      size_t p = at + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        const size_t e = src_.find("#}", p);
        if (e == std::string::npos)
          Fail(PosOf(at), "expected '#}' closing this comment, found the end of the template");
        const bool strip = e > p && src_[e - 1] == '-';
        pos_ = e + 2;
        line_starting = Finish(strip, /*trim=*/true);
        continue;
      }
      const bool block = kind == '%';
      Emit(block ? Tok::kBlockBegin : Tok::kVarBegin, "", at);
      pos_ = p;
      line_starting = LexExpression(block, at);
    }
    Emit(Tok::kEof, "", src_.size());
    return std::move(out_);
  }

 private:
  Pos PosOf(size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - 1;
    int col = 1;
    for (size_t i = *it; i < offset && i < src_.size(); ++i) {
      if ((static_cast<unsigned char>(src_[i]) & 0xc0) != 0x80) ++col;
    }
    return Pos{static_cast<int>(it - line_starts_.begin()) + 1, col};
  }

  void Emit(Tok type, std::string text, size_t offset) {
    out_.push_back(Token{type, std::move(text), 0, 0, PosOf(offset)});
  }

  // After an end tag at pos_: `-` strips the whitespace after it, trim_blocks one newline.
  // Returns whether what was consumed ends with a newline (jinja2's line_starting).
  bool Finish(bool strip, bool trim) {
    const size_t start = pos_;
    if (strip) {
      pos_ += SpaceRun(src_, pos_);
    } else if (trim && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
    return pos_ > start ? src_[pos_ - 1] == '\n' : false;
  }

  bool LexExpression(bool block, size_t tag_start) {
    int depth = 0;
    const std::string end = block ? "%}" : "}}";
    while (true) {
      while (pos_ < src_.size() && SpaceRun(src_, pos_) > 0) pos_ += SpaceRun(src_, pos_);
      if (pos_ >= src_.size()) {
        Fail(PosOf(tag_start),
             absl::StrCat("expected '", end, "' closing this tag, found the end of the template"));
      }
      const char c = src_[pos_];
      if (depth == 0) {
        const bool signed_end =
            (c == '-' || (block && c == '+')) && src_.compare(pos_ + 1, 2, end) == 0;
        if (signed_end || src_.compare(pos_, 2, end) == 0) {
          Emit(block ? Tok::kBlockEnd : Tok::kVarEnd, "", pos_);
          pos_ += signed_end ? 3 : 2;
          return Finish(signed_end && c == '-', block && !(signed_end && c == '+'));
        }
      }
      const size_t start = pos_;
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
          ++pos_;
        Emit(Tok::kName, src_.substr(start, pos_ - start), start);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        LexNumber();
      } else if (c == '\'' || c == '"') {
        LexString();
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                     "*",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                     "]",  "{",  "}",  ",",  ".",  ":",  "|", ";"};
        const char* op = nullptr;
        for (const char* o : kOps) {
          if (src_.compare(pos_, strlen(o), o) == 0) {
            op = o;
            break;
          }
        }
        if (op == nullptr) {
          size_t k = pos_;
          std::string ch;
          AppendCodePoint(ch, NextCodePoint(src_, k));
          Fail(PosOf(pos_),
               absl::StrCat("expected an expression or '", end, "', found '", ch, "'"));
        }
        if (*op == '(' || *op == '[' || *op == '{') ++depth;
        if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) --depth;
        pos_ += strlen(op);
        Emit(Tok::kOp, op, start);
      }
    }
  }

  void LexNumber() {
    const size_t start = pos_;
    auto digits = [&] {
      while (pos_ < src_.size() &&
             (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
        ++pos_;
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      size_t k = pos_ + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        pos_ = k;
        digits();
      }
    }
    std::string text;
    for (size_t i = start; i < pos_; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token t{is_float ? Tok::kFloat : Tok::kInt, text, 0, 0, PosOf(start)};
    if (is_float) {
      t.fval = std::strtod(text.c_str(), nullptr);
    } else {
      auto r = std::from_chars(text.data(), text.data() + text.size(), t.ival);
      if (r.ec != std::errc()) Fail(t.pos, "expected an integer that fits 64 bits, found " + text);
    }
    out_.push_back(std::move(t));
  }

  // A quoted string with Python's escapes (jinja2 decodes them with "unicode-escape").
  void LexString() {
    const size_t start = pos_;
    const char quote = src_[pos_++];
    std::string value;
    while (true) {
      if (pos_ >= src_.size())
        Fail(PosOf(start), "expected the end of this string, found the end of the template");
      const char c = src_[pos_];
      if (c == quote) {
        ++pos_;
        break;
      }
      if (c != '\\') {
        value += c;
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= src_.size())
        Fail(PosOf(start), "expected the end of this string, found the end of the template");
      const char e = src_[pos_ + 1];
      pos_ += 2;
      auto hex = [&](int n) {
        uint32_t cp = 0;
        for (int k = 0; k < n; ++k) {
          if (pos_ >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[pos_]))) {
            Fail(PosOf(pos_),
                 absl::StrCat("expected ", n, " hex digits in a \\", std::string(1, e), " escape"));
          }
          cp = cp * 16 + std::stoi(std::string(1, src_[pos_++]), nullptr, 16);
        }
        return cp;
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
          value += '\\';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'n':
          value += '\n';
          break;
        case 'r':
          value += '\r';
          break;
        case 't':
          value += '\t';
          break;
        case 'v':
          value += '\v';
          break;
        case 'x':
          AppendCodePoint(value, hex(2));
          break;
        case 'u':
          AppendCodePoint(value, hex(4));
          break;
        case 'U':
          AppendCodePoint(value, hex(8));
          break;
        case 'N':
          Fail(PosOf(pos_ - 2), "expected a supported escape, found \\N{...} (not supported)");
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '7';
                 ++k) {
              cp = cp * 8 + (src_[pos_++] - '0');
            }
            AppendCodePoint(value, cp);
          } else {
            value += '\\';
            pos_ -= 1;  // an unknown escape stays as written
          }
      }
    }
    out_.push_back(Token{Tok::kString, std::move(value), 0, 0, PosOf(start)});
  }

  std::string src_;
  size_t pos_ = 0;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
};

// ---------------------------------------------------------------------------------------------
// Syntax tree.

struct Expr;
using ExprP = std::shared_ptr<const Expr>;

struct Expr {
  enum class Type {
    kLiteral,
    kName,
    kAttr,
    kItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kNeg,
    kPos,
    kNot,
    kAnd,
    kOr,
    kBinary,
    kCompare,
    kCond,
    kList,
    kTuple,
    kDict
  };
  Type type = Type::kLiteral;
  Pos pos;
  Value literal;
  std::string name;         // variable, attribute, filter, test or operator
  std::vector<ExprP> args;  // operands; call, filter and test arguments after the subject
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;  // kCompare: the operator before each operand after the first
  bool negated = false;          // kTest: `is not`
};

struct Node;
using NodeP = std::shared_ptr<const Node>;
using Body = std::vector<NodeP>;

struct Target {
  std::vector<std::string> names;  // one name, or a tuple of names
  std::string attr;                // `ns.attr` (then names holds ns)
};

struct Node {
  enum class Type {
    kText,
    kOutput,
    kIf,
    kFor,
    kSet,
    kSetBlock,
    kMacro,
    kBreak,
    kContinue,
    kGeneration
  };
  Type type = Type::kText;
  Pos pos;
  std::string text;
  ExprP expr;                                    // output, for iterable, set value
  std::vector<std::pair<ExprP, Body>> branches;  // if/elif (null condition for else)
  Target target;
  ExprP filter;  // for ... if
  Body body, else_body;
  std::vector<std::pair<std::string, ExprP>> params;  // macro parameters and defaults
};

std::shared_ptr<Node> NewNode(Node::Type type, Pos pos) {
  auto n = std::make_shared<Node>();
  n->type = type;
  n->pos = pos;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Parser.

const std::set<std::string, std::less<>>& KnownFilters() {
  static const std::set<std::string, std::less<>> k = {
      "abs",        "capitalize", "count",      "d",       "default", "first", "float",
      "int",        "items",      "join",       "last",    "length",  "list",  "lower",
      "map",        "reject",     "rejectattr", "replace", "reverse", "safe",  "select",
      "selectattr", "string",     "title",      "tojson",  "trim",    "upper"};
  return k;
}

const std::set<std::string, std::less<>>& KnownTests() {
  static const std::set<std::string, std::less<>> k = {
      "boolean", "callable", "defined",     "divisibleby", "eq",        "equalto",
      "==",      "even",     "false",       "float",       "ge",        ">=",
      "gt",      ">",        "greaterthan", "in",          "integer",   "iterable",
      "le",      "<=",       "lower",       "lt",          "<",         "lessthan",
      "mapping", "ne",       "!=",          "none",        "number",    "odd",
      "sameas",  "sequence", "string",      "true",        "undefined", "upper"};
  return k;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  Body ParseTemplate() {
    std::string stop;
    Body body = ParseBody({}, stop);
    return body;
  }

 private:
  const Token& Peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& Next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool IsOp(const char* op, size_t k = 0) const {
    return Peek(k).type == Tok::kOp && Peek(k).text == op;
  }
  bool IsName(const char* name, size_t k = 0) const {
    return Peek(k).type == Tok::kName && Peek(k).text == name;
  }
  [[noreturn]] void Expected(const std::string& what) const {
    Fail(Peek().pos, absl::StrCat("expected ", what, ", found ", Describe(Peek())));
  }
  void ExpectOp(const char* op) {
    if (!IsOp(op)) Expected(absl::StrCat("'", op, "'"));
    ++i_;
  }
  void ExpectBlockEnd(const std::string& tag) {
    if (Peek().type != Tok::kBlockEnd) Expected(absl::StrCat("'%}' ending the '", tag, "' tag"));
    ++i_;
  }
  std::string ExpectName(const std::string& what) {
    if (Peek().type != Tok::kName) Expected(what);
    return Next().text;
  }

  // Statements up to one of `stops` (a block tag name, consumed with its `{%`).
  Body ParseBody(std::initializer_list<const char*> stops, std::string& stopped_by) {
    const Nesting nesting = Enter();
    Body body;
    while (true) {
      const Token& tok = Peek();
      if (tok.type == Tok::kEof) {
        if (stops.size() == 0) return body;
        std::vector<std::string> names;
        for (const char* s : stops) names.push_back(absl::StrCat("'{% ", s, " %}'"));
        Fail(tok.pos, absl::StrCat("expected ", absl::StrJoin(names, " or "),
                                   ", found the end of the template"));
      }
      if (tok.type == Tok::kText) {
        auto n = NewNode(Node::Type::kText, tok.pos);
        n->text = tok.text;
        body.push_back(n);
        ++i_;
        continue;
      }
      if (tok.type == Tok::kVarBegin) {
        ++i_;
        auto n = NewNode(Node::Type::kOutput, tok.pos);
        n->expr = ParseTuple(true);
        if (Peek().type != Tok::kVarEnd) Expected("'}}'");
        ++i_;
        body.push_back(n);
        continue;
      }
      if (tok.type != Tok::kBlockBegin) Expected("template text, '{{' or '{%'");
      const Token& name = Peek(1);
      if (name.type != Tok::kName) {
        ++i_;
        Expected("a tag name");
      }
      for (const char* s : stops) {
        if (name.text == s) {
          i_ += 2;
          stopped_by = s;
          return body;
        }
      }
      i_ += 2;
      body.push_back(ParseStatement(name));
    }
  }

  NodeP ParseStatement(const Token& tag) {
    const std::string& kw = tag.text;
    auto node = NewNode(Node::Type::kText, tag.pos);
    std::string stop;
    if (kw == "if") {
      node->type = Node::Type::kIf;
      ExprP cond = ParseTuple(false);
      ExpectBlockEnd("if");
      while (true) {
        Body b = ParseBody({"elif", "else", "endif"}, stop);
        node->branches.emplace_back(cond, std::move(b));
        if (stop == "elif") {
          cond = ParseTuple(false);
          ExpectBlockEnd("elif");
        } else if (stop == "else") {
          ExpectBlockEnd("else");
          node->branches.emplace_back(nullptr, ParseBody({"endif"}, stop));
          ExpectBlockEnd("endif");
          break;
        } else {
          ExpectBlockEnd("endif");
          break;
        }
      }
    } else if (kw == "for") {
      node->type = Node::Type::kFor;
      node->target = ParseTarget(false);
      if (!IsName("in")) Expected("'in'");
      ++i_;
      node->expr = ParseTuple(false);
      if (IsName("if")) {
        ++i_;
        node->filter = ParseTuple(true);
      }
      if (IsName("recursive"))
        Fail(Peek().pos, "expected '%}', found 'recursive' (recursive loops are not supported)");
      ExpectBlockEnd("for");
      ++loop_depth_;
      node->body = ParseBody({"else", "endfor"}, stop);
      --loop_depth_;
      if (stop == "else") {
        ExpectBlockEnd("else");
        node->else_body = ParseBody({"endfor"}, stop);
      }
      ExpectBlockEnd("endfor");
    } else if (kw == "set") {
      node->target = ParseTarget(true);
      if (IsOp("=")) {
        ++i_;
        node->type = Node::Type::kSet;
        node->expr = ParseTuple(true);
        ExpectBlockEnd("set");
      } else {
        if (!node->target.attr.empty() || node->target.names.size() != 1) Expected("'='");
        if (Peek().type != Tok::kBlockEnd) Expected("'=' or '%}'");
        ++i_;
        node->type = Node::Type::kSetBlock;
        node->body = ParseBody({"endset"}, stop);
        ExpectBlockEnd("endset");
      }
    } else if (kw == "macro") {
      node->type = Node::Type::kMacro;
      node->text = ExpectName("a macro name");
      ExpectOp("(");
      while (!IsOp(")")) {
        std::string param = ExpectName("a parameter name");
        ExprP def;
        if (IsOp("=")) {
          ++i_;
          def = ParseExpression(true);
        }
        node->params.emplace_back(param, def);
        if (!IsOp(",")) break;
        ++i_;
      }
      ExpectOp(")");
      ExpectBlockEnd("macro");
      const int saved = loop_depth_;
      loop_depth_ = 0;
      node->body = ParseBody({"endmacro"}, stop);
      loop_depth_ = saved;
      if (Peek().type == Tok::kName) ++i_;
      ExpectBlockEnd("endmacro");
    } else if (kw == "break" || kw == "continue") {
      if (loop_depth_ == 0)
        Fail(tag.pos, absl::StrCat("expected '", kw, "' inside a for loop, found it outside one"));
      node->type = kw == "break" ? Node::Type::kBreak : Node::Type::kContinue;
      ExpectBlockEnd(kw);
    } else if (kw == "generation") {
      node->type = Node::Type::kGeneration;
      ExpectBlockEnd("generation");
      node->body = ParseBody({"endgeneration"}, stop);
      ExpectBlockEnd("endgeneration");
    } else {
      static const std::set<std::string, std::less<>> kUnsupported = {
          "filter", "call", "with",       "include", "import",    "from",  "extends",
          "block",  "raw",  "autoescape", "trans",   "pluralize", "endraw"};
      if (kUnsupported.count(kw)) {
        Fail(tag.pos, absl::StrCat("expected a supported tag, found '{% ", kw,
                                   " %}' (not supported by this Jinja subset)"));
      }
      Fail(tag.pos, absl::StrCat("expected a tag (if, for, set, macro, ...), found '", kw, "'"));
    }
    return node;
  }

  Target ParseTarget(bool allow_attr) {
    Target t;
    t.names.push_back(ExpectName("a variable name"));
    if (allow_attr && IsOp(".")) {
      ++i_;
      t.attr = ExpectName("an attribute name");
      return t;
    }
    while (IsOp(",")) {
      ++i_;
      t.names.push_back(ExpectName("a variable name"));
    }
    return t;
  }

  ExprP Make(Expr::Type type, Pos pos, std::vector<ExprP> args = {}, std::string name = "") {
    auto e = std::make_shared<Expr>();
    e->type = type;
    e->pos = pos;
    e->args = std::move(args);
    e->name = std::move(name);
    return e;
  }

  ExprP ParseTuple(bool with_condexpr) {
    const Pos pos = Peek().pos;
    ExprP first = ParseExpression(with_condexpr);
    if (!IsOp(",")) return first;
    std::vector<ExprP> items{first};
    while (IsOp(",")) {
      ++i_;
      if (AtTupleEnd()) break;
      items.push_back(ParseExpression(with_condexpr));
    }
    return Make(Expr::Type::kTuple, pos, std::move(items));
  }

  bool AtTupleEnd() const {
    const Token& t = Peek();
    return t.type == Tok::kVarEnd || t.type == Tok::kBlockEnd || IsOp(")") || IsName("in") ||
           IsName("if");
  }

  ExprP ParseExpression(bool with_condexpr) {
    ExprP e = ParseLevel(0);
    if (!with_condexpr) return e;
    while (IsName("if")) {
      const Pos pos = Next().pos;
      ExprP cond = ParseLevel(0);
      ExprP other;
      if (IsName("else")) {
        ++i_;
        other = ParseExpression(true);
      }
      e = Make(Expr::Type::kCond, pos, {cond, e, other});
    }
    return e;
  }

  // The left-associative binary operators, loosest first (jinja2's parse_or, parse_and,
  // parse_math1, parse_concat, parse_math2, parse_pow); `not` and the comparisons sit between
  // "and" and "+".
  ExprP ParseLevel(int level) {
    struct Level {
      std::vector<const char*> ops;
      bool words;
    };
    static const Level kLevels[] = {{{"or"}, true},
                                    {{"and"}, true},
                                    {{"+", "-"}, false},
                                    {{"~"}, false},
                                    {{"*", "/", "//", "%"}, false},
                                    {{"**"}, false}};
    auto operand = [&] {
      return level == 1 ? ParseNot() : level == 5 ? ParseUnary(true) : ParseLevel(level + 1);
    };
    ExprP e = operand();
    while (true) {
      const char* op = nullptr;
      for (const char* o : kLevels[level].ops) {
        if (kLevels[level].words ? IsName(o) : IsOp(o)) op = o;
      }
      if (op == nullptr) return e;
      const Pos pos = Next().pos;
      ExprP rhs = operand();
      const Expr::Type type = level == 0   ? Expr::Type::kOr
                              : level == 1 ? Expr::Type::kAnd
                                           : Expr::Type::kBinary;
      e = Make(type, pos, {e, rhs}, type == Expr::Type::kBinary ? op : "");
    }
  }

  ExprP ParseNot() {
    if (IsName("not")) {
      const Pos pos = Next().pos;
      return Make(Expr::Type::kNot, pos, {ParseNot()});
    }
    return ParseCompare();
  }

  ExprP ParseCompare() {
    const Pos pos = Peek().pos;
    ExprP first = ParseLevel(2);
    auto cmp = std::make_shared<Expr>();
    cmp->type = Expr::Type::kCompare;
    cmp->pos = pos;
    cmp->args.push_back(first);
    while (true) {
      std::string op;
      if (Peek().type == Tok::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
           Peek().text == "<=" || Peek().text == ">" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        ++i_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        break;
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(ParseLevel(2));
    }
    if (cmp->ops.empty()) return first;
    return cmp;
  }

  ExprP ParseUnary(bool with_filter) {
    const Nesting nesting = Enter();
    ExprP e;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      e = Make(t.text == "-" ? Expr::Type::kNeg : Expr::Type::kPos, t.pos, {ParseUnary(false)});
    } else {
      e = ParsePrimary();
    }
    e = ParsePostfix(e);
    if (with_filter) e = ParseFilterExpr(e);
    return e;
  }

  ExprP ParsePrimary() {
    const Token& t = Peek();
    auto lit = [&](Value v) {
      auto e = std::make_shared<Expr>();
      e->type = Expr::Type::kLiteral;
      e->pos = t.pos;
      e->literal = std::move(v);
      return e;
    };
    switch (t.type) {
      case Tok::kName: {
        ++i_;
        if (t.text == "true" || t.text == "True") return lit(Value::Bool(true));
        if (t.text == "false" || t.text == "False") return lit(Value::Bool(false));
        if (t.text == "none" || t.text == "None") return lit(Value::None());
        return Make(Expr::Type::kName, t.pos, {}, t.text);
      }
      case Tok::kString: {
        std::string s;
        const Pos pos = t.pos;
        while (Peek().type == Tok::kString) s += Next().text;  // adjacent strings concatenate
        auto e = std::make_shared<Expr>();
        e->type = Expr::Type::kLiteral;
        e->pos = pos;
        e->literal = Value::String(std::move(s));
        return e;
      }
      case Tok::kInt:
        ++i_;
        return lit(Value::Int(t.ival));
      case Tok::kFloat:
        ++i_;
        return lit(Value::Float(t.fval));
      case Tok::kOp:
        if (t.text == "(") {
          ++i_;
          if (IsOp(")")) {
            ++i_;
            return Make(Expr::Type::kTuple, t.pos);
          }
          ExprP e = ParseTuple(true);
          ExpectOp(")");
          return e;
        }
        if (t.text == "[") {
          ++i_;
          std::vector<ExprP> items;
          while (!IsOp("]")) {
            items.push_back(ParseExpression(true));
            if (!IsOp(",")) break;
            ++i_;
          }
          ExpectOp("]");
          return Make(Expr::Type::kList, t.pos, std::move(items));
        }
        if (t.text == "{") {
          ++i_;
          std::vector<ExprP> items;  // key, value, key, value, ...
          while (!IsOp("}")) {
            items.push_back(ParseExpression(true));
            ExpectOp(":");
            items.push_back(ParseExpression(true));
            if (!IsOp(",")) break;
            ++i_;
          }
          ExpectOp("}");
          return Make(Expr::Type::kDict, t.pos, std::move(items));
        }
        break;
      default:
        break;
    }
    Expected("an expression");
  }

  ExprP ParsePostfix(ExprP e) {
    while (true) {
      if (IsOp(".")) {
        const Pos pos = Next().pos;
        if (Peek().type == Tok::kName) {
          e = Make(Expr::Type::kAttr, pos, {e}, Next().text);
        } else if (Peek().type == Tok::kInt) {
          auto idx = std::make_shared<Expr>();
          idx->type = Expr::Type::kLiteral;
          idx->pos = Peek().pos;
          idx->literal = Value::Int(Next().ival);
          e = Make(Expr::Type::kItem, pos, {e, idx});
        } else {
          Expected("an attribute name");
        }
      } else if (IsOp("[")) {
        const Pos pos = Next().pos;
        ExprP parts[3];
        bool slice = false;
        int k = 0;
        while (true) {
          if (!IsOp(":") && !IsOp("]")) parts[k] = ParseExpression(true);
          if (IsOp(":") && k < 2) {
            ++i_;
            slice = true;
            ++k;
            continue;
          }
          break;
        }
        if (IsOp(","))
          Fail(Peek().pos, "expected ']', found ',' (tuple subscripts are not supported)");
        ExpectOp("]");
        if (slice) {
          e = Make(Expr::Type::kSlice, pos, {e, parts[0], parts[1], parts[2]});
        } else {
          if (!parts[0]) Fail(pos, "expected a subscript, found '[]'");
          e = Make(Expr::Type::kItem, pos, {e, parts[0]});
        }
      } else if (IsOp("(")) {
        e = ParseCall(e);
      } else {
        return e;
      }
    }
  }

  // Parses `(args)` into a kCall node whose first operand is `callee`.
  ExprP ParseCall(ExprP callee) {
    const Pos pos = callee->pos;
    auto call = std::make_shared<Expr>();
    call->type = Expr::Type::kCall;
    call->pos = pos;
    call->args.push_back(std::move(callee));
    ParseArgs(*call);
    return call;
  }

  void ParseArgs(Expr& into) {
    ExpectOp("(");
    while (!IsOp(")")) {
      if (IsOp("*") || IsOp("**"))
        Fail(Peek().pos, "expected an argument, found '*' (argument unpacking is not supported)");
      if (Peek().type == Tok::kName && IsOp("=", 1)) {
        std::string key = Next().text;
        ++i_;
        into.kwargs.emplace_back(key, ParseExpression(true));
      } else {
        if (!into.kwargs.empty()) Expected("a keyword argument (positional ones come first)");
        into.args.push_back(ParseExpression(true));
      }
      if (!IsOp(",")) break;
      ++i_;
    }
    ExpectOp(")");
  }

  ExprP ParseFilterExpr(ExprP e) {
    while (true) {
      if (IsOp("|")) {
        ++i_;
        const Token& name = Peek();
        if (name.type != Tok::kName) Expected("a filter name");
        ++i_;
        if (!KnownFilters().count(name.text)) {
          Fail(name.pos, absl::StrCat("expected a supported filter, found '", name.text, "'"));
        }
        auto f = std::make_shared<Expr>();
        f->type = Expr::Type::kFilter;
        f->pos = name.pos;
        f->name = name.text;
        f->args.push_back(e);
        if (IsOp("(")) ParseArgs(*f);
        e = f;
      } else if (IsName("is")) {
        ++i_;
        auto t = std::make_shared<Expr>();
        t->type = Expr::Type::kTest;
        if (IsName("not")) {
          ++i_;
          t->negated = true;
        }
        const Token& name = Peek();
        if (name.type != Tok::kName) Expected("a test name");
        ++i_;
        if (!KnownTests().count(name.text)) {
          Fail(name.pos, absl::StrCat("expected a supported test, found '", name.text, "'"));
        }
        t->pos = name.pos;
        t->name = name.text;
        t->args.push_back(e);
        if (IsOp("(")) {
          ParseArgs(*t);
        } else {
          const Token& n = Peek();
          const bool arg =
              n.type == Tok::kString || n.type == Tok::kInt || n.type == Tok::kFloat || IsOp("[") ||
              IsOp("{") ||
              (n.type == Tok::kName && n.text != "else" && n.text != "or" && n.text != "and");
          if (arg) {
            if (IsName("is"))
              Fail(n.pos, "expected the end of a test, found a second 'is' (tests do not chain)");
            t->args.push_back(ParsePostfix(ParsePrimary()));
          }
        }
        e = t;
      } else if (IsOp("(")) {
        e = ParseCall(e);
      } else {
        return e;
      }
    }
  }

  // Bounds the recursion of the parser (and so of the renderer) on hostile templates.
  struct Nesting {
    int& depth;
    ~Nesting() { --depth; }
  };
  Nesting Enter() {
    if (++depth_ > 200) Fail(Peek().pos, "expected expressions and tags nested at most 200 deep");
    return Nesting{depth_};
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int loop_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

struct Template::Impl {
  std::string origin;
  Body body;
};

namespace {

// ---------------------------------------------------------------------------------------------
// Evaluation.

struct RaiseError {
  Pos pos;
  std::string message;
};

using Scope = std::map<std::string, Value, std::less<>>;

// What one render may spend: bounds for templates that would loop or grow without end.
constexpr int64_t kMaxSize = int64_t{1} << 26;  // bytes of output, items of a repetition
constexpr int64_t kMaxIterations = 100000;      // loop iterations and macro calls
constexpr size_t kMaxItems = size_t{1} << 20;   // of a list built by the template

struct Budget {
  int64_t iterations = 0;
  // The namespaces made, emptied when the render ends: a namespace can hold itself.
  std::vector<std::shared_ptr<Dict>> namespaces;
};

// A computed string or list within the bounds.
Value Bounded(Value v, Pos pos) {
  if (v.is(Kind::kString) && v.str().size() > static_cast<size_t>(kMaxSize)) {
    Fail(pos,
         absl::StrCat("expected a string of at most ", kMaxSize, " bytes, found ", v.str().size()));
  }
  if (v.is(Kind::kList) && v.list().size() > kMaxItems) {
    Fail(pos,
         absl::StrCat("expected a list of at most ", kMaxItems, " items, found ", v.list().size()));
  }
  return v;
}

class Renderer {
 public:
  Renderer(const RenderOptions& options, std::vector<std::shared_ptr<Scope>> scopes, Budget* budget)
      : options_(options), scopes_(std::move(scopes)), budget_(budget) {}

  enum class Flow { kNormal, kBreak, kContinue };

  Flow Exec(const Body& body, std::string& out) {
    for (const NodeP& n : body) {
      const Flow f = ExecNode(*n, out);
      if (out.size() > static_cast<size_t>(kMaxSize))
        Fail(n->pos, absl::StrCat("expected at most ", kMaxSize, " bytes of output"));
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

 private:
  Flow ExecNode(const Node& n, std::string& out) {
    switch (n.type) {
      case Node::Type::kText:
        out += n.text;
        return Flow::kNormal;
      case Node::Type::kOutput:
        out += ToStr(Eval(*n.expr), n.expr->pos);
        return Flow::kNormal;
      case Node::Type::kIf:
        for (const auto& [cond, body] : n.branches) {
          if (cond == nullptr || Truthy(Eval(*cond))) return Exec(body, out);
        }
        return Flow::kNormal;
      case Node::Type::kFor:
        return ExecFor(n, out);
      case Node::Type::kSet:
        Assign(n.target, Eval(*n.expr), n.pos);
        return Flow::kNormal;
      case Node::Type::kSetBlock: {
        std::string s;
        Exec(n.body, s);
        Assign(n.target, Value::String(std::move(s)), n.pos);
        return Flow::kNormal;
      }
      case Node::Type::kMacro:
        DefineMacro(n);
        return Flow::kNormal;
      case Node::Type::kBreak:
        return Flow::kBreak;
      case Node::Type::kContinue:
        return Flow::kContinue;
      case Node::Type::kGeneration:
        return Exec(n.body, out);
    }
    return Flow::kNormal;
  }

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = (*it)->find(name);
      if (f != (*it)->end()) return f->second;
    }
    return Value::Undefined(name);
  }

  void Assign(const Target& t, Value v, Pos pos) {
    Scope& scope = *scopes_.back();
    if (!t.attr.empty()) {
      Value ns = Lookup(t.names[0]);
      if (!ns.is(Kind::kNamespace)) {
        Fail(pos, absl::StrCat("expected a namespace() object to set '", t.names[0], ".", t.attr,
                               "', found ", ns.undefined() ? "an undefined name" : TypeName(ns)));
      }
      ns.dict().Set(t.attr, std::move(v));
      return;
    }
    if (t.names.size() == 1) {
      scope[t.names[0]] = std::move(v);
      return;
    }
    List items = Iterate(v, pos);
    if (items.size() != t.names.size()) {
      Fail(pos,
           absl::StrCat("expected ", t.names.size(), " values to unpack, found ", items.size()));
    }
    for (size_t i = 0; i < items.size(); ++i) scope[t.names[i]] = items[i];
  }

  Flow ExecFor(const Node& n, std::string& out) {
    List all = Iterate(Eval(*n.expr), n.expr->pos);
    if (n.filter) {
      List kept;
      for (Value& item : all) {
        scopes_.push_back(std::make_shared<Scope>());
        Assign(n.target, item, n.pos);
        const bool keep = Truthy(Eval(*n.filter));
        scopes_.pop_back();
        if (keep) kept.push_back(std::move(item));
      }
      all = std::move(kept);
    }
    if (all.empty()) {
      scopes_.push_back(std::make_shared<Scope>());
      Exec(n.else_body, out);
      scopes_.pop_back();
      return Flow::kNormal;
    }
    // One loop object per loop, updated in place as jinja2's LoopContext advances; one scope,
    // emptied for each iteration.
    const int64_t len = static_cast<int64_t>(all.size());
    auto loop = std::make_shared<Dict>();
    for (const char* key : {"index", "index0", "revindex", "revindex0", "first", "last", "length",
                            "previtem", "nextitem"}) {
      loop->entries.emplace_back(key, Value());
    }
    auto scope = std::make_shared<Scope>();
    scopes_.push_back(scope);
    for (int64_t i = 0; i < len; ++i) {
      if (++budget_->iterations > kMaxIterations) {
        Fail(n.pos, absl::StrCat("expected at most ", kMaxIterations,
                                 " loop iterations and macro calls in a render"));
      }
      auto& e = loop->entries;
      e[0].second = Value::Int(i + 1);
      e[1].second = Value::Int(i);
      e[2].second = Value::Int(len - i);
      e[3].second = Value::Int(len - i - 1);
      e[4].second = Value::Bool(i == 0);
      e[5].second = Value::Bool(i == len - 1);
      e[6].second = Value::Int(len);
      e[7].second = i > 0 ? all[i - 1] : Value::Undefined("loop.previtem");
      e[8].second = i + 1 < len ? all[i + 1] : Value::Undefined("loop.nextitem");
      scope->clear();
      (*scope)["loop"] = Value::MakeDict(loop, Kind::kLoop);
      Assign(n.target, all[i], n.pos);
      const Flow f = Exec(n.body, out);
      if (f == Flow::kBreak) break;
    }
    scopes_.pop_back();
    return Flow::kNormal;
  }

  void DefineMacro(const Node& n) {
    const Node* node = &n;
    const RenderOptions* options = &options_;
    std::vector<std::shared_ptr<Scope>> base(scopes_.begin(), scopes_.begin() + 2);
    Budget* budget = budget_;
    (*scopes_.back())[n.text] = Value::MakeFunction(
        n.text, [node, options, base, budget](Pos pos, std::vector<Value>& args, KwArgs& kwargs) {
          if (args.size() > node->params.size()) {
            Fail(pos, absl::StrCat("macro '", node->text, "' takes at most ", node->params.size(),
                                   " arguments, found ", args.size()));
          }
          static thread_local int calls = 0;
          if (calls >= 100) Fail(pos, "expected macro calls nested at most 100 deep");
          if (++budget->iterations > kMaxIterations) {
            Fail(pos, absl::StrCat("expected at most ", kMaxIterations,
                                   " loop iterations and macro calls in a render"));
          }
          ++calls;
          struct Leave {
            ~Leave() { --calls; }
          } leave;
          auto scope = std::make_shared<Scope>();
          std::vector<std::shared_ptr<Scope>> scopes = base;
          scopes.push_back(scope);
          Renderer inner(*options, scopes, budget);
          for (size_t i = 0; i < node->params.size(); ++i) {
            const auto& [name, def] = node->params[i];
            Value v = i < args.size() ? args[i] : Value::Undefined(name);
            for (auto& [k, kv] : kwargs) {
              if (k == name) v = kv;
            }
            if (v.undefined() && i >= args.size() && def) v = inner.Eval(*def);
            (*scope)[name] = v;
          }
          for (auto& [k, kv] : kwargs) {
            bool known = false;
            for (const auto& p : node->params) known |= p.first == k;
            if (!known)
              Fail(pos, absl::StrCat("macro '", node->text, "' has no parameter '", k, "'"));
          }
          std::string out;
          inner.Exec(node->body, out);
          return Value::String(std::move(out));
        });
  }

 public:
  Value Eval(const Expr& e) {
    switch (e.type) {
      case Expr::Type::kLiteral:
        return e.literal;
      case Expr::Type::kName:
        return Lookup(e.name);
      case Expr::Type::kAttr:
        return GetAttr(Eval(*e.args[0]), e.name, e.pos);
      case Expr::Type::kItem:
        return GetItem(Eval(*e.args[0]), Eval(*e.args[1]), e.pos);
      case Expr::Type::kSlice:
        return EvalSlice(e);
      case Expr::Type::kCall: {
        Value callee = Eval(*e.args[0]);
        std::vector<Value> args;
        for (size_t i = 1; i < e.args.size(); ++i) args.push_back(Eval(*e.args[i]));
        KwArgs kwargs;
        for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, Eval(*v));
        if (callee.undefined()) FailUndefined(callee, e.pos);
        if (!callee.is(Kind::kFunction))
          Fail(e.pos, absl::StrCat("'", TypeName(callee), "' object is not callable"));
        return Bounded(callee.function()(e.pos, args, kwargs), e.pos);
      }
      case Expr::Type::kFilter:
        return Bounded(EvalFilter(e), e.pos);
      case Expr::Type::kTest: {
        const bool r = EvalTest(e.name, Eval(*e.args[0]), EvalArgs(e), e.pos);
        return Value::Bool(r != e.negated);
      }
      case Expr::Type::kNeg:
      case Expr::Type::kPos: {
        Value v = Eval(*e.args[0]);
        if (v.undefined()) FailUndefined(v, e.pos);
        if (!v.number())
          Fail(e.pos,
               absl::StrCat("bad operand type for unary ", e.type == Expr::Type::kNeg ? "-" : "+",
                            ": '", TypeName(v), "'"));
        if (e.type == Expr::Type::kPos) return v.integral() ? Value::Int(v.integer()) : v;
        if (v.integral() && v.integer() == std::numeric_limits<int64_t>::min()) {
          Fail(e.pos, "integer overflow in unary - (Python's big integers are not supported)");
        }
        return v.integral() ? Value::Int(-v.integer()) : Value::Float(-v.real());
      }
      case Expr::Type::kNot:
        return Value::Bool(!Truthy(Eval(*e.args[0])));
      case Expr::Type::kAnd: {
        Value a = Eval(*e.args[0]);
        return Truthy(a) ? Eval(*e.args[1]) : a;
      }
      case Expr::Type::kOr: {
        Value a = Eval(*e.args[0]);
        return Truthy(a) ? a : Eval(*e.args[1]);
      }
      case Expr::Type::kBinary:
        return Bounded(Arith(e.name, Eval(*e.args[0]), Eval(*e.args[1]), e.pos), e.pos);
      case Expr::Type::kCompare: {
        Value left = Eval(*e.args[0]);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = Eval(*e.args[i + 1]);
          if (!CompareOp(e.ops[i], left, right, e.args[i + 1]->pos)) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case Expr::Type::kCond:
        if (Truthy(Eval(*e.args[0]))) return Eval(*e.args[1]);
        return e.args[2] ? Eval(*e.args[2]) : Value::Undefined("if-expression without else");
      case Expr::Type::kList:
      case Expr::Type::kTuple: {
        List items;
        for (const ExprP& a : e.args) items.push_back(Eval(*a));
        return Value::MakeList(std::move(items),
                               e.type == Expr::Type::kTuple ? Seq::kTuple : Seq::kList);
      }
      case Expr::Type::kDict: {
        auto d = std::make_shared<Dict>();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = Eval(*e.args[i]);
          if (!k.is(Kind::kString))
            Fail(e.args[i]->pos, absl::StrCat("expected a string dict key, found a ", TypeName(k)));
          d->Set(k.str(), Eval(*e.args[i + 1]));
        }
        return Value::MakeDict(std::move(d));
      }
    }
    return Value();
  }

 private:
  std::vector<Value> EvalArgs(const Expr& e) {
    std::vector<Value> args;
    for (size_t i = 1; i < e.args.size(); ++i) args.push_back(Eval(*e.args[i]));
    return args;
  }

  bool CompareOp(const std::string& op, const Value& a, const Value& b, Pos pos) {
    if (op == "==") return Equal(a, b);
    if (op == "!=") return !Equal(a, b);
    if (op == "in") return Contains(b, a, pos);
    if (op == "not in") return !Contains(b, a, pos);
    const int c = Compare(a, b, op.c_str(), pos);
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    return c >= 0;
  }

  static bool Contains(const Value& container, const Value& item, Pos pos) {
    switch (container.kind()) {
      case Kind::kUndefined:
        return false;  // iterates as empty
      case Kind::kString:
        if (!item.is(Kind::kString)) {
          Fail(pos, absl::StrCat("'in <string>' requires a string as left operand, found ",
                                 TypeName(item)));
        }
        return container.str().find(item.str()) != std::string::npos;
      case Kind::kList:
        for (const Value& v : container.list()) {
          if (Equal(v, item)) return true;
        }
        return false;
      case Kind::kDict:
        return item.is(Kind::kString) && container.dict().Find(item.str()) != nullptr;
      default:
        Fail(pos, absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
    }
  }

 public:
  static List Iterate(const Value& v, Pos pos) {
    switch (v.kind()) {
      case Kind::kUndefined:
        return {};
      case Kind::kList:
        return v.list();
      case Kind::kDict: {
        List keys;
        for (const auto& [k, _] : v.dict().entries) keys.push_back(Value::String(k));
        return keys;
      }
      case Kind::kString: {
        List chars;
        for (uint32_t cp : CodePoints(v.str())) {
          std::string s;
          AppendCodePoint(s, cp);
          chars.push_back(Value::String(std::move(s)));
        }
        return chars;
      }
      default:
        Fail(pos, absl::StrCat("'", TypeName(v), "' object is not iterable"));
    }
  }

 private:
  static Value Arith(const std::string& op, const Value& a, const Value& b, Pos pos) {
    if (op == "~") return Value::String(ToStr(a, pos) + ToStr(b, pos));
    if (a.undefined()) FailUndefined(a, pos);
    if (b.undefined()) FailUndefined(b, pos);
    auto unsupported = [&]() -> Value {
      Fail(pos, absl::StrCat("unsupported operand types for ", op, ": '", TypeName(a), "' and '",
                             TypeName(b), "'"));
    };
    if (a.number() && b.number()) {
      const bool ints = a.integral() && b.integral();
      const int64_t x = a.integer(), y = b.integer();
      const double fx = a.real(), fy = b.real();
      int64_t r = 0;
      auto overflow = [&]() -> Value {
        Fail(pos, absl::StrCat("integer overflow in ", x, " ", op, " ", y,
                               " (Python's big integers are not supported)"));
      };
      if (op == "+") {
        if (!ints) return Value::Float(fx + fy);
        return __builtin_add_overflow(x, y, &r) ? overflow() : Value::Int(r);
      }
      if (op == "-") {
        if (!ints) return Value::Float(fx - fy);
        return __builtin_sub_overflow(x, y, &r) ? overflow() : Value::Int(r);
      }
      if (op == "*") {
        if (!ints) return Value::Float(fx * fy);
        return __builtin_mul_overflow(x, y, &r) ? overflow() : Value::Int(r);
      }
      if ((op == "/" || op == "//" || op == "%") && (ints ? y == 0 : fy == 0))
        Fail(pos, "division by zero");
      if (ints && y == -1 && x == std::numeric_limits<int64_t>::min() && op != "/") overflow();
      if (op == "/") return Value::Float(fx / fy);
      if (op == "//") {
        if (ints) return Value::Int(x / y - ((x % y != 0) && ((x < 0) != (y < 0))));
        return Value::Float(std::floor(fx / fy));
      }
      if (op == "%") {
        if (ints) {
          int64_t r = x % y;
          if (r != 0 && ((r < 0) != (y < 0))) r += y;
          return Value::Int(r);
        }
        double r = std::fmod(fx, fy);
        if (r != 0 && ((r < 0) != (fy < 0))) r += fy;
        return Value::Float(r);
      }
      if (op == "**") {
        if (ints && y >= 0) {
          if (x == 0 || x == 1) return Value::Int(y == 0 ? 1 : x);
          if (x == -1) return Value::Int(y % 2 == 0 ? 1 : -1);
          r = 1;
          for (int64_t k = 0; k < y; ++k) {  // |x| >= 2 overflows within 64 steps
            if (__builtin_mul_overflow(r, x, &r)) overflow();
          }
          return Value::Int(r);
        }
        return Value::Float(std::pow(fx, fy));
      }
      return unsupported();
    }
    if (op == "+" && a.is(Kind::kString) && b.is(Kind::kString))
      return Value::String(a.str() + b.str());
    if (op == "+" && a.is(Kind::kList) && b.is(Kind::kList) && a.plain() && a.seq() == b.seq()) {
      List items = a.list();
      items.insert(items.end(), b.list().begin(), b.list().end());
      return Value::MakeList(std::move(items), a.seq());
    }
    if (op == "*" && (a.is(Kind::kString) || (a.is(Kind::kList) && a.plain())) && b.integral()) {
      const double size = a.is(Kind::kString) ? a.str().size() : a.list().size();
      if (size * static_cast<double>(b.integer()) > static_cast<double>(kMaxSize)) {
        Fail(pos, absl::StrCat("expected a repetition of at most ", kMaxSize, " items, found ",
                               size, " * ", b.integer()));
      }
      if (a.is(Kind::kString)) {
        std::string s;
        s.reserve(a.str().size() * std::max<int64_t>(0, b.integer()));
        for (int64_t k = 0; k < b.integer(); ++k) s += a.str();
        return Value::String(s);
      }
      List items;
      for (int64_t k = 0; k < b.integer(); ++k)
        items.insert(items.end(), a.list().begin(), a.list().end());
      return Value::MakeList(std::move(items), a.seq());
    }
    if (op == "%" && a.is(Kind::kString)) Fail(pos, "string formatting with '%' is not supported");
    return unsupported();
  }

  Value EvalSlice(const Expr& e) {
    Value obj = Eval(*e.args[0]);
    std::optional<int64_t> idx[3];
    for (int k = 0; k < 3; ++k) {
      if (!e.args[k + 1]) continue;
      Value v = Eval(*e.args[k + 1]);
      if (v.is(Kind::kNone)) continue;
      if (!v.integral())
        Fail(e.args[k + 1]->pos,
             absl::StrCat("expected an integer slice index, found ", TypeName(v)));
      idx[k] = v.integer();
    }
    const int64_t step = idx[2].value_or(1);
    if (step == 0) Fail(e.pos, "slice step cannot be zero");
    if (obj.undefined()) FailUndefined(obj, e.pos);
    std::vector<uint32_t> cps;
    int64_t n;
    if (obj.is(Kind::kString)) {
      cps = CodePoints(obj.str());
      n = static_cast<int64_t>(cps.size());
    } else if (obj.is(Kind::kList) && (obj.plain() || obj.seq() == Seq::kRange)) {
      n = static_cast<int64_t>(obj.list().size());
    } else if (obj.is(Kind::kList)) {
      return Value::Undefined(absl::StrCat("a slice of a ", TypeName(obj)));
    } else {
      Fail(e.pos, absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
    }
    // Python's slice.indices.
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = clamp(idx[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(idx[1], step > 0 ? n : -1);
    std::vector<int64_t> picks;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picks.push_back(i);
    if (obj.is(Kind::kString)) {
      std::string s;
      for (int64_t i : picks) AppendCodePoint(s, cps[i]);
      return Value::String(s);
    }
    List items;
    for (int64_t i : picks) items.push_back(obj.list()[i]);
    return Value::MakeList(std::move(items), obj.seq());
  }

 public:
  static Value GetItem(const Value& obj, const Value& key, Pos pos) {
    if (obj.undefined()) FailUndefined(obj, pos);
    if (obj.is(Kind::kDict) && key.is(Kind::kString)) {
      const Value* v = obj.dict().Find(key.str());
      return v ? *v : Value::Undefined(key.str());
    }
    if (obj.is(Kind::kList) && !obj.plain() && obj.seq() != Seq::kRange) {
      return Value::Undefined(absl::StrCat("an item of a ", TypeName(obj)));
    }
    if ((obj.is(Kind::kList) || obj.is(Kind::kString)) && key.integral()) {
      int64_t i = key.integer();
      if (obj.is(Kind::kList)) {
        const int64_t n = static_cast<int64_t>(obj.list().size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::Undefined(absl::StrCat("index ", key.integer()));
        return obj.list()[i];
      }
      const std::vector<uint32_t> cps = CodePoints(obj.str());
      const int64_t n = static_cast<int64_t>(cps.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::Undefined(absl::StrCat("index ", key.integer()));
      return Value::String(FromCodePoints(cps, i, i + 1));
    }
    if (key.is(Kind::kString)) return GetAttr(obj, key.str(), pos);
    return Value::Undefined(ToStr(key, pos));
  }

  static Value GetAttr(const Value& obj, const std::string& name, Pos pos);

 private:
  Value EvalFilter(const Expr& e);
  bool EvalTest(const std::string& name, const Value& v, const std::vector<Value>& args, Pos pos);

  const RenderOptions& options_;
  std::vector<std::shared_ptr<Scope>> scopes_;
  Budget* budget_;
};

// ---------------------------------------------------------------------------------------------
// Methods of strings and dicts.

std::optional<std::vector<uint32_t>> OptChars(const std::vector<Value>& args, Pos pos,
                                              const char* method) {
  if (args.empty() || args[0].is(Kind::kNone)) return std::nullopt;
  if (!args[0].is(Kind::kString))
    Fail(pos, absl::StrCat(method, ": expected a string argument, found ", TypeName(args[0])));
  return CodePoints(args[0].str());
}

void ExpectArgs(const std::vector<Value>& args, const KwArgs& kwargs, size_t lo, size_t hi, Pos pos,
                const std::string& name) {
  if (!kwargs.empty())
    Fail(pos, absl::StrCat(name, ": expected no keyword arguments, found '", kwargs[0].first, "'"));
  if (args.size() < lo || args.size() > hi) {
    Fail(pos, absl::StrCat(name, ": expected ",
                           lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, " to ", hi),
                           " arguments, found ", args.size()));
  }
}

const std::string& StrArg(const Value& v, Pos pos, const std::string& name) {
  if (!v.is(Kind::kString))
    Fail(pos, absl::StrCat(name, ": expected a string argument, found ", TypeName(v)));
  return v.str();
}

std::string AsciiCase(const std::string& s, bool upper, Pos pos, const char* what) {
  std::string out = s;
  for (char& c : out) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      Fail(pos, absl::StrCat(what, " of non-ASCII text is not supported"));
    }
    c = upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
              : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

List Split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right, Pos pos) {
  List parts;
  if (sep == nullptr || sep->is(Kind::kNone)) {
    // Runs of whitespace, none at the ends.
    std::vector<uint32_t> cps = CodePoints(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && IsSpace(cps[i])) ++i;
      if (i == cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !IsSpace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    if (maxsplit >= 0 && static_cast<int64_t>(words.size()) >= maxsplit + 1) {
      // The last piece is the rest of the text, its whitespace on the far side kept.
      if (!from_right) {
        words[maxsplit].second = cps.size();
        words.resize(maxsplit + 1);
      } else {
        const size_t keep = words.size() - maxsplit - 1;
        words[keep].first = 0;
        words.erase(words.begin(), words.begin() + keep);
      }
    }
    for (auto [b, e] : words) parts.push_back(Value::String(FromCodePoints(cps, b, e)));
    return parts;
  }
  const std::string& d = StrArg(*sep, pos, "split");
  if (d.empty()) Fail(pos, "split: empty separator");
  std::vector<std::string> out;
  if (!from_right) {
    size_t start = 0, at;
    while ((maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) &&
           (at = s.find(d, start)) != std::string::npos) {
      out.push_back(s.substr(start, at - start));
      start = at + d.size();
    }
    out.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    std::vector<std::string> rev;
    while (maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) {
      if (end < d.size()) break;
      const size_t at = s.rfind(d, end - d.size());
      if (at == std::string::npos) break;
      rev.push_back(s.substr(at + d.size(), end - at - d.size()));
      end = at;
    }
    rev.push_back(s.substr(0, end));
    out.assign(rev.rbegin(), rev.rend());
  }
  for (std::string& p : out) parts.push_back(Value::String(std::move(p)));
  return parts;
}

int64_t CountCodePoints(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

Value StringMethod(const Value& self, const std::string& name, Pos pos) {
  static const std::set<std::string, std::less<>> kMethods = {
      "startswith", "endswith", "strip", "lstrip", "rstrip", "split",        "rsplit",
      "replace",    "upper",    "lower", "find",   "count",  "removeprefix", "removesuffix"};
  static const std::set<std::string, std::less<>> kPython = {
      "capitalize", "casefold",     "center",  "encode",     "expandtabs",  "format",
      "format_map", "index",        "isalnum", "isalpha",    "isascii",     "isdecimal",
      "isdigit",    "isidentifier", "islower", "isnumeric",  "isprintable", "isspace",
      "istitle",    "isupper",      "join",    "ljust",      "maketrans",   "partition",
      "rfind",      "rindex",       "rjust",   "rpartition", "splitlines",  "swapcase",
      "title",      "translate",    "zfill"};
  if (kPython.count(name))
    Fail(pos, absl::StrCat("the string method '", name, "' is not supported"));
  if (!kMethods.count(name)) return Value::Undefined(name);
  const std::string s = self.str();
  return Value::MakeFunction(
      name, [s, name](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
        const std::string where = "str." + name;
        if (name == "startswith" || name == "endswith") {
          ExpectArgs(args, kwargs, 1, 1, pos, where);
          std::vector<std::string> options;
          if (args[0].is(Kind::kList) && args[0].tuple()) {
            for (const Value& o : args[0].list()) options.push_back(StrArg(o, pos, where));
          } else {
            options.push_back(StrArg(args[0], pos, where));
          }
          for (const std::string& o : options) {
            if (o.size() <= s.size() &&
                (name == "startswith" ? s.compare(0, o.size(), o) == 0
                                      : s.compare(s.size() - o.size(), o.size(), o) == 0)) {
              return Value::Bool(true);
            }
          }
          return Value::Bool(false);
        }
        if (name == "strip" || name == "lstrip" || name == "rstrip") {
          ExpectArgs(args, kwargs, 0, 1, pos, where);
          auto chars = OptChars(args, pos, where.c_str());
          return Value::String(
              Strip(s, chars ? &*chars : nullptr, name != "rstrip", name != "lstrip"));
        }
        if (name == "split" || name == "rsplit") {
          const Value* sep = args.empty() ? nullptr : &args[0];
          int64_t maxsplit = -1;
          Value kw_sep;
          for (auto& [k, v] : kwargs) {
            if (k == "sep") {
              kw_sep = v;
              sep = &kw_sep;
            } else if (k == "maxsplit" && v.integral()) {
              maxsplit = v.integer();
            } else {
              Fail(pos, absl::StrCat(where, ": unexpected keyword argument '", k, "'"));
            }
          }
          if (args.size() > 2)
            Fail(pos, absl::StrCat(where, ": expected at most 2 arguments, found ", args.size()));
          if (args.size() == 2) {
            if (!args[1].integral())
              Fail(pos, absl::StrCat(where, ": expected an integer maxsplit"));
            maxsplit = args[1].integer();
          }
          return Value::MakeList(Split(s, sep, maxsplit, name == "rsplit", pos));
        }
        if (name == "replace") {
          ExpectArgs(args, kwargs, 2, 3, pos, where);
          const std::string& from = StrArg(args[0], pos, where);
          const std::string& to = StrArg(args[1], pos, where);
          int64_t count = args.size() == 3 && args[2].integral() ? args[2].integer() : -1;
          std::string out;
          if (from.empty()) {
            // Python inserts `to` around every code point.
            const std::vector<uint32_t> cps = CodePoints(s);
            for (size_t i = 0; i <= cps.size(); ++i) {
              if (count < 0 || static_cast<int64_t>(i) < count) out += to;
              if (i < cps.size()) AppendCodePoint(out, cps[i]);
            }
            return Value::String(out);
          }
          size_t start = 0, at;
          while (count != 0 && (at = s.find(from, start)) != std::string::npos) {
            out += s.substr(start, at - start) + to;
            start = at + from.size();
            if (count > 0) --count;
          }
          return Value::String(out + s.substr(start));
        }
        if (name == "upper" || name == "lower") {
          ExpectArgs(args, kwargs, 0, 0, pos, where);
          return Value::String(AsciiCase(s, name == "upper", pos, where.c_str()));
        }
        if (name == "find" || name == "count") {
          ExpectArgs(args, kwargs, 1, 1, pos, where);
          const std::string& sub = StrArg(args[0], pos, where);
          if (name == "find") {
            const size_t at = s.find(sub);
            return Value::Int(
                at == std::string::npos ? -1 : CountCodePoints(std::string_view(s).substr(0, at)));
          }
          if (sub.empty()) return Value::Int(CountCodePoints(s) + 1);
          int64_t n = 0;
          for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size()))
            ++n;
          return Value::Int(n);
        }
        // removeprefix / removesuffix
        ExpectArgs(args, kwargs, 1, 1, pos, where);
        const std::string& a = StrArg(args[0], pos, where);
        if (name == "removeprefix")
          return Value::String(s.compare(0, a.size(), a) == 0 ? s.substr(a.size()) : s);
        if (a.size() <= s.size() && s.compare(s.size() - a.size(), a.size(), a) == 0) {
          return Value::String(s.substr(0, s.size() - a.size()));
        }
        return Value::String(s);
      });
}

Value DictItems(const Dict& d) {
  List items;
  for (const auto& [k, v] : d.entries)
    items.push_back(Value::MakeList({Value::String(k), v}, Seq::kTuple));
  return Value::MakeList(std::move(items), Seq::kDictItems);
}

Value DictMethod(const Value& self, const std::string& name, Pos pos) {
  if (name == "pop" || name == "popitem" || name == "update" || name == "setdefault" ||
      name == "clear" || name == "copy" || name == "fromkeys") {
    Fail(pos, absl::StrCat("the dict method '", name, "' is not supported"));
  }
  if (name != "items" && name != "keys" && name != "values" && name != "get") return Value();
  return Value::MakeFunction(
      name, [self, name](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
        const Dict& d = self.dict();
        if (name == "get") {
          ExpectArgs(args, kwargs, 1, 2, pos, "dict.get");
          const Value* v = args[0].is(Kind::kString) ? d.Find(args[0].str()) : nullptr;
          if (v) return *v;
          return args.size() == 2 ? args[1] : Value::None();
        }
        ExpectArgs(args, kwargs, 0, 0, pos, "dict." + name);
        if (name == "items") return DictItems(d);
        List out;
        for (const auto& [k, v] : d.entries) out.push_back(name == "keys" ? Value::String(k) : v);
        return Value::MakeList(std::move(out), name == "keys" ? Seq::kDictKeys : Seq::kDictValues);
      });
}

Value Renderer::GetAttr(const Value& obj, const std::string& name, Pos pos) {
  switch (obj.kind()) {
    case Kind::kUndefined:
      FailUndefined(obj, pos);
    case Kind::kDict: {
      Value m = DictMethod(obj, name, pos);
      if (!m.undefined()) return m;
      const Value* v = obj.dict().Find(name);
      return v ? *v : Value::Undefined(name);
    }
    case Kind::kNamespace: {
      const Value* v = obj.dict().Find(name);
      return v ? *v : Value::Undefined(name);
    }
    case Kind::kLoop: {
      const Value* v = obj.dict().Find(name);
      if (v) return *v;
      if (name == "cycle" || name == "depth" || name == "depth0" || name == "changed") {
        Fail(pos, absl::StrCat("loop.", name, " is not supported"));
      }
      return Value::Undefined("loop." + name);
    }
    case Kind::kString:
      return StringMethod(obj, name, pos);
    case Kind::kList: {
      static const std::set<std::string, std::less<>> kMethods = {
          "append", "extend", "insert", "remove",  "pop", "clear",
          "index",  "count",  "sort",   "reverse", "copy"};
      if (kMethods.count(name))
        Fail(pos, absl::StrCat("the list method '", name, "' is not supported"));
      return Value::Undefined(name);
    }
    default:
      return Value::Undefined(name);
  }
}

// ---------------------------------------------------------------------------------------------
// Tests and filters.

bool Renderer::EvalTest(const std::string& name, const Value& v, const std::vector<Value>& args,
                        Pos pos) {
  auto arg = [&]() -> const Value& {
    if (args.size() != 1)
      Fail(pos, absl::StrCat("the test '", name, "' expects one argument, found ", args.size()));
    return args[0];
  };
  if (name == "defined") return !v.undefined();
  if (name == "undefined") return v.undefined();
  if (name == "none") return v.is(Kind::kNone);
  if (name == "boolean") return v.is(Kind::kBool);
  if (name == "true") return v.is(Kind::kBool) && v.boolean();
  if (name == "false") return v.is(Kind::kBool) && !v.boolean();
  if (name == "string") return v.is(Kind::kString);
  if (name == "number") return v.number();
  if (name == "integer") return v.is(Kind::kInt);
  if (name == "float") return v.is(Kind::kFloat);
  if (name == "mapping") return v.is(Kind::kDict);
  if (name == "iterable")
    return v.is(Kind::kString) || v.is(Kind::kList) || v.is(Kind::kDict) || v.undefined();
  if (name == "sequence")
    return v.is(Kind::kString) || v.is(Kind::kList) || v.is(Kind::kDict) || v.undefined();
  if (name == "callable") return v.is(Kind::kFunction);
  if (name == "lower" || name == "upper") {
    if (!v.is(Kind::kString)) return false;
    bool cased = false;
    for (unsigned char c : v.str()) {
      if (c >= 0x80)
        Fail(pos, absl::StrCat("the test '", name, "' on non-ASCII text is not supported"));
      if (std::isalpha(c)) {
        cased = true;
        if (name == "lower" ? std::isupper(c) : std::islower(c)) return false;
      }
    }
    return cased;
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.integral())
      Fail(pos, absl::StrCat("the test '", name, "' expects an integer, found ", TypeName(v)));
    if (name == "divisibleby") {
      const Value& d = arg();
      if (!d.integral() || d.integer() == 0) Fail(pos, "divisibleby: expected a non-zero integer");
      return v.integer() % d.integer() == 0;
    }
    return (std::abs(v.integer()) % 2 == 1) == (name == "odd");
  }
  if (name == "in") return Contains(arg(), v, pos);
  if (name == "sameas") {
    const Value& o = arg();
    if (v.kind() != o.kind()) return false;
    if (v.is(Kind::kNone) || v.is(Kind::kUndefined)) return true;
    if (v.is(Kind::kBool)) return v.boolean() == o.boolean();
    Fail(pos, "the test 'sameas' is supported for none, true and false only");
  }
  const std::string op = name == "eq" || name == "equalto" || name == "=="      ? "=="
                         : name == "ne" || name == "!="                         ? "!="
                         : name == "lt" || name == "lessthan" || name == "<"    ? "<"
                         : name == "le" || name == "<="                         ? "<="
                         : name == "gt" || name == "greaterthan" || name == ">" ? ">"
                                                                                : ">=";
  return CompareOp(op, v, arg(), pos);
}

// Jinja's attribute getter for filters: "a.b.0" walks dicts, lists and attributes.
Value AttrPath(const Value& v, const std::string& path, Pos pos) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    int64_t idx = 0;
    auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
    if (r.ec == std::errc() && r.ptr == part.data() + part.size()) {
      cur = Renderer::GetItem(cur, Value::Int(idx), pos);
    } else {
      cur = Renderer::GetItem(cur, Value::String(part), pos);
    }
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

const Value* Kwarg(const KwArgs& kwargs, const char* name) {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return &v;
  }
  return nullptr;
}

Value Renderer::EvalFilter(const Expr& e) {
  const Value v = Eval(*e.args[0]);
  std::vector<Value> args = EvalArgs(e);
  KwArgs kwargs;
  for (const auto& [k, x] : e.kwargs) kwargs.emplace_back(k, Eval(*x));
  const std::string& f = e.name;
  const Pos pos = e.pos;
  // Positional or keyword argument `i` called `name`.
  auto param = [&](size_t i, const char* name) -> const Value* {
    if (const Value* k = Kwarg(kwargs, name)) return k;
    return i < args.size() ? &args[i] : nullptr;
  };
  auto check_params = [&](std::initializer_list<const char*> names) {
    if (args.size() > names.size())
      Fail(pos, absl::StrCat("the filter '", f, "' takes at most ", names.size(),
                             " arguments, found ", args.size()));
    for (const auto& [k, _] : kwargs) {
      bool known = false;
      for (const char* n : names) known |= k == n;
      if (!known) Fail(pos, absl::StrCat("the filter '", f, "' has no argument '", k, "'"));
    }
  };
  if (f == "tojson") {
    check_params({"ensure_ascii", "indent", "separators", "sort_keys"});
    JsonStyle style;
    if (const Value* a = param(0, "ensure_ascii")) style.ensure_ascii = Truthy(*a);
    if (const Value* a = param(1, "indent"); a && !a->is(Kind::kNone)) {
      if (a->integral()) {
        style.indent = std::string(std::max<int64_t>(0, a->integer()), ' ');
      } else if (a->is(Kind::kString)) {
        style.indent = a->str();
      } else {
        Fail(pos, absl::StrCat("tojson: expected an integer indent, found ", TypeName(*a)));
      }
      style.item_sep = ",";
    }
    if (const Value* a = param(2, "separators"); a && !a->is(Kind::kNone)) {
      if (!a->is(Kind::kList) || a->list().size() != 2 || !a->list()[0].is(Kind::kString) ||
          !a->list()[1].is(Kind::kString)) {
        Fail(pos, "tojson: expected separators as a pair of strings");
      }
      style.item_sep = a->list()[0].str();
      style.key_sep = a->list()[1].str();
    }
    if (const Value* a = param(3, "sort_keys")) style.sort_keys = Truthy(*a);
    std::string out;
    DumpJson(v, style, 0, pos, out);
    return Value::String(out);
  }
  if (f == "trim") {
    check_params({"chars"});
    const Value* c = param(0, "chars");
    std::optional<std::vector<uint32_t>> chars;
    if (c && !c->is(Kind::kNone)) chars = CodePoints(StrArg(*c, pos, "trim"));
    return Value::String(Strip(ToStr(v, pos), chars ? &*chars : nullptr, true, true));
  }
  if (f == "length" || f == "count") {
    check_params({});
    switch (v.kind()) {
      case Kind::kUndefined:
        return Value::Int(0);
      case Kind::kString:
        return Value::Int(CountCodePoints(v.str()));
      case Kind::kList:
        if (v.lazy()) Fail(pos, absl::StrCat("object of type '", TypeName(v), "' has no len()"));
        return Value::Int(static_cast<int64_t>(v.list().size()));
      case Kind::kDict:
        return Value::Int(static_cast<int64_t>(v.dict().entries.size()));
      default:
        Fail(pos, absl::StrCat("object of type '", TypeName(v), "' has no len()"));
    }
  }
  if (f == "string") {
    check_params({});
    return Value::String(ToStr(v, pos));
  }
  if (f == "safe") {
    check_params({});
    return v;
  }
  if (f == "upper" || f == "lower") {
    check_params({});
    return Value::String(AsciiCase(ToStr(v, pos), f == "upper", pos, f.c_str()));
  }
  if (f == "capitalize" || f == "title") {
    check_params({});
    std::string s = AsciiCase(ToStr(v, pos), false, pos, f.c_str());
    bool start = true;
    for (char& c : s) {
      if (start && std::isalpha(static_cast<unsigned char>(c)))
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      start = f == "title" ? !std::isalnum(static_cast<unsigned char>(c)) && c != '\'' : false;
    }
    return Value::String(s);
  }
  if (f == "default" || f == "d") {
    check_params({"default_value", "boolean"});
    const Value* def = param(0, "default_value");
    const Value* boolean = param(1, "boolean");
    const bool use = v.undefined() || (boolean && Truthy(*boolean) && !Truthy(v));
    return use ? (def ? *def : Value::String("")) : v;
  }
  if (f == "items") {
    check_params({});
    if (v.undefined()) return Value::MakeList({}, Seq::kGenerator);
    if (!v.is(Kind::kDict))
      Fail(pos, absl::StrCat("items: expected a mapping, found ", TypeName(v)));
    return Value::MakeList(DictItems(v.dict()).list(), Seq::kGenerator);
  }
  if (f == "list") {
    check_params({});
    return Value::MakeList(Iterate(v, pos));
  }
  if (f == "first" || f == "last") {
    check_params({});
    // jinja2's last takes reversed(value), which a generator does not have.
    if (f == "last" && v.is(Kind::kList) && v.seq() == Seq::kGenerator) {
      Fail(pos, "last: a 'generator' object is not reversible (apply |list first)");
    }
    List items = Iterate(v, pos);
    if (items.empty()) return Value::Undefined(f + " of an empty sequence");
    return f == "first" ? items.front() : items.back();
  }
  if (f == "reverse") {
    check_params({});
    if (v.is(Kind::kString)) {
      std::vector<uint32_t> cps = CodePoints(v.str());
      std::reverse(cps.begin(), cps.end());
      return Value::String(FromCodePoints(cps, 0, cps.size()));
    }
    // reversed() where Python has it (an iterator), else a reversed list.
    const bool reversible = v.is(Kind::kList) && !v.lazy() && v.seq() != Seq::kDictItems &&
                            v.seq() != Seq::kDictKeys && v.seq() != Seq::kDictValues;
    List items = Iterate(v, pos);
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items), reversible ? Seq::kReversed : Seq::kList);
  }
  if (f == "join") {
    check_params({"d", "attribute"});
    const Value* d = param(0, "d");
    const Value* attr = param(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(v, pos)) {
      if (!first) out += d ? ToStr(*d, pos) : "";
      first = false;
      out += ToStr(attr && !attr->is(Kind::kNone) ? AttrPath(item, ToStr(*attr, pos), pos) : item,
                   pos);
    }
    return Value::String(out);
  }
  if (f == "replace") {
    check_params({"old", "new", "count"});
    Value s = Value::String(ToStr(v, pos));
    std::vector<Value> margs;
    for (size_t i = 0; i < 3; ++i) {
      if (const Value* a = param(i, i == 0 ? "old" : i == 1 ? "new" : "count")) margs.push_back(*a);
    }
    KwArgs none;
    return StringMethod(s, "replace", pos).function()(pos, margs, none);
  }
  if (f == "int" || f == "float" || f == "abs") {
    check_params(f == "abs" ? std::initializer_list<const char*>{}
                            : std::initializer_list<const char*>{"default"});
    if (f == "abs") {
      if (!v.number()) Fail(pos, absl::StrCat("abs: expected a number, found ", TypeName(v)));
      return v.integral() ? Value::Int(std::abs(v.integer())) : Value::Float(std::fabs(v.real()));
    }
    const Value* def = param(0, "default");
    if (v.number())
      return f == "int" ? Value::Int(v.integral() ? v.integer() : static_cast<int64_t>(v.real()))
                        : Value::Float(v.real());
    if (v.is(Kind::kString)) {
      const std::string t = Strip(v.str(), nullptr, true, true);
      if (f == "int") {
        int64_t i = 0;
        auto r = std::from_chars(t.data(), t.data() + t.size(), i);
        if (r.ec == std::errc() && r.ptr == t.data() + t.size() && !t.empty()) return Value::Int(i);
      } else {
        char* end = nullptr;
        const double d = std::strtod(t.c_str(), &end);
        if (!t.empty() && end == t.c_str() + t.size()) return Value::Float(d);
      }
    }
    if (def) return *def;
    return f == "int" ? Value::Int(0) : Value::Float(0.0);
  }
  if (f == "select" || f == "reject" || f == "selectattr" || f == "rejectattr") {
    const bool attr = f == "selectattr" || f == "rejectattr";
    const bool keep_if = f == "select" || f == "selectattr";
    if (!kwargs.empty()) Fail(pos, absl::StrCat("the filter '", f, "' takes no keyword arguments"));
    size_t k = 0;
    std::string path;
    if (attr) {
      if (args.empty()) Fail(pos, absl::StrCat("the filter '", f, "' expects an attribute name"));
      path = StrArg(args[k++], pos, f);
    }
    std::string test;
    if (k < args.size()) {
      test = StrArg(args[k++], pos, f);
      if (!KnownTests().count(test))
        Fail(pos, absl::StrCat("expected a supported test, found '", test, "'"));
    }
    std::vector<Value> rest(args.begin() + k, args.end());
    List out;
    for (const Value& item : Iterate(v, pos)) {
      const Value subject = attr ? AttrPath(item, path, pos) : item;
      const bool ok = test.empty() ? Truthy(subject) : EvalTest(test, subject, rest, pos);
      if (ok == keep_if) out.push_back(item);
    }
    return Value::MakeList(std::move(out), Seq::kGenerator);
  }
  if (f == "map") {
    List out;
    if (const Value* a = Kwarg(kwargs, "attribute")) {
      const Value* def = Kwarg(kwargs, "default");
      for (const Value& item : Iterate(v, pos)) {
        Value x = AttrPath(item, StrArg(*a, pos, "map"), pos);
        out.push_back(x.undefined() && def ? *def : x);
      }
      return Value::MakeList(std::move(out), Seq::kGenerator);
    }
    if (args.empty()) Fail(pos, "map: expected a filter name or attribute=");
    const std::string name = StrArg(args[0], pos, "map");
    if (!KnownFilters().count(name) || name == "map")
      Fail(pos, absl::StrCat("map: expected a supported filter, found '", name, "'"));
    for (const Value& item : Iterate(v, pos)) {
      Expr call;
      call.type = Expr::Type::kFilter;
      call.pos = pos;
      call.name = name;
      auto lit = [](const Value& x) {
        auto l = std::make_shared<Expr>();
        l->type = Expr::Type::kLiteral;
        l->literal = x;
        return l;
      };
      call.args.push_back(lit(item));
      for (size_t i = 1; i < args.size(); ++i) call.args.push_back(lit(args[i]));
      for (const auto& [kk, kv] : kwargs) call.kwargs.emplace_back(kk, lit(kv));
      out.push_back(EvalFilter(call));
    }
    return Value::MakeList(std::move(out), Seq::kGenerator);
  }
  Fail(pos, absl::StrCat("the filter '", f, "' is not supported"));
}

std::string Strftime(const std::string& format, const RenderOptions& options) {
  std::tm tm{};
  if (options.now) {
    tm = *options.now;
  } else {
    const std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  if (format.empty()) return "";
  std::vector<char> buf(256 + format.size() * 16);
  const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &tm);
  return std::string(buf.data(), n);
}

// The globals transformers gives a chat template (raise_exception, strftime_now, namespace,
// dict) and jinja2's range.
std::shared_ptr<Scope> Globals(const RenderOptions* options, Budget* budget) {
  auto g = std::make_shared<Scope>();
  auto def = [&](const std::string& name, Function fn) {
    (*g)[name] = Value::MakeFunction(name, std::move(fn));
  };
  def("raise_exception", [](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
    ExpectArgs(args, kwargs, 1, 1, pos, "raise_exception");
    throw RaiseError{pos, ToStr(args[0], pos)};
  });
  def("strftime_now", [options](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
    ExpectArgs(args, kwargs, 1, 1, pos, "strftime_now");
    return Value::String(Strftime(StrArg(args[0], pos, "strftime_now"), *options));
  });
  auto make_dict = [](Pos pos, std::vector<Value>& args, KwArgs& kwargs, const char* what) {
    if (args.size() > 1)
      Fail(pos,
           absl::StrCat(what, ": expected at most one positional argument, found ", args.size()));
    auto d = std::make_shared<Dict>();
    if (args.size() == 1) {
      if (!args[0].is(Kind::kDict))
        Fail(pos, absl::StrCat(what, ": expected a dict argument, found ", TypeName(args[0])));
      *d = args[0].dict();
    }
    for (auto& [k, v] : kwargs) d->Set(k, v);
    return d;
  };
  def("namespace", [make_dict, budget](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
    auto d = make_dict(pos, args, kwargs, "namespace");
    budget->namespaces.push_back(d);
    for (const auto& [k, _] : d->entries) {
      if (!k.empty() && k[0] == '_')
        Fail(pos, absl::StrCat("namespace: expected attribute names without a leading '_', found '",
                               k, "'"));
    }
    return Value::MakeDict(d, Kind::kNamespace);
  });
  def("dict", [make_dict](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
    return Value::MakeDict(make_dict(pos, args, kwargs, "dict"));
  });
  def("range", [](Pos pos, std::vector<Value>& args, KwArgs& kwargs) -> Value {
    ExpectArgs(args, kwargs, 1, 3, pos, "range");
    for (const Value& a : args) {
      if (!a.integral())
        Fail(pos, absl::StrCat("range: expected integer arguments, found ", TypeName(a)));
    }
    const int64_t start = args.size() == 1 ? 0 : args[0].integer();
    const int64_t stop = args.size() == 1 ? args[0].integer() : args[1].integer();
    const int64_t step = args.size() == 3 ? args[2].integer() : 1;
    if (step == 0) Fail(pos, "range: step must not be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 100000) Fail(pos, "range: more than 100000 items");
      out.push_back(Value::Int(i));
    }
    return Value::MakeList(std::move(out), Seq::kRange);
  });
  return g;
}

}  // namespace

const std::string& Template::origin() const { return impl_->origin; }

absl::StatusOr<Template> Template::Parse(std::string_view source, std::string origin) {
  try {
    Lexer lexer(source);
    Parser parser(lexer.Run());
    auto impl = std::make_shared<Impl>();
    impl->origin = origin;
    impl->body = parser.ParseTemplate();
    return Template(std::move(impl));
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ":", e.pos.line, ":", e.pos.col, ": ", OneLine(e.message)));
  }
}

absl::StatusOr<std::string> Template::Render(const Json& context,
                                             const RenderOptions& options) const {
  const std::string& origin = impl_->origin;
  if (!context.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": expected the template variables as a JSON object, found ", context.type_name()));
  }
  try {
    auto root = std::make_shared<Scope>();
    for (auto it = context.begin(); it != context.end(); ++it) {
      (*root)[it.key()] = Value::FromJson(*it);
    }
    Budget budget;
    auto globals = Globals(&options, &budget);
    // Macros hold the scopes they were defined in, namespaces may hold themselves: the cycles
    // are cut when the render ends, however it ends.
    struct Cut {
      Budget& budget;
      std::vector<std::shared_ptr<Scope>> scopes;
      ~Cut() {
        for (auto& s : scopes) s->clear();
        for (auto& d : budget.namespaces) d->entries.clear();
      }
    } cut{budget, {globals, root}};
    Renderer renderer(options, {globals, root}, &budget);
    std::string out;
    renderer.Exec(impl_->body, out);
    return out;
  } catch (const Error& e) {
    if (e.pos.line == 0)
      return absl::InvalidArgumentError(absl::StrCat(origin, ": ", OneLine(e.message)));
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ":", e.pos.line, ":", e.pos.col, ": ", OneLine(e.message)));
  } catch (const RaiseError& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ":", e.pos.line, ":", e.pos.col,
                     ": the template raised an error: ", OneLine(e.message)));
  }
}

}  // namespace fluxattn::serve::jinja
