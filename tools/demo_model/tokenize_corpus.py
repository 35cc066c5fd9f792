#!/usr/bin/env python3
"""Encodes the corpus with the demo tokenizer into WORK/corpus_ids.npy (uint16, documents joined
by <|endoftext|>), at most --max-tokens tokens, for the training batches.

Usage: python3 tools/demo_model/tokenize_corpus.py [--work build/demo_model]
"""

import argparse
import os

import numpy as np
from tokenizers import Tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="build/demo_model")
    parser.add_argument("--max-tokens", type=int, default=8_000_000)
    args = parser.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.work, "tokenizer", "tokenizer.json"))
    docs = open(os.path.join(args.work, "corpus.txt"), encoding="utf-8").read().split("\n\f\n")
    eos = tok.token_to_id("<|endoftext|>")
    out = []
    total = 0
    # Interleave the sources so a cap keeps every package represented.
    order = sorted(range(len(docs)), key=lambda i: (i * 7919) % len(docs))
    for enc in tok.encode_batch([docs[i] for i in order]):
        out.append(np.asarray(enc.ids + [eos], dtype=np.uint16))
        total += len(enc.ids) + 1
        if total >= args.max_tokens:
            break
    ids = np.concatenate(out)[: args.max_tokens]
    np.save(os.path.join(args.work, "corpus_ids.npy"), ids)
    print(f"{len(ids)} tokens from {len(out)} documents; {len(''.join(docs)) / 1e6:.1f} M chars")


if __name__ == "__main__":
    main()
