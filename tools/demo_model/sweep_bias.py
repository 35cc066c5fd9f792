#!/usr/bin/env python3
"""The sparsity dial: runs `fluxattn eval` on the learned router with its `bias` swept, and on
the static and random hybrids at matching SA ratios, and plots accuracy on the retrieval tasks
and SA ratio against bias (SVG), plus a JSON of every point.

Usage: sweep_bias.py --fluxattn build/bin/fluxattn --out docs/demo-model-dial.svg
         [--biases -4,-2,-1,0,1,2,4] [--tasks passkey,kv_retrieval,lm_ppl] [--lengths 1k]
         [--samples 2] [--random-seeds 0,1,2,3]
"""

import argparse
import json
import os
import subprocess
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = """[model]
path = "{model}"

[backends.full]
plugin = "full"

[backends.sparse]
plugin = "streaming"
sink_tokens = 64
window_tokens = 256
block_size = 128

[router]
full = "full"
sparse = "sparse"
{router}
"""


def run(fluxattn, path, args):
    out = path + ".json"
    subprocess.run([fluxattn, "eval", "--config", path, "--tasks", args.tasks, "--lengths",
                    args.lengths, "--samples", str(args.samples), "--threads", "2", "--json", out],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = json.load(open(out))["results"]
    retrieval = [r for r in results if r["task"] != "lm_ppl"]
    return {
        "accuracy": sum(r["accuracy"] for r in retrieval) / max(1, len(retrieval)),
        "sa_ratio": sum(r["sa_ratio"] for r in results) / len(results),
        "sa_by_task": {r["task"]: r["sa_ratio"] for r in results},
        "ppl": next((r["perplexity"] for r in results if r["task"] == "lm_ppl"), None),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fluxattn", default=os.path.join(ROOT, "build", "bin", "fluxattn"))
    p.add_argument("--model", default=os.path.join(ROOT, "models", "demo", "flux-tiny"))
    p.add_argument("--biases", default="-4,-2,-1,0,1,2,4")
    p.add_argument("--tasks", default="passkey,kv_retrieval,lm_ppl")
    p.add_argument("--lengths", default="1k")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--random-seeds", default="1",
                   help="seeds of the random hybrid at each ratio; the plot shows their mean "
                        "(each sample of an eval is a request with its own seed, so every "
                        "prompt draws its own pattern; the config seed varies the draws)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    points = {"flux": [], "static": [], "random": []}
    with tempfile.TemporaryDirectory() as tmp:
        for b in [float(x) for x in args.biases.split(",")]:
            path = os.path.join(tmp, f"flux_{b}.toml")
            open(path, "w").write(CONFIG.format(model=args.model,
                                                router=f'plugin = "flux"\nbias = {b}'))
            r = run(args.fluxattn, path, args)
            r["bias"] = b
            points["flux"].append(r)
            print("flux", json.dumps(r), flush=True)
            # static and random hybrids at the router's SA ratio (static: the first k layers full)
            layers = 8
            full = max(0, min(layers, round(layers * (1 - r["sa_ratio"]))))
            pattern = "F" * full + "S" * (layers - full)
            path = os.path.join(tmp, f"static_{b}.toml")
            open(path, "w").write(CONFIG.format(model=args.model,
                                                router=f'plugin = "static"\npattern = "{pattern}"'))
            s = run(args.fluxattn, path, args)
            s["pattern"] = pattern
            points["static"].append(s)
            per_seed = []
            for seed in [int(x) for x in args.random_seeds.split(",")]:
                path = os.path.join(tmp, f"random_{b}_{seed}.toml")
                open(path, "w").write(CONFIG.format(
                    model=args.model, router=f'plugin = "random"\nseed = {seed}\n'
                    f'full_ratio = {1 - r["sa_ratio"]:.4f}'))
                one = run(args.fluxattn, path, args)
                one["seed"] = seed
                per_seed.append(one)
            q = {"accuracy": sum(x["accuracy"] for x in per_seed) / len(per_seed),
                 "sa_ratio": sum(x["sa_ratio"] for x in per_seed) / len(per_seed),
                 "seeds": per_seed}
            points["random"].append(q)
            print("static", json.dumps(s), "random", json.dumps(q), flush=True)
    json.dump(points, open(os.path.splitext(args.out)[0] + ".json", "w"), indent=1)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, marker in (("flux", "o-"), ("static", "s--"), ("random", "^:")):
        pts = points[name]
        label = name if name != "random" else f"random (mean of seeds {args.random_seeds})"
        ax[0].plot([q["sa_ratio"] for q in pts], [q["accuracy"] for q in pts], marker, label=label)
    ax[0].set(xlabel="SA ratio (all decisions)", ylabel="mean exact match, retrieval tasks",
              ylim=(-0.05, 1.05), title=f"accuracy against SA ratio ({args.lengths})")
    ax[0].legend()
    fl = points["flux"]
    for task in fl[0]["sa_by_task"]:
        ax[1].plot([q["bias"] for q in fl], [q["sa_by_task"][task] for q in fl], "o-", label=task)
    ax[1].set(xlabel="router bias", ylabel="SA ratio", ylim=(-0.05, 1.05),
              title="learned router: SA ratio per task against bias")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
