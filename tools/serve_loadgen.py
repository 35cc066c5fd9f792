#!/usr/bin/env python3
"""Load generator for `fluxattn serve` (or any OpenAI-compatible server), using the official
`openai` client (run it with the venv of tools/serve-venv.sh).

For each concurrency level, that many clients send streaming completions back to back for
--seconds (or --requests per client); it reports requests/s, output tokens/s, time to first token
and inter-token latency percentiles, per routing policy when --routing names several (the policies
are assigned round-robin to the requests, so they share the batches: a live A/B comparison of
latency and SA ratio). The clients of a level are spread over several processes (--processes),
so that parsing the event streams in Python does not delay the reads and distort the latencies.

    $(tools/serve-venv.sh) tools/serve_loadgen.py --url http://127.0.0.1:8000/v1 \\
        --concurrency 1,8,32 --prompt-tokens 128 --max-tokens 64 --routing default,all_full
Prints a table and, with --json FILE, writes every figure.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import time

import httpx
import openai


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def one_request(client, model, prompt, max_tokens, routing, seed):
    extra = {"ignore_eos": True}
    if routing and routing != "default":
        extra["routing"] = routing
    t0 = time.perf_counter()
    times = []
    usage = None
    fluxattn = None
    stream = await client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, seed=seed,
        stream=True, stream_options={"include_usage": True}, extra_body=extra)
    async for chunk in stream:
        now = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.text:
                times.append(now)
            if c.finish_reason is not None and chunk.model_extra:
                fluxattn = chunk.model_extra.get("fluxattn")
    end = time.perf_counter()
    ttft = times[0] - t0 if times else end - t0
    itl = [b - a for a, b in zip(times, times[1:])]
    tokens = usage.completion_tokens if usage else len(times)
    sa = fluxattn.get("sa_ratio") if fluxattn else None
    return {"ttft": ttft, "itl": itl, "tokens": tokens, "seconds": end - t0, "sa_ratio": sa}


async def run_level(args, model, concurrency, policies, part=0, parts=1):
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    client = openai.AsyncOpenAI(base_url=args.url, api_key=args.api_key or "unused",
                                max_retries=0, timeout=600,
                                http_client=openai.DefaultAsyncHttpxClient(limits=limits))
    rng = random.Random(args.seed * 1000003 + part)
    results = []
    counter = [0]
    deadline = time.perf_counter() + args.seconds

    async def worker(w):
        done = 0
        while True:
            if args.requests and done >= args.requests:
                return
            if not args.requests and time.perf_counter() >= deadline:
                return
            i = counter[0] * parts + part  # request numbers unique over the processes
            counter[0] += 1
            policy = policies[i % len(policies)]
            prompt = [rng.randrange(args.vocab) for _ in range(args.prompt_tokens)]
            r = await one_request(client, model, prompt, args.max_tokens, policy, i)
            r["policy"] = policy
            results.append(r)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return results, wall


def run_part(job):
    args, model, clients, policies, part, parts = job
    return asyncio.run(run_level(args, model, clients, policies, part, parts))


def run_spread(args, model, concurrency, policies):
    """The level's clients in `parts` processes (as evenly as they go); wall = the longest."""
    parts = max(1, min(concurrency, args.processes or min(8, (os.cpu_count() or 2) // 2)))
    if parts == 1:
        return asyncio.run(run_level(args, model, concurrency, policies))
    jobs = [(args, model, concurrency // parts + (k < concurrency % parts), policies, k, parts)
            for k in range(parts)]
    with multiprocessing.get_context("spawn").Pool(parts) as pool:
        outs = pool.map(run_part, jobs)
    return [r for res, _ in outs for r in res], max(wall for _, wall in outs)


def summarize(results, wall):
    itl = [x for r in results for x in r["itl"]]
    ttft = [r["ttft"] for r in results]
    sa = [r["sa_ratio"] for r in results if r["sa_ratio"] is not None]
    tokens = sum(r["tokens"] for r in results)
    return {
        "requests": len(results),
        "seconds": wall,
        "requests_per_second": len(results) / wall,
        "output_tokens_per_second": tokens / wall,
        "ttft_p50_ms": 1e3 * pct(ttft, 50), "ttft_p90_ms": 1e3 * pct(ttft, 90),
        "ttft_p99_ms": 1e3 * pct(ttft, 99),
        "itl_p50_ms": 1e3 * pct(itl, 50), "itl_p90_ms": 1e3 * pct(itl, 90),
        "itl_p99_ms": 1e3 * pct(itl, 99),
        "sa_ratio_mean": statistics.mean(sa) if sa else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--model", default="", help="default: the server's first model")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--requests", type=int, default=0,
                    help="requests per client instead of --seconds")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=500, help="prompt token ids are drawn below this")
    ap.add_argument("--routing", default="default",
                    help="comma-separated policies (default = the server's [router])")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=0,
                    help="processes the clients are spread over (0: min(8, cores / 2))")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    sync = openai.OpenAI(base_url=args.url, api_key=args.api_key or "unused", max_retries=0)
    model = args.model or sync.models.list().data[0].id
    policies = args.routing.split(",")
    report = {"model": model, "prompt_tokens": args.prompt_tokens,
              "max_tokens": args.max_tokens, "levels": []}
    print(f"model {model}, prompt {args.prompt_tokens} tokens, {args.max_tokens} new tokens, "
          f"policies {policies}")
    header = (f"{'clients':>7} {'policy':>12} {'req':>5} {'req/s':>8} {'tok/s':>9} "
              f"{'ttft p50':>9} {'p99':>8} {'itl p50':>8} {'p90':>7} {'p99':>7} {'SA':>5}")
    print(header)
    for level in [int(x) for x in args.concurrency.split(",")]:
        results, wall = run_spread(args, model, level, policies)
        rows = [("all", summarize(results, wall))]
        if len(policies) > 1:
            for p in policies:
                sub = [r for r in results if r["policy"] == p]
                if sub:
                    rows.append((p, summarize(sub, wall)))
        for name, s in rows:
            sa = "-" if s["sa_ratio_mean"] is None else f"{s['sa_ratio_mean']:.2f}"
            print(f"{level:>7} {name:>12} {s['requests']:>5} {s['requests_per_second']:>8.2f} "
                  f"{s['output_tokens_per_second']:>9.1f} {s['ttft_p50_ms']:>8.1f}ms "
                  f"{s['ttft_p99_ms']:>6.1f}ms {s['itl_p50_ms']:>6.2f}ms "
                  f"{s['itl_p90_ms']:>5.2f}ms {s['itl_p99_ms']:>5.2f}ms {sa:>5}")
            report["levels"].append(dict(s, clients=level, policy=name))
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
