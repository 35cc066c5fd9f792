#!/usr/bin/env python3
"""Builds the tokenizer fixtures in tests/fixtures/tokenizer/ with the `tokenizers` library.

Three small byte-level BPE tokenizers are trained on a deterministic corpus:
  qwen2  NFC normalizer, Qwen2 Split regex + ByteLevel, merges in ["a", "b"] pair form,
         <|endoftext|>/<|im_start|>/<|im_end|> special, <think> added (not special).
  llama3 no normalizer, Llama 3 Split regex + ByteLevel, merges in the older "a b" string form,
         ignore_merges, TemplateProcessing that prepends <|begin_of_text|>, an lstrip/rstrip token.
  gpt2   Sequence[NFC] normalizer, Digits + ByteLevel(add_prefix_space, use_regex) pre-tokenizer.
variants.json runs other pre-tokenizer and normalizer settings over the qwen2 model.
For each, cases.json records the ids the library produces for tricky and seeded random strings
(with and without special tokens), their decodes, and NFC(text), so the C++ tests compare against
the library as an independent oracle. Output is deterministic; runs with tokenizers >= 0.19.

Usage: tools/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizer]
"""

import argparse
import json
import os
import random
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRICKY = [
    "",
    " ",
    "Hello world",
    "  leading and trailing  ",
    "multiple     spaces\tand\ttabs\t\t here",
    "line one\nline two\n\n\nline five\r\nwindows\r\n",
    "   \n   \n\t\n",
    "digits 0 12 345 6789 1234567890 3.14159 -42 1,000,000",
    "I'm sure you're right, they've said it'll work and he'd go; it's Bob's.",
    "I'M SURE YOU'RE RIGHT, THEY'VE SAID IT'LL WORK AND HE'D GO; IT'S BOB'S.",
    "MiXeD cAsE dOn'T wOn'T",
    "中文分词测试：你好，世界！这是一个句子。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장입니다.",
    "emoji 😀🎉👍🏽 and flags 🇩🇪🇯🇵",
    "family 👨‍👩‍👧‍👦 ZWJ and heart ❤️ and ❤",
    "precomposed café naïve résumé Ångström",
    "decomposed cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m",
    "stacked a\u0323\u0302 q\u0307\u0323 \u1e0b\u0323",
    "hangul jamo \u1100\u1161\u11a8 vs \uac01",
    "punctuation «quotes» „low“ ‘single’ — dash – en … ellipsis ¿que? ¡si!",
    "fullwidth ＡＢＣ１２３！ and ideographic\u3000space",
    "nbsp\u00a0here and thin\u2009space and line\u2028separator",
    "<|endoftext|>",
    "before<|endoftext|>after",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "<think>\nreasoning\n</think>\n\nanswer",
    "almost special <|im_start and <|endoftext| and |>",
    "mask <mask> here and  <mask>  there",
    "code: def f(x):\n    return x**2  # square\n",
    "json {\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "url https://example.com/path?q=1&r=two#frag",
    "mixed 123abc abc123 a1b2c3 ١٢٣ ๑๒๓",
    "Ελληνικά και русский текст и עברית ועוד العربية",
    "हिन्दी पाठ और தமிழ்",
    "\t",
    "\n",
    "'s 't 'S 'T 'Re 'rE",
    "hello world",
    "say hello world, hello worlds and _hello world hello world",
    "<mask><mask>  <mask>\n\t<mask>",
    "odd spaces:\x85a\u180eb\u200bc\ufeffd\u1680e\u205ff \x85 \u180e x\x0b\x0cy",
]

# Code point pools for random strings; all assigned in Unicode 9 so that every regex engine
# involved agrees on their properties.
POOLS = [
    (0x20, 0x7E), (0x20, 0x20), (0x09, 0x0A), (0x30, 0x39), (0xA0, 0xFF), (0x100, 0x17F),
    (0x300, 0x36F), (0x391, 0x3C9), (0x410, 0x44F), (0x5D0, 0x5EA), (0x627, 0x64A),
    (0x905, 0x939), (0x1100, 0x1112), (0x1161, 0x1175), (0x11A8, 0x11C2), (0x2000, 0x200A),
    (0x2010, 0x2027), (0x3000, 0x3000), (0x3041, 0x3096), (0x4E00, 0x9FA5), (0xAC00, 0xD7A3),
    (0xFF01, 0xFF5E), (0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x200D, 0x200D), (0xFE0F, 0xFE0F),
]


def random_string(rng, max_len):
    out = []
    for _ in range(rng.randint(0, max_len)):
        lo, hi = POOLS[rng.randrange(len(POOLS))]
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def corpus(rng):
    words = ("the quick brown fox jumps over lazy dog tokenizer attention model layer "
             "context window long sequence hello world streaming decode merge rank byte").split()
    lines = []
    for _ in range(1500):
        n = rng.randint(3, 14)
        line = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            line = line.capitalize() + rng.choice([".", "!", "?", "'s", " 12345", " 2024"])
        lines.append(line)
    lines.extend(TRICKY * 5)
    lines.extend(random_string(rng, 30) for _ in range(300))
    return lines


