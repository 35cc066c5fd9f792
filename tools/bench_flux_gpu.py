#!/usr/bin/env python3
"""The Flux trade-off on one GPU: prefill and decode speed-up of routing a share of the layers to
streaming attention, against the FA-only run of the same engine in the same call, and decode
throughput of batches that mix decisions.

On the GPU machine, for a random-weight bf16 checkpoint of the Qwen3-4B shape (written with
transformers' save_pretrained, max_position_embeddings raised to 135168 so that 128K prompts are
valid), one `fluxattn bench --device cuda` call runs:
  * the curve: FA-only and a static 25% / 50% / 75% of layers on `streaming` (sink 128 +
    window 2048, blocks of 128; the streaming layers spread evenly over the depth) at every
    context of --contexts: prefill seconds, decode ms/token, KV bytes per request (the pool's
    pages the request holds, not a formula);
  * the batches (one call per batch size): the static shares of --batch-shares (FA-only, 50%
    and every layer but layer 0 on streaming by default) and the `random` router at full_ratio
    0.5 (each request draws its own layers, so one batch mixes decisions), at --batch-context
    tokens, decode tokens/s of the whole batch. The mixed batch is compared with the
    mix-weighted average of the all-FA and all-SA batches' tokens/s (weights from the mixed
    batch's SA ratio against the all-SA batch's).
Writes flux.json (both parts, every sample) into --out and prints the tables;
tools/plot_flux_curve.py turns flux.json into the SVG picture of docs/benchmarks.md.

Usage: python3 tools/bench_flux_gpu.py --fluxattn BUNDLE/bin/fluxattn --work /tmp/flux \\
    --out OUTDIR [--contexts 8192,32768,65536,131072] [--batches 1,8,32]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e_gpu import SHAPES, make_checkpoint  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75)
STREAMING = 'plugin = "streaming"\nsink_tokens = 128\nwindow_tokens = 2048\nblock_size = 128\n'


def streaming_layers(num_layers, share):
    """`share` of the layers, spread evenly (never layer 0, which sees the raw embeddings)."""
    count = round(share * num_layers)
    if count == 0:
        return []
    step = (num_layers - 1) / count
    return sorted({num_layers - 1 - int(i * step) for i in range(count)})


def static_router(num_layers, share):
    """A static router whose pattern sends `streaming_layers(num_layers, share)` to streaming."""
    sa = set(streaming_layers(num_layers, share))
    pattern = "".join("S" if i in sa else "F" for i in range(num_layers))
    return (f'[router]\nplugin = "static"\nfull = "full"\nsparse = "stream"\n'
            f'pattern = "{pattern}"\n')


def write_config(path, folder, pool_mib, body):
    with open(path, "w") as f:
        f.write(f'[model]\npath = "{folder}"\ndevice = "cuda"\n\n[kv]\npool_mib = {pool_mib}\n\n'
                f'[backends.full]\nplugin = "full"\n\n[backends.stream]\n{STREAMING}\n{body}')


def run_bench(binary, configs, args, out_json, timeout=None):
    """One `fluxattn bench` call. Its progress lines go to stderr as they come, each with the
    seconds since the call began, so that a call cut off by `timeout` still shows how far it
    got; returns (rows, seconds), or (None, seconds) when the call timed out."""
    cmd = [binary, "bench"]
    for c in configs:
        cmd += ["--config", c]
    cmd += args + ["--json", out_json]
    print("  $ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail = []

    def relay():
        for line in proc.stderr:
            tail.append(line)
            del tail[:-50]
            sys.stderr.write(f"  [{time.perf_counter() - t0:7.1f} s] {line}")
            sys.stderr.flush()

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(5)
        print(f"  timed out after {timeout} s", flush=True)
        return None, time.perf_counter() - t0
    reader.join(5)
    print(out, end="", flush=True)
    if proc.returncode != 0:
        print("".join(tail), file=sys.stderr)
        raise SystemExit(f"fluxattn bench failed ({proc.returncode})")
    with open(out_json) as f:
        rows = json.load(f)["bench"]
    return rows, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fluxattn", required=True)
    ap.add_argument("--work", required=True, help="folder for the checkpoint and configs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--contexts", default="8192,32768,65536,131072")
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the repeats")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds one batch config may take; a config past it is left out")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--batch-context", type=int, default=4096)
    ap.add_argument("--batch-chunk", type=int, default=0,
                    help="[scheduler] prefill_chunk_tokens of the batch configs (0: whole "
                    "prompts in one step, which at 8 x 32K needs more activation memory than "
                    "an 80 GB card has beside the pool)")
    ap.add_argument("--batch-shares", default="0,0.5,1",
                    help="static shares of streaming layers run beside the mixed batch")
    ap.add_argument("--skip-curve", action="store_true")
    ap.add_argument("--skip-batches", action="store_true")
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    shape = json.loads(json.dumps(SHAPES["qwen3-4b"]))
    shape["kw"]["max_position_embeddings"] = 135168  # 128K prompts plus their decode tokens
    layers = shape["kw"]["num_hidden_layers"]
    folder = os.path.join(args.work, "qwen3-4b-128k")
    t0 = time.perf_counter()
    make_checkpoint("qwen3-4b-128k", shape, folder)
    print(f"checkpoint: {time.perf_counter() - t0:.1f} s", flush=True)
    # K and V of one request at the longest context in bf16, plus a quarter.
    kv_bytes = 2 * layers * max(contexts) * shape["kw"]["num_key_value_heads"] * 128 * 2
    report = {"shape": "qwen3-4b", "layers": layers, "contexts": contexts,
              "decode_tokens": args.decode_tokens, "repeats": args.repeats,
              "streaming": STREAMING.strip().splitlines(), "curve": {}, "batches": {}}
    names = {}
    for share in SHARES:
        name = f"sa{int(share * 100):02d}"
        body = static_router(layers, share)
        path = os.path.join(args.work, f"{name}.toml")
        write_config(path, folder, int(kv_bytes * 1.25) >> 20, body)
        names[share] = path
        report["curve"][name] = {"share": share, "layers": streaming_layers(layers, share)}
    if not args.skip_curve:
        rows, secs = run_bench(args.fluxattn, [names[s] for s in SHARES],
                               ["--context", ",".join(map(str, contexts)), "--decode-tokens",
                                str(args.decode_tokens), "--repeats", str(args.repeats),
                                "--warmup", str(args.warmup)],
                               os.path.join(args.work, "curve.json"))
        report["curve_rows"] = rows
        report["curve_seconds"] = secs
        with open(os.path.join(args.out, "flux.json"), "w") as f:
            json.dump(report, f, indent=2)
    if not args.skip_batches:
        random_cfg = os.path.join(args.work, "random50.toml")
        pool = int(2 * layers * (args.batch_context + 256) * max(batches) * 8 * 128 * 2 * 1.05) >> 20
        sched = (f"[scheduler]\nprefill_chunk_tokens = {args.batch_chunk}\n\n"
                 if args.batch_chunk > 0 else "")
        write_config(random_cfg, folder, pool, sched +
                     '[router]\nplugin = "random"\nfull = "full"\nsparse = "stream"\nseed = 1\n'
                     'full_ratio = 0.5\n')
        static_cfgs = []
        for share in [float(x) for x in args.batch_shares.split(",")]:
            body = static_router(layers, share)
            p = os.path.join(args.work, f"batch-sa{int(share * 100):02d}.toml")
            write_config(p, folder, pool, sched + body)
            static_cfgs.append(p)
        for b in batches:
            # One call per config: a config that runs out of time or memory leaves the others.
            rows = []
            for cfg in static_cfgs + [random_cfg]:
                name = os.path.splitext(os.path.basename(cfg))[0]
                got, secs = run_bench(args.fluxattn, [cfg],
                                      ["--context", str(args.batch_context), "--decode-tokens",
                                       str(args.decode_tokens), "--repeats", str(args.repeats),
                                       "--warmup", str(args.warmup), "--batch", str(b)],
                                      os.path.join(args.work, f"batch{b}-{name}.json"),
                                      args.timeout)
                print(f"  batch {b} {name}: {secs:.1f} s", flush=True)
                rows += got or []
            report["batches"][str(b)] = rows
            with open(os.path.join(args.out, "flux.json"), "w") as f:
                json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "flux.json"), "w") as f:
        json.dump(report, f, indent=2)
    print_tables(report)


def print_tables(report):
    rows = report.get("curve_rows", [])
    base = {r["context"]: r for r in rows if r["config"] == "sa00"}
    if rows:
        print("\nconfig  context  prefill s  speed-up  decode ms  speed-up  SA ratio  KV MiB  KV full MiB")
    for r in rows:
        b = base.get(r["context"])
        ps = b["prefill_seconds"] / r["prefill_seconds"] if b else float("nan")
        ds = b["decode_ms_per_token"] / r["decode_ms_per_token"] if b else float("nan")
        print(f"{r['config']:6s} {r['context']:8d} {r['prefill_seconds']:10.3f} {ps:8.2f}x "
              f"{r['decode_ms_per_token']:9.2f} {ds:8.2f}x {r['sa_ratio']:8.2f} "
              f"{r['kv_bytes'] / 2**20:7.0f} {r['kv_bytes_full_cache'] / 2**20:11.0f}")
    if report["batches"]:
        print("\nbatch  config           SA ratio  decode ms/step  decode tok/s  "
              "tok/s vs mix-weighted  ms/step vs time-weighted")
    for b, rows in report["batches"].items():
        by = {r["config"]: r for r in rows}
        fa, sa = by.get("batch-sa00"), by.get("batch-sa100")
        for r in rows:
            vs = ""
            if fa and sa and r["config"] == "random50" and sa["sa_ratio"] > 0:
                # The all-FA and all-SA tokens/s, weighted by the mixed batch's SA share.
                w = r["sa_ratio"] / sa["sa_ratio"]
                want = ((1 - w) * fa["decode_tokens_per_second"] +
                        w * sa["decode_tokens_per_second"])
                vs = f"{r['decode_tokens_per_second'] / want - 1:+.1%} (of {want:.0f} tok/s)"
                # Their milliseconds per step weighted the same way: a mixed step reads each
                # request's KV and the weights once, so its time is what mixes linearly.
                t = (1 - w) * fa["decode_ms_per_token"] + w * sa["decode_ms_per_token"]
                vs += f"  {r['decode_ms_per_token'] / t - 1:+.1%} (of {t:.2f} ms)"
            print(f"{b:>5s}  {r['config']:15s} {r['sa_ratio']:9.2f} "
                  f"{r['decode_ms_per_token']:15.2f} {r['decode_tokens_per_second']:13.0f}  {vs}")


if __name__ == "__main__":
    main()
