#include "eval/words.h"

#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace fluxattn::eval {
namespace {

constexpr std::array<const char*, 48> kAdjectives = {
    "quiet",  "heavy", "bright",  "small",   "ancient", "gentle", "narrow", "golden",
    "silent", "rough", "patient", "crooked", "distant", "humble", "steady", "broken",
    "warm",   "pale",  "careful", "simple",  "hollow",  "early",  "late",   "wooden",
    "clever", "tired", "young",   "empty",   "round",   "sharp",  "soft",   "loud",
    "green",  "grey",  "hidden",  "plain",   "proud",   "rapid",  "shy",    "tall",
    "thin",   "wide",  "wild",    "calm",    "eager",   "famous", "modest", "sturdy"};

constexpr std::array<const char*, 48> kNouns = {
    "farmer",   "basket",  "lantern",  "sailor",  "teacher", "kettle",  "letter",  "garden",
    "window",   "baker",   "ladder",   "blanket", "painter", "hammer",  "candle",  "wagon",
    "shepherd", "bottle",  "carpet",   "drummer", "feather", "fiddle",  "harvest", "jacket",
    "kitten",   "ledger",  "mirror",   "needle",  "orchard", "pebble",  "quilt",   "saddle",
    "tailor",   "teapot",  "traveler", "violin",  "weaver",  "whistle", "anchor",  "bucket",
    "cobbler",  "doorway", "engine",   "fisher",  "glove",   "helmet",  "island",  "journal"};

constexpr std::array<const char*, 40> kVerbs = {
    "carried",  "painted",   "mended",    "found",      "lifted",    "watched",  "followed",
    "cleaned",  "opened",    "counted",   "borrowed",   "polished",  "admired",  "packed",
    "dropped",  "noticed",   "repaired",  "wrapped",    "traded",    "visited",  "guarded",
    "measured", "sketched",  "described", "remembered", "collected", "balanced", "studied",
    "gathered", "delivered", "inspected", "returned",   "shared",    "tested",   "pushed",
    "pulled",   "weighed",   "hung",      "stored",     "praised"};

constexpr std::array<const char*, 32> kPlaces = {
    "mill",   "river",  "market",  "bridge", "harbor", "chapel", "meadow",  "station",
    "forest", "tavern", "square",  "well",   "gate",   "tower",  "valley",  "barn",
    "cliff",  "pond",   "school",  "quarry", "hill",   "shore",  "field",   "road",
    "castle", "garden", "village", "lake",   "church", "pier",   "orchard", "library"};

}  // namespace

absl::Span<const char* const> Adjectives() { return kAdjectives; }
absl::Span<const char* const> Nouns() { return kNouns; }
absl::Span<const char* const> Verbs() { return kVerbs; }
absl::Span<const char* const> Places() { return kPlaces; }

size_t PickIndex(std::mt19937_64& rng, size_t n) {
  // Rejection sampling keeps the draw exactly uniform.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return static_cast<size_t>(x % n);
}

std::string FillerText::Sentence(int64_t i) {
  while (static_cast<int64_t>(cache_.size()) <= i) {
    // One generator per sentence, seeded from (seed, index): sentence i never depends on how
    // many sentences were asked for before.
    const int64_t index = static_cast<int64_t>(cache_.size());
    std::seed_seq seq{static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32),
                      static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32)};
    std::mt19937_64 rng(seq);
    auto word = [&rng](absl::Span<const char* const> list) { return std::string(Pick(rng, list)); };
    std::string s;
    switch (PickIndex(rng, 4)) {
      case 0:
        s = absl::StrCat("the ", word(Adjectives()), " ", word(Nouns()), " ", word(Verbs()), " a ",
                         word(Adjectives()), " ", word(Nouns()), " near the ", word(Places()), ".");
        break;
      case 1:
        s = absl::StrCat("a ", word(Nouns()), " from the ", word(Places()), " ", word(Verbs()),
                         " the ", word(Nouns()), ".");
        break;
      case 2:
        s = absl::StrCat("every ", word(Adjectives()), " ", word(Nouns()), " at the ",
                         word(Places()), " was ", word(Adjectives()), " and ", word(Adjectives()),
                         ".");
        break;
      default:
        s = absl::StrCat("the ", word(Nouns()), " ", word(Verbs()), " the ", word(Adjectives()),
                         " ", word(Nouns()), " and then ", word(Verbs()), " the ", word(Nouns()),
                         ".");
        break;
    }
    s[0] = absl::ascii_toupper(static_cast<unsigned char>(s[0]));
    cache_.push_back(absl::StrCat(s, " "));
  }
  return cache_[i];
}

std::string FillerText::Sentences(int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += Sentence(i);
  return out;
}

}  // namespace fluxattn::eval
