#!/usr/bin/env python3
"""Trains the demo model (`base`), then its Flux layer router on the frozen model (`router`).

base: LM loss per row (a task row: (1 - answer_share) * its prompt tokens' mean CE plus
  answer_share * its answer tokens' mean CE), on the eval-format tasks (most niah_multikey,
  kv_retrieval and variable_tracking rows with further questions appended after the answer),
  copy rows of random digit / hex / capital strings, filler documents and corpus text, with a
  length curriculum from 256/512-token rows to 4K. Two robustness augmentations: text and filler
  rows run every layer with streaming SA in 30% of the rows (plain text should not need the far
  context), and task rows run 1 to --sa-task-layers random layers with SA in 20% of the rows.
router: the base is frozen; each layer's router reads its pooled queries (ctx_q: first and last
  pool_size prompt rows, after q_norm, before RoPE) and a straight-through Gumbel softmax with the
  temperature annealed from 1.5 to 1.0 picks the gate z; the layer output is
  z * FA + (1 - z) * SA (SA: the streaming rule). Loss = LM loss + sum over tasks of
  l1 * |s - t| + l2 * (s - t)^2, s the task's SA fraction of layer decisions in the batch, t its
  target; l1, l2 are per-task multipliers trained by gradient ascent.

Every step's time is measured; training stops after --minutes and writes a resumable
checkpoint (float32 safetensors shards of at most 15 MiB) plus a JSON log of the curves.

Usage:
  train.py base --tokenizer T --corpus C --out DIR [--resume DIR | --init-hf FOLDER]
           [--minutes 7] [--probe N]
  train.py router --tokenizer T --corpus C (--init DIR | --init-hf FOLDER) --out DIR
           [--minutes 2.5] [--targets KIND=FRACTION,...]
"""

import argparse
import glob
import json
import math
import multiprocessing
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data  # noqa: E402
import model as M  # noqa: E402

SHARD_BYTES = 15 * 1024 * 1024

# Base training mix (weights per row kind): mostly task rows, a third of them with further
# questions appended, and copy rows of random digit / hex / capital strings, from the first step.
BASE_MIX = {"passkey": 1.2, "niah_multikey": 1.5, "kv_retrieval": 2.0, "variable_tracking": 1.5,
            "frequent_words": 0.5, "lm_ppl": 0.3, data.TEXT: 0.6, data.COPY: 0.3,
            data.COPY_STR: 1.0}
BASE_EXTRAS = 0.7
# Length curriculum: (until, [(row length, weight)]), `until` a fraction of the schedule.
BASE_CURRICULUM = [
    (0.15, [(256, 0.5), (512, 0.5)]),
    (0.35, [(256, 0.2), (512, 0.3), (1024, 0.3), (2048, 0.2)]),
    (0.55, [(512, 0.15), (1024, 0.25), (2048, 0.3), (4160, 0.3)]),
    (1.0, [(512, 0.1), (1024, 0.2), (2048, 0.3), (4160, 0.4)]),
]
ROUTER_MIX = {"passkey": 1.0, "niah_multikey": 1.0, "kv_retrieval": 1.0, "variable_tracking": 1.0,
              "frequent_words": 1.0, "lm_ppl": 1.0, data.TEXT: 1.0}
ROUTER_BUCKETS = [(1024, 0.25), (2048, 0.25), (4160, 0.5)]
# Target SA fraction of the layers per kind: retrieval keeps most layers full, plain text none.
TARGETS = {"passkey": 0.5, "niah_multikey": 0.5, "kv_retrieval": 0.5, "variable_tracking": 0.375,
           "frequent_words": 0.5, "lm_ppl": 1.0, data.TEXT: 1.0, data.COPY: 1.0, data.COPY_STR: 1.0}


def save_shards(state, out, prefix):
    os.makedirs(out, exist_ok=True)
    for old in glob.glob(os.path.join(out, prefix + "-*.safetensors")):
        os.remove(old)
    shard, size, n = {}, 0, 0
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        b = t.numel() * t.element_size()
        if shard and size + b > SHARD_BYTES:
            save_file(shard, os.path.join(out, f"{prefix}-{n}.safetensors"))
            shard, size, n = {}, 0, n + 1
        shard[name] = t
        size += b
    save_file(shard, os.path.join(out, f"{prefix}-{n}.safetensors"))


def load_shards(path, prefix):
    state = {}
    for f in sorted(glob.glob(os.path.join(path, prefix + "-*.safetensors"))):
        state.update(load_file(f))
    if not state:
        raise SystemExit(f"{path}: no {prefix}-*.safetensors")
    return state


