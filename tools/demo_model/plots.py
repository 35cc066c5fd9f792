#!/usr/bin/env python3
"""Draws the training curves of the demo model: base loss and teacher-forced answer accuracy
per task (base_log.json of each stage), router LM loss and SA fraction per task
(router_log.json), into one SVG; without --base, the router's curves alone (LM loss and SA
fraction per task).

Usage: plots.py [--base LOG [LOG ...]] --router LOG --out docs/demo-model-training.svg
"""

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def sparsity_panel(ax, router):
    kinds = sorted({k for e in router for k in e["sparsity"]})
    for k in kinds:
        pts = [(e["step"], e["sparsity"][k]) for e in router if k in e["sparsity"]]
        ax.plot([a for a, _ in pts], [b for _, b in pts], lw=1, label=k)
    ax.set(title="router: SA fraction of layers per task", xlabel="step", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", nargs="+", default=[])
    p.add_argument("--router", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    steps = {}
    for path in args.base:
        for e in json.load(open(path))["steps"]:
            steps[e["step"]] = e
    base = [steps[k] for k in sorted(steps)]
    router = json.load(open(args.router))["steps"]
    if not base:
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        ax[0].plot([e["step"] for e in router], [e["lm_loss"] for e in router], lw=1)
        ax[0].set(title="router: LM loss (base frozen)", xlabel="step", ylabel="loss")
        sparsity_panel(ax[1], router)
        fig.tight_layout()
        fig.savefig(args.out)
        print(args.out)
        return
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot([e["step"] for e in base], [e["loss"] for e in base], lw=1)
    ax[0].set(title="base: training loss", xlabel="step", ylabel="loss (per-row mean)")
    kinds = sorted({k for e in base for k in e.get("answer_acc", {})})
    for k in kinds:
        pts = [(e["step"], e["answer_acc"][k]) for e in base if k in e.get("answer_acc", {})]
        ax[1].plot([a for a, _ in pts], [b for _, b in pts], lw=1, label=k)
    ax[1].set(title="base: answers right (teacher-forced)", xlabel="step", ylim=(-0.02, 1.02))
    ax[1].legend(fontsize=7)
    sparsity_panel(ax[2], router)
    fig.tight_layout()
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
