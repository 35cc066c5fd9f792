#!/usr/bin/env python3
"""XAttention prefill on one GPU: the antidiagonal scoring on the device and the block-sparse
kernel over the chosen blocks, against the FA-only run of the same engine in the same call.

On the GPU machine, for the random-weight bf16 checkpoint of the Qwen3-4B shape that
bench_flux_gpu.py writes, one `fluxattn bench --device cuda` call runs FA-only (`sa00`) and a
`static` router sending every layer but layer 0 to `xattention` (blocks of 128, stride 8, sink
block 1) at each threshold of --thresholds (`xa90` for 0.9, ...), prefill then --decode-tokens
(XAttention's decode is dense causal, so decode should match FA-only). Random weights give
nearly uniform attention, so the blocks kept track the threshold rather than any structure of a
trained model: the table shows what the scoring costs and what a given density buys, not the
accuracy of a real checkpoint. Writes xattention.json into --out and prints the table.

Usage: python3 tools/bench_xattention_gpu.py --fluxattn BUNDLE/bin/fluxattn --work /tmp/xa \\
    --out OUTDIR [--contexts 8192,32768] [--thresholds 0.9,0.5]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e_gpu import SHAPES, make_checkpoint  # noqa: E402
from bench_flux_gpu import run_bench  # noqa: E402


def write_config(path, folder, pool_mib, layers, threshold):
    body = (f'[model]\npath = "{folder}"\ndevice = "cuda"\n\n[kv]\npool_mib = {pool_mib}\n\n'
            '[backends.full]\nplugin = "full"\n')
    if threshold is not None:
        pattern = "F" + "S" * (layers - 1)
        body += (f'\n[backends.xattn]\nplugin = "xattention"\nblock_size = 128\nstride = 8\n'
                 f'threshold = {threshold}\nsink_blocks = 1\n\n[router]\nplugin = "static"\n'
                 f'full = "full"\nsparse = "xattn"\npattern = "{pattern}"\n')
    with open(path, "w") as f:
        f.write(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fluxattn", required=True)
    ap.add_argument("--work", required=True, help="folder for the checkpoint and configs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--contexts", default="8192,32768")
    ap.add_argument("--thresholds", default="0.9,0.5")
    ap.add_argument("--decode-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    shape = json.loads(json.dumps(SHAPES["qwen3-4b"]))
    shape["kw"]["max_position_embeddings"] = 135168
    layers = shape["kw"]["num_hidden_layers"]
    folder = os.path.join(args.work, "qwen3-4b-128k")
    t0 = time.perf_counter()
    make_checkpoint("qwen3-4b-128k", shape, folder)
    print(f"checkpoint: {time.perf_counter() - t0:.1f} s", flush=True)
    kv_bytes = 2 * layers * max(contexts) * shape["kw"]["num_key_value_heads"] * 128 * 2
    pool_mib = int(kv_bytes * 1.25) >> 20
    configs = []
    for t in [None] + thresholds:
        name = "sa00" if t is None else f"xa{int(round(t * 100)):02d}"
        path = os.path.join(args.work, f"{name}.toml")
        write_config(path, folder, pool_mib, layers, t)
        configs.append(path)
    rows, secs = run_bench(args.fluxattn, configs,
                           ["--context", ",".join(map(str, contexts)), "--decode-tokens",
                            str(args.decode_tokens), "--repeats", str(args.repeats),
                            "--warmup", "1"], os.path.join(args.work, "xattention-bench.json"))
    report = {"shape": "qwen3-4b", "layers": layers, "contexts": contexts,
              "thresholds": thresholds, "repeats": args.repeats, "rows": rows, "seconds": secs}
    with open(os.path.join(args.out, "xattention.json"), "w") as f:
        json.dump(report, f, indent=2)
    base = {r["context"]: r for r in rows if r["config"] == "sa00"}
    print("\nconfig  context  prefill s [samples]            vs FA-only  decode ms  SA ratio")
    for r in rows:
        b = base.get(r["context"])
        ratio = b["prefill_seconds"] / r["prefill_seconds"] if b else float("nan")
        samples = ", ".join(f"{x:.3f}" for x in r.get("prefill_seconds_samples", []))
        print(f"{r['config']:6s} {r['context']:8d} {r['prefill_seconds']:9.3f} [{samples}]"
              f" {ratio:9.2f}x {r['decode_ms_per_token']:9.2f} {r['sa_ratio']:8.2f}")


if __name__ == "__main__":
    main()