def train(tok, vocab_size, specials, lines):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)


def set_merges_form(data, form):
    merges = data["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
    if form == "string":
        data["model"]["merges"] = [a + " " + b for a, b in pairs]
    else:
        data["model"]["merges"] = pairs


def build_qwen2(lines):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    train(tok, 1000, [], lines)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t in ("<think>", "</think>")])
    data = json.loads(tok.to_str())
    set_merges_form(data, "pair")
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "tokenizer_class": "Qwen2Tokenizer"}
    return data, config


def build_llama3(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    train(tok, 800, specials, lines)
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, rstrip=True,
                                       normalized=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = True
    set_merges_form(data, "string")
    config = {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"},
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return data, config


def build_gpt2(lines):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    train(tok, 600, ["<|endoftext|>"], lines)
    tok.add_tokens([AddedToken("hello world", special=False, normalized=True, single_word=True)])
    data = json.loads(tok.to_str())
    set_merges_form(data, "pair")
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    return data, config


def record_cases(tok, texts):
    cases = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_special = tok.encode(text, add_special_tokens=True).ids
        cases.append({
            "text": text,
            "nfc": unicodedata.normalize("NFC", text),
            "ids": ids,
            "ids_with_special_tokens": ids_special,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids_special, skip_special_tokens=True),
        })
    return cases


def record_decodes(tok, vocab_size, rng):
    """Random id sequences (often cutting UTF-8 characters apart) and their decodes."""
    decodes = []
    for _ in range(60):
        ids = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 12))]
        decodes.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                        "text_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return decodes


def split(pattern, behavior, invert=False, literal=False):
    return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern},
            "behavior": behavior, "invert": invert}


def byte_level(add_prefix_space=False, use_regex=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": False,
            "use_regex": use_regex}


# Other pipelines over the qwen2 vocabulary and merges: every Split behavior, invert, literal
# patterns, Digits, NFKC/NFD, and ByteLevel alone (prefix space and the GPT-2 regex).
VARIANTS = [
    ("merged_with_previous", None,
     [split("-", "MergedWithPrevious", literal=True), byte_level()]),
    ("merged_with_next", None, [split(r"\s+", "MergedWithNext"), byte_level(use_regex=True)]),
    ("removed_inverted", None, [split(r"\p{L}+", "Removed", invert=True), byte_level()]),
    ("contiguous", None, [split(r"[\p{P}\p{S}]", "Contiguous"), byte_level()]),
    ("individual_digits", None,
     [{"type": "Digits", "individual_digits": True}, byte_level(True, True)]),
    ("nfkc", {"type": "NFKC"}, [split(QWEN2_PATTERN, "Isolated"), byte_level()]),
    ("nfd", {"type": "Sequence", "normalizers": [{"type": "NFD"}]},
     [split(QWEN2_PATTERN, "Isolated"), byte_level()]),
    ("byte_level_only", None, [byte_level(True, True)]),
]


def record_variants(base, texts):
    variants = []
    for name, normalizer, pre_tokenizers_json in VARIANTS:
        data = dict(base)
        data["normalizer"] = normalizer
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": pre_tokenizers_json}
        tok = Tokenizer.from_str(json.dumps(data))
        cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
        variants.append({"name": name, "normalizer": normalizer,
                         "pre_tokenizer": data["pre_tokenizer"], "cases": cases})
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer"))
    args = parser.parse_args()
    rng = random.Random(20240601)
    lines = corpus(rng)
    random_texts = [random_string(rng, 40) for _ in range(150)]
    for name, build in (("qwen2", build_qwen2), ("llama3", build_llama3), ("gpt2", build_gpt2)):
        data, config = build(lines)
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        text = json.dumps(data, ensure_ascii=False, indent=1)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
            f.write("\n")
        # The oracle is the file as written (string-form merges and edits included).
        tok = Tokenizer.from_str(text)
        vocab_size = tok.get_vocab_size(with_added_tokens=True)
        cases = {"tokenizer": name, "vocab_size": vocab_size,
                 "tricky": record_cases(tok, TRICKY), "random": record_cases(tok, random_texts),
                 "decode": record_decodes(tok, vocab_size, rng)}
        with open(os.path.join(folder, "cases.json"), "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=0)
            f.write("\n")
        if name == "qwen2":
            variants = record_variants(data, TRICKY + random_texts[:30])
            with open(os.path.join(args.out, "variants.json"), "w", encoding="utf-8") as f:
                json.dump({"base": "qwen2", "variants": variants}, f, ensure_ascii=False,
                          indent=0)
                f.write("\n")
        print(f"{name}: vocab {cases['vocab_size']}, {len(data['model']['merges'])} merges")


if __name__ == "__main__":
    main()
