#!/usr/bin/env python3
"""Per-call overhead of a routing policy written in Python (docs/python.md).

1. decide() driven from C++ exactly as the engine drives it (fluxattn.time_policy): GIL taken,
   the batch and its NumPy arrays built, the answers parsed; for a policy that reads nothing and
   one that reads the queries, over prompt lengths and batch sizes.
2. End to end on the demo model: the prefill of the C++ `static` policy (pattern "FS") against a
   Python policy making the same choices; the difference per decide() call.

    python tools/bench-python-policy.py [--json out.json] [--repeats N]
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import fluxattn

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "models" / "demo" / "configs" / "static_hybrid.toml"


class Alternate:
    """What static pattern "FS" does: sparse on odd layers."""

    needs_queries = False

    def decide(self, batch):
        return ["sparse" if batch.layer % 2 else "full" for _ in batch.requests]


class ReadsQueries(Alternate):
    """The same choices after reading the pooled queries (a norm per request)."""

    needs_queries = True


class ReadsPooled(ReadsQueries):
    """The same, with only the pooled queries copied to Python."""

    needs_queries = "pooled"

    def decide(self, batch):
        return [("sparse" if batch.layer % 2 else "full", [float((r.pooled_queries ** 2).sum())])
                for r in batch.requests]


def micro(iterations):
    rows = []
    for policy in (Alternate(), ReadsPooled(), ReadsQueries()):
        for requests in (1, 8):
            for tokens in ((1,) if not policy.needs_queries else (256, 1024, 4096)):
                seconds = fluxattn.time_policy(policy, requests=requests, rows=tokens, heads=4,
                                               head_dim=32, iterations=iterations)
                if not policy.needs_queries:
                    tokens = 0
                rows.append({"policy": type(policy).__name__, "requests": requests,
                             "query_rows": tokens,
                             "us_per_call": seconds * 1e6})
    return rows


def end_to_end(repeats, prompt_tokens):
    with tempfile.TemporaryDirectory() as tmp:
        text = CONFIG.read_text().replace('path = "../flux-tiny"',
                                          f'path = "{CONFIG.parent.parent / "flux-tiny"}"')
        text = text.replace('plugin = "static"', 'plugin = "python:bench_alternate"')
        text = text.replace('pattern = "FS"', "")
        py_config = pathlib.Path(tmp) / "python_alternate.toml"
        py_config.write_text(text)
        fluxattn.register_policy("bench_alternate", Alternate)
        prompt = [(i * 7919) % 8000 + 16 for i in range(prompt_tokens)]
        engines = {name: fluxattn.Engine.from_config(path, threads=1)
                   for name, path in (("static (C++)", CONFIG), ("python", py_config))}
        times = {name: [] for name in engines}
        last = {}
        for name, engine in engines.items():
            engine.generate(prompt, max_new_tokens=1)  # warm-up
        # Interleaved, so that a busy machine slows both alike.
        for _ in range(repeats):
            for name, engine in engines.items():
                last[name] = engine.generate(prompt, max_new_tokens=1, ignore_eos=True)
                times[name].append(last[name].timing["prefill_seconds"])
        out = {name: {"prefill_ms": statistics.median(times[name]) * 1e3,
                      "choices": "".join("S" if c == "sparse" else "F"
                                         for c in last[name].trace.choices),
                      "layers": engines[name].model_info.num_layers}
               for name in engines}
        c, p = out["static (C++)"], out["python"]
        assert c["choices"] == p["choices"], (c, p)
        per_call_us = (p["prefill_ms"] - c["prefill_ms"]) * 1e3 / p["layers"]
        return {"prompt_tokens": prompt_tokens, "repeats": repeats, "runs": out,
                "overhead_us_per_call": per_call_us}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    args = parser.parse_args()
    rows = micro(args.iterations)
    print("decide() from C++ (fluxattn.time_policy), 4 heads x 32 dims")
    print(f"{'policy':<14}{'requests':>9}{'query rows':>12}{'us/call':>10}")
    for r in rows:
        print(f"{r['policy']:<14}{r['requests']:>9}{r['query_rows']:>12}{r['us_per_call']:>10.1f}")
    e2e = end_to_end(args.repeats, args.prompt_tokens)
    print(f"\nend to end: prefill of {e2e['prompt_tokens']} tokens on the demo model (1 thread), "
          f"median of {e2e['repeats']}")
    for name, r in e2e["runs"].items():
        print(f"  {name:<14}{r['prefill_ms']:>9.2f} ms   layers {r['choices']}")
    print(f"  overhead per decide() call: {e2e['overhead_us_per_call']:.1f} us")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"micro": rows, "end_to_end": e2e}, indent=2)
                                           + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