def weighted_lm_loss(logits, labels, weights, answer_share):
    """Mean over rows; a task row is (1 - answer_share) * its prompt tokens' mean CE plus
    answer_share * its answer tokens' mean CE, a text row its tokens' mean CE."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                         ignore_index=-100, reduction="none").view(labels.shape)
    prompt = (weights > 0) & (weights <= 1.0)
    ans = weights > 1.0
    lm = (ce * prompt).sum(1) / prompt.sum(1).clamp_min(1)
    a = (ce * ans).sum(1) / ans.sum(1).clamp_min(1)
    has = ans.any(1)
    row = torch.where(has, (1 - answer_share) * lm + answer_share * a, lm)
    return row.mean(), ce


def answer_accuracy(logits, labels, weights):
    """Per row: all answer tokens predicted right under teacher forcing (None: no answer)."""
    pred = logits.argmax(-1)
    ans = weights > 1.0
    ok = ((pred == labels) | ~ans).all(dim=1)
    has = ans.any(dim=1)
    return ok, has


def common(args):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = M.DemoModel().to(device)
    return m, device


def make_loader(args, mix, buckets, stream, start, clock=None, extras=0.0, curriculum=None):
    return data.loader(start, args.workers, clock, tokenizer_path=args.tokenizer,
                       corpus_ids_path=args.corpus, stream=stream, mix=mix, buckets=buckets,
                       tokens_per_batch=args.tokens_per_batch, extras=extras,
                       curriculum=curriculum)


@torch.no_grad()
def probe(m, args, device, lengths=(1024, 4096), samples=16):
    """Teacher-forced exact match of fresh samples (stream "probe", single question as in the
    eval), per task and length, with every layer FA (fa), every layer SA (sa) and the odd layers
    SA (fs, the static hybrid); and the mean
    cross-entropy of lm_ppl documents."""
    m.eval()
    maker = data.BatchMaker(args.tokenizer, args.corpus, "probe", {}, [(1024, 1.0)], 0)
    L = m.c["num_hidden_layers"]
    out = {}
    for t in lengths:
        for kind in data.tasks.TASKS:
            rng = random.Random(f"probe/{kind}/{t}")
            rows = [maker.row(kind, 10 ** 6 + i, t, rng) for i in range(samples)]
            ids = torch.from_numpy(np.stack([r[0] for r in rows])).to(device)
            labels = torch.from_numpy(np.stack([r[1] for r in rows])).to(device)
            weights = torch.from_numpy(np.stack([r[2] for r in rows])).to(device)
            for mode in ("fa", "sa", "fs"):
                sa = None if mode == "fa" else torch.ones(samples, L, dtype=torch.bool,
                                                          device=device)
                if mode == "fs":  # the static hybrid: odd layers SA
                    sa[:, 0::2] = False
                res = []
                for i in range(0, samples, 8):
                    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                        lg = m(ids[i:i + 8], sa_layers=None if sa is None else sa[i:i + 8])
                    if kind == "lm_ppl":
                        ce = F.cross_entropy(lg.float().transpose(1, 2), labels[i:i + 8],
                                             ignore_index=-100, reduction="none")
                        w = (weights[i:i + 8] > 0).float()
                        res.append(float((ce * w).sum() / w.sum()))
                    else:
                        ok, has = answer_accuracy(lg, labels[i:i + 8], weights[i:i + 8])
                        res += [float(x) for x in ok[has].tolist()]
                out[f"{kind}/{t}/{mode}"] = round(sum(res) / max(1, len(res)), 3)
    m.train()
    print("probe:", json.dumps(out), flush=True)
    return out



def train_base(args):
    m, device = common(args)
    log = {"steps": []}
    step0 = 0
    elapsed0 = 0.0
    if args.resume:
        m.load_state_dict(load_shards(args.resume, "model"), strict=True)
        meta = json.load(open(os.path.join(args.resume, "base_log.json")))
        log, step0, elapsed0 = meta, meta["step"], meta["elapsed"]
    elif args.init_hf:  # start from an exported folder's weights (bfloat16), a new schedule
        state = load_file(os.path.join(args.init_hf, "model.safetensors"))
        m.load_state_dict({n: t.float() for n, t in state.items()}, strict=True)
        log["init"] = args.init_hf
    print(f"parameters: {M.count_parameters(m) / 1e6:.2f} M, device {device}", flush=True)
    params = [(n, p) for n, p in m.named_parameters() if "mask_allocator" not in n]
    decay = [p for n, p in params if p.dim() == 2 and "embed" not in n]
    no_decay = [p for n, p in params if not (p.dim() == 2 and "embed" not in n)]
    wd = 0.05
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr,
                            betas=(0.9, 0.95), fused=device == "cuda")
    total = args.total_minutes * 60.0
    clock = multiprocessing.Value("d", min(1.0, elapsed0 / total), lock=False)
    dl = iter(make_loader(args, BASE_MIX, None, "base", step0 * 1000, clock, BASE_EXTRAS,
                          BASE_CURRICULUM))
    prior = elapsed0
    start = time.time()
    step = step0
    L = m.c["num_hidden_layers"]
    gen = torch.Generator().manual_seed(1234 + step0)
    acc = {}
    while True:
        elapsed = elapsed0 + time.time() - start
        if time.time() - start > args.minutes * 60.0 or (args.max_steps and step >= args.max_steps):
            break
        progress = min(1.0, elapsed / total)
        clock.value = progress
        # a fresh optimizer after a resume warms up again
        warm = min(1.0, (step - step0 + 1) / 50.0) if step0 else 1.0
        lr = M.cosine_lr(progress, args.lr) * warm
        for g in opt.param_groups:
            g["lr"] = lr
        b = next(dl)
        ids, labels = b["ids"].to(device), b["labels"].to(device)
        weights, kind = b["weights"].to(device), b["kind"]
        # augmentation: rows whose layers run SA
        n = ids.shape[0]
        sa = torch.zeros(n, L, dtype=torch.bool)
        text_rows = (kind == data.KINDS.index("lm_ppl")) | (kind == data.KINDS.index(data.TEXT))
        r = torch.rand(n, generator=gen)
        sa[text_rows & (r < 0.3)] = True
        for j in ((~text_rows) & (r < 0.2)).nonzero().flatten().tolist():
            k = 1 + int(torch.randint(0, args.sa_task_layers, (1,), generator=gen))
            sa[j, torch.randperm(L, generator=gen)[:k]] = True
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = m(ids, sa_layers=sa.to(device) if sa.any() else None)
        loss, ce = weighted_lm_loss(logits, labels, weights, args.answer_share)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m.base_parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            ok, has = answer_accuracy(logits, labels, weights)
            for i in range(n):
                if has[i] and not sa[i].any():
                    k = data.KINDS[int(kind[i])]
                    a = acc.setdefault(k, [0, 0])
                    a[0] += int(ok[i])
                    a[1] += 1
        if step % args.log_every == 0 or step == step0 + 1:
            entry = {"step": step, "elapsed": round(prior + time.time() - start, 1), "lr": lr, "loss": loss.item(),
                     "T": ids.shape[1], "grad_norm": float(gn),
                     "answer_acc": {k: round(a[0] / max(1, a[1]), 3) for k, a in acc.items()}}
            acc = {}
            log["steps"].append(entry)
            print(json.dumps(entry), flush=True)
    log["step"], log["elapsed"] = step, prior + time.time() - start
    save_shards(m.state_dict(), args.out, "model")
    json.dump(log, open(os.path.join(args.out, "base_log.json"), "w"))
    print(f"saved {args.out} at step {step}, {log['elapsed']:.0f} s of training", flush=True)
    if args.probe:
        log.setdefault("probes", []).append({"step": step, **probe(m, args, device,
                                                                    samples=args.probe)})
        json.dump(log, open(os.path.join(args.out, "base_log.json"), "w"))


def parse_targets(text):
    """--targets "passkey=0.75,kv_retrieval=0.75": SA targets replacing those of TARGETS."""
    targets = dict(TARGETS)
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        kind, sep, value = item.partition("=")
        if not sep or kind not in targets:
            raise SystemExit(f"--targets: expected KIND=FRACTION with KIND one of "
                             f"{', '.join(sorted(targets))}, found '{item}'")
        try:
            targets[kind] = float(value)
        except ValueError:
            raise SystemExit(f"--targets: {kind}: expected a number in [0, 1], found '{value}'")
        if not 0.0 <= targets[kind] <= 1.0:
            raise SystemExit(f"--targets: {kind}: expected a number in [0, 1], found {value}")
    return targets


def train_router(args):
    m, device = common(args)
    if bool(args.init) == bool(args.init_hf):
        raise SystemExit("router: give the frozen base as exactly one of --init DIR (training "
                         "shards) or --init-hf FOLDER (an exported model)")
    if args.init:
        state = load_shards(args.init, "model")
    else:
        state = {n: t.float() for n, t in
                 load_file(os.path.join(args.init_hf, "model.safetensors")).items()}
    m.load_state_dict({n: p for n, p in state.items() if "mask_allocator" not in n}, strict=False)
    targets = parse_targets(args.targets)
    log = {"steps": [], "targets": targets, "init": args.init or args.init_hf}
    step0, elapsed0 = 0, 0.0
    if args.resume:
        m.load_state_dict(load_shards(args.resume, "router"), strict=False)
        log = json.load(open(os.path.join(args.resume, "router_log.json")))
        step0, elapsed0 = log["step"], log["elapsed"]
    for p in m.base_parameters():
        p.requires_grad_(False)
    # Start from "every layer FA" (the frozen model's own mode): logit 1 above logit 0.
    if not args.resume:
        for layer in m.model.layers:
            last = layer.self_attn.mask_allocator.cls_router_head_agnostic[4]
            with torch.no_grad():
                last.bias.copy_(torch.tensor([0.0, 2.0]))
    kinds = data.KINDS
    lam1 = torch.zeros(len(kinds), device=device, requires_grad=True)
    lam2 = torch.zeros(len(kinds), device=device, requires_grad=True)
    target = torch.tensor([targets[k] for k in kinds], device=device)
    opt = torch.optim.AdamW(m.router_parameters(), lr=args.lr, weight_decay=0.0)
    opt_lam = torch.optim.SGD([lam1, lam2], lr=args.lambda_lr, maximize=True)
    total = args.total_minutes * 60.0
    dl = iter(make_loader(args, ROUTER_MIX, ROUTER_BUCKETS, "router", step0 * 1000))
    start = time.time()
    step = step0
    stats = {}
    while True:
        elapsed = elapsed0 + time.time() - start
        if time.time() - start > args.minutes * 60.0 or (args.max_steps and step >= args.max_steps):
            break
        progress = min(1.0, elapsed / total)
        tau = 1.5 - 0.5 * progress
        for g in opt.param_groups:
            g["lr"] = M.cosine_lr(progress, args.lr, warm=0.02)
        b = next(dl)
        ids, labels = b["ids"].to(device), b["labels"].to(device)
        weights, kind = b["weights"].to(device), b["kind"].to(device)
        route = {"prompt_len": b["prompt_len"].to(device), "tau": tau}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = m(ids, route=route)
        lm, ce = weighted_lm_loss(logits, labels, weights, 0.95)
        s = 1.0 - route["fa"].mean(dim=1)  # SA fraction per row
        penalty = 0.0
        present = []
        for k in range(len(kinds)):
            rows = kind == k
            if rows.any():
                sk = s[rows].mean()
                d = sk - target[k]
                penalty = penalty + lam1[k] * d.abs() + lam2[k] * d * d
                present.append((kinds[k], float(sk)))
        loss = lm + penalty
        opt.zero_grad(set_to_none=True)
        opt_lam.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt_lam.step()
        step += 1
        for k, v in present:
            stats.setdefault(k, []).append(v)
        if step % args.log_every == 0 or step == step0 + 1:
            entry = {"step": step, "elapsed": round(elapsed, 1), "tau": round(tau, 3),
                     "lm_loss": lm.item(), "loss": float(loss),
                     "sparsity": {k: round(sum(v) / len(v), 3) for k, v in stats.items()},
                     "lambda1": {k: round(float(lam1[i]), 4) for i, k in enumerate(kinds)},
                     "lambda2": {k: round(float(lam2[i]), 4) for i, k in enumerate(kinds)}}
            stats = {}
            log["steps"].append(entry)
            print(json.dumps(entry), flush=True)
    log["step"], log["elapsed"] = step, elapsed0 + time.time() - start
    save_shards({n: p for n, p in m.state_dict().items() if "mask_allocator" in n}, args.out,
                "router")
    json.dump(log, open(os.path.join(args.out, "router_log.json"), "w"))
    print(f"saved {args.out} at step {step}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["base", "router"])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--init", help="router: the trained base checkpoint folder")
    p.add_argument("--resume")
    p.add_argument("--init-hf", help="base: initial weights from an exported model folder; "
                   "router: the frozen base from an exported model folder (instead of --init)")
    p.add_argument("--targets", default="",
                   help="router: SA targets per kind replacing the defaults, "
                        "e.g. passkey=0.75,kv_retrieval=0.75")
    p.add_argument("--minutes", type=float, default=7.0, help="training time of this call")
    p.add_argument("--total-minutes", type=float, default=None,
                   help="length of the whole schedule (default: --minutes)")
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--answer-share", type=float, default=0.6,
                   help="base: weight of a task row's answer tokens' mean CE in its loss")
    p.add_argument("--sa-task-layers", type=int, default=3,
                   help="base: task rows augmented with SA run 1 to this many random layers SA")
    p.add_argument("--probe", type=int, default=0,
                   help="after training: teacher-forced exact match on this many fresh samples "
                        "per task and length (1K, 4K), every layer FA and every layer SA")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lambda-lr", type=float, default=0.05)
    p.add_argument("--tokens-per-batch", type=int, default=65536)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--log-every", type=int, default=25)
    args = p.parse_args()
    if args.total_minutes is None:
        args.total_minutes = args.minutes
    if args.lr is None:
        args.lr = 2e-3 if args.mode == "base" else 1e-3
    (train_base if args.mode == "base" else train_router)(args)


if __name__ == "__main__":
    main()
