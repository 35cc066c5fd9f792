#!/usr/bin/env python3
"""Checks of what the demo model has learned, on the CPU.

toy-copy: trains the same PyTorch model at toy size (2 layers, width 64, 64 ids) to continue a
  repeated random sequence; the loss falls from ~4.2 to below 0.1 within a few hundred steps, so
  the architecture and the training code can learn copying.
copy-rate --ckpt DIR: per-token accuracy of a checkpoint on the second copy of a repeated corpus
  window (copy rows of data.py) against its accuracy on plain corpus tokens, and the teacher-forced
  cross-entropy of each digit of a passkey 30 tokens back (ln 10 = 2.30 is the uniform guess).

Usage: diagnose.py toy-copy | diagnose.py copy-rate --ckpt DIR [--work build/demo_model]
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import model as M  # noqa: E402
from train import load_shards  # noqa: E402


def toy_copy():
    torch.manual_seed(0)
    c = dict(M.CONFIG, vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    m = M.DemoModel(c)
    opt = torch.optim.AdamW(m.base_parameters(), lr=2e-3)
    for step in range(301):
        x = torch.randint(1, 64, (32, 24))
        ids = torch.cat([x, x], 1)
        loss = F.cross_entropy(m(ids)[:, 24:-1].reshape(-1, 64), ids[:, 25:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}: copy loss {loss.item():.3f}", flush=True)


def copy_rate(ckpt, work):
    m = M.DemoModel()
    m.load_state_dict(load_shards(ckpt, "model"))
    m.eval()
    tok_path = os.path.join(work, "tokenizer", "tokenizer.json")
    bm = data.BatchMaker(tok_path, os.path.join(work, "corpus_ids.npy"), "diagnose",
                         {data.COPY: 1.0}, [(256, 1.0)], 256 * 8)
    b = bm.batch(0)
    with torch.no_grad():
        pred = m(b["ids"]).argmax(-1)
    ans, txt = b["weights"] > 1, b["weights"] == 1
    right = pred == b["labels"]
    print(f"second copy: {float((right & ans).sum() / ans.sum()):.3f} of tokens right; "
          f"plain text: {float((right & txt).sum() / txt.sum()):.3f}")
    tok = bm.tok
    prompt = ("The farmer carried a lantern. The pass key is 39102. Remember it. The baker found "
              "a kettle.\n\nWhat is the pass key? The pass key is")
    ids = tok.encode(prompt + " 39102\n").ids
    with torch.no_grad():
        lp = F.log_softmax(m(torch.tensor([ids]))[0].float(), -1)
    n = len(tok.encode(prompt).ids)
    print("passkey answer tokens, cross-entropy:",
          [(tok.id_to_token(ids[i + 1]), round(float(-lp[i, ids[i + 1]]), 2))
           for i in range(n - 1, len(ids) - 1)])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("check", choices=["toy-copy", "copy-rate"])
    p.add_argument("--ckpt")
    p.add_argument("--work", default="build/demo_model")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.check == "toy-copy":
        toy_copy()
    else:
        copy_rate(args.ckpt, args.work)


if __name__ == "__main__":
    main()
