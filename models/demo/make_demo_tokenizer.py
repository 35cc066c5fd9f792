#!/usr/bin/env python3
"""Writes the tokenizer of the bundled demo model (models/demo/flux-tiny/).

The demo model's weights are the tiny random-weight Flux checkpoint of tests/fixtures/router/
(vocabulary of 512 ids), linked into flux-tiny/. This script trains a byte-level BPE tokenizer
of exactly that size with the `tokenizers` library, so `fluxattn eval` and `compare` can write
their long-context tasks in the model's own tokens. The training text is built from the word
list bundled with the eval suite (apps/fluxattn/eval/words.cc) and the phrases of its prompts,
plus digits, hexadecimal codes and upper-case names, which the tasks use.

Deterministic: a fixed seed for the text, and BPE training is deterministic for a fixed input.

Usage: python3 models/demo/make_demo_tokenizer.py [--out models/demo/flux-tiny]
"""

import argparse
import json
import os
import random
import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 512  # config.json vocab_size of the checkpoint
HERE = os.path.dirname(os.path.abspath(__file__))
WORDS_CC = os.path.join(HERE, "..", "..", "apps", "fluxattn", "eval", "words.cc")
TASKS_CC = os.path.join(HERE, "..", "..", "apps", "fluxattn", "eval", "tasks.cc")


def word_lists():
    """The k<Name> arrays of words.cc, by name."""
    text = open(WORDS_CC, encoding="utf-8").read()
    lists = {}
    for name, body in re.findall(r"k(\w+) = \{(.*?)\};", text, re.S):
        lists[name] = re.findall(r'"([a-z]+)"', body)
    return lists


def prompt_phrases():
    """String literals of tasks.cc that are prose (the fixed parts of the prompts)."""
    text = open(TASKS_CC, encoding="utf-8").read()
    return [s.replace("\\n", "\n") for s in re.findall(r'"([^"\\]*(?:\\.[^"\\]*)*)"', text)
            if " " in s]


def corpus(rng):
    w = word_lists()
    adj, noun, verb, place = w["Adjectives"], w["Nouns"], w["Verbs"], w["Places"]
    lines = []
    for _ in range(3000):
        lines.append(f"The {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)} a "
                     f"{rng.choice(adj)} {rng.choice(noun)} near the {rng.choice(place)}.")
        lines.append(f"Every {rng.choice(adj)} {rng.choice(noun)} at the {rng.choice(place)} was "
                     f"{rng.choice(adj)} and {rng.choice(adj)}.")
    lines.extend(prompt_phrases() * 50)
    for i in range(2000):
        lines.append(f"{i + 1}. {rng.choice(noun + adj)}")
        lines.append(f"key {rng.getrandbits(32):08x}: value {rng.getrandbits(32):08x}")
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        lines.append(f"VAR {name} = {rng.randint(10000, 99999)}.")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "flux-tiny"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(random.Random(args.seed)), trainer=trainer)
    if tok.get_vocab_size() > VOCAB_SIZE:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} ids, the model {VOCAB_SIZE}")
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|endoftext|>",
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)
        f.write("\n")
    sample = "The pass key is 71432. Remember it."
    print(f"vocab {tok.get_vocab_size()}; {sample!r} -> {tok.encode(sample).tokens}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
