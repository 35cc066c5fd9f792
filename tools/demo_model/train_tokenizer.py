#!/usr/bin/env python3
"""Trains the demo model's byte-level BPE tokenizer (8192 ids) with `tokenizers`.

Qwen2-style: NFC normalizer, the Qwen2 split regex (contractions, letters with an optional
leading non-letter, single digits, punctuation runs, newlines, spaces) then byte-level
mapping without a prefix space; special tokens <|endoftext|>, <|im_start|>, <|im_end|>.
Trained on the Debian-package corpus (build_corpus.py) plus 2% of text in the format of the
eval tasks (training streams of tasks.py), so the task words are whole tokens.

Usage: python3 tools/demo_model/train_tokenizer.py [--work build/demo_model]
"""

import argparse
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402

VOCAB_SIZE = 8192
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def make_tokenizer():
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def texts(work):
    text = open(os.path.join(work, "corpus.txt"), encoding="utf-8").read()
    docs = text.split("\n" + "\f" + "\n")
    total = 0
    for d in docs:
        total += len(d)
        yield d
    made = 0
    i = 0
    while made < 0.02 * total:
        task = tasks.TASKS[i % len(tasks.TASKS)]
        b = tasks.BUILDERS[task](tasks.train_rng("tokenizer", i))
        s = b.text(40) + ("" if b.answer is None else " " + b.answer + "\n")
        made += len(s)
        i += 1
        yield s


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="build/demo_model")
    parser.add_argument("--out", default="build/demo_model/tokenizer")
    args = parser.parse_args()
    tok = make_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts(args.work), trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    eos = SPECIALS[0]
    config = {
        "add_bos_token": False, "add_prefix_space": False, "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": eos, "pad_token": eos,
        "errors": "replace", "model_max_length": 8192, "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": None,
        "added_tokens_decoder": {str(tok.token_to_id(s)): {
            "content": s, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True} for s in SPECIALS},
    }
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    enc = tok.encode("The pass key is 40712. key 3fa9b2c1: value 0d9e7a44\nVAR QWXYZ = 12345.")
    print(args.out, tok.get_vocab_size(), "ids;", enc.tokens)


if __name__ == "__main__":
    main()
