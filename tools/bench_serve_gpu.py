#!/usr/bin/env python3
"""`fluxattn serve` under load on the GPU machine: a random-weight Qwen3-4B-shaped checkpoint
(tools/bench_e2e_gpu.py's), served on CUDA, driven by tools/serve_loadgen.py (the official
`openai` client) at 1, 8 and 32 concurrent streaming clients.

A random checkpoint has no tokenizer; this writes a synthetic byte-level BPE tokenizer.json
covering the model's vocabulary (the 256 byte symbols, then two- and three-symbol merges), so
that every id the model samples decodes to text. The load generator sends token-id prompts.

Usage (GPU machine): python3 tools/bench_serve_gpu.py --fluxattn BUNDLE/bin/fluxattn \\
    --python VENV/bin/python --work /tmp/serve --out OUTDIR [--concurrency 1,8,32]
(VENV: a virtual environment with the `openai` package, e.g. from tools/serve-venv.sh, or from
wheels carried along: python3 -m venv V && V/bin/pip install --no-index --find-links W openai)
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e_gpu import SHAPES, make_checkpoint  # noqa: E402


def byte_symbols():
    """GPT-2's byte-to-symbol table: printable bytes as themselves, the rest shifted past 255."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def write_synthetic_tokenizer(folder, vocab_size, eos_id):
    symbols = byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    merges = []
    pairs = ((a, b) for a in symbols for b in symbols)
    for a, b in pairs:
        if len(vocab) >= vocab_size - 1:
            break
        vocab[a + b] = len(vocab)
        merges.append(f"{a} {b}")
    # Three symbols: a pair then a symbol, while ids remain.
    two = [t for t in vocab if len(t) == 2]
    for ab in two:
        for c in symbols:
            if len(vocab) >= vocab_size - 1:
                break
            vocab[ab + c] = len(vocab)
            merges.append(f"{ab} {c}")
        if len(vocab) >= vocab_size - 1:
            break
    eos = "<|endoftext|>"
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": eos_id, "content": eos, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": eos, "model_max_length": 40960}, f)


def wait_healthy(url, proc, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fluxattn serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"fluxattn serve: no /health within {seconds} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fluxattn", required=True)
    ap.add_argument("--python", required=True, help="a python with the openai package")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--prefill-chunk", default="256,0",
                    help="comma list of `fluxattn serve --prefill-chunk` values (0: whole prompts)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    shape = SHAPES["qwen3-4b"]
    folder = os.path.join(args.work, "qwen3-4b")
    make_checkpoint("qwen3-4b", shape, folder)
    vocab = shape["kw"]["vocab_size"]
    write_synthetic_tokenizer(folder, vocab, vocab - 1)
    config = os.path.join(args.work, "serve.toml")
    with open(config, "w") as f:
        f.write(f'[model]\npath = "{folder}"\ndevice = "cuda"\n\n[kv]\npool_mib = 16384\n\n'
                '[backends.full]\nplugin = "full"\n\n[server]\nmax_running_requests = 64\nmax_queued_requests = 256\n')
    summary = []
    for chunk in [int(c) for c in args.prefill_chunk.split(",")]:
        summary.append((chunk, serve_levels(args, config, vocab, chunk)))
    print("\nprefill chunk | clients | tok/s | ITL p50 ms | ITL p99 ms | TTFT p50 ms")
    for chunk, levels in summary:
        for lv in levels:
            if lv["policy"] != "all":
                continue
            sv = lv.get("server", {}).get("step_seconds", {})
            print(f"{chunk or 'whole':>13} | {lv['clients']:>7} | {lv['output_tokens_per_second']:8.1f} | "
                  f"{lv['itl_p50_ms']:10.2f} | {lv['itl_p99_ms']:10.2f} | {lv['ttft_p50_ms']:10.1f}"
                  f" | server steps > 10/25/50 ms: {100 * sv.get('above_10ms', 0):.1f}% / "
                  f"{100 * sv.get('above_25ms', 0):.2f}% / {100 * sv.get('above_50ms', 0):.2f}%")
        by = {lv["clients"]: lv for lv in levels if lv["policy"] == "all"}
        if 1 in by and 32 in by:
            print(f"prefill chunk {chunk or 'whole'}: throughput 32 / 1 clients "
                  f"{by[32]['output_tokens_per_second'] / by[1]['output_tokens_per_second']:.1f}x; "
                  f"p99 inter-token latency 32 / 1: {by[32]['itl_p99_ms'] / by[1]['itl_p99_ms']:.2f}x")


def scrape(url):
    """The server's histograms: {name: [(le, cumulative count), ...]}."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    hist = {}
    for line in text.splitlines():
        if "_bucket{" not in line:
            continue
        name, rest = line.split("_bucket{", 1)
        le = rest.split('le="', 1)[1].split('"', 1)[0]
        hist.setdefault(name, []).append((float("inf") if le == "+Inf" else float(le),
                                          float(line.rsplit(" ", 1)[1])))
    return hist


def server_view(before, after):
    """What the server saw during one level: per histogram, the share of observations above
    10, 25 and 50 ms, and the bucket bound below which 99% fall."""
    out = {}
    for name in ("fluxattn_step_seconds", "fluxattn_inter_token_latency_seconds"):
        if name not in after:
            continue
        b = dict(before.get(name, []))
        rows = [(le, n - b.get(le, 0.0)) for le, n in after[name]]
        total = rows[-1][1] if rows else 0.0
        if total <= 0:
            continue
        above = {f"above_{int(t * 1e3)}ms": 1.0 - next(n for le, n in rows if le >= t) / total
                 for t in (0.01, 0.025, 0.05)}
        p99 = next(le for le, n in rows if n >= 0.99 * total)
        out[name.replace("fluxattn_", "")] = dict(above, count=total, p99_bound_s=p99)
    return out


def serve_levels(args, config, vocab, chunk):
    """Starts the server with `--prefill-chunk chunk` (0: whole prompts), runs the load levels,
    returns them (also written to serve_load_chunk<chunk>.json)."""
    log = open(os.path.join(args.out, f"serve_chunk{chunk}.log"), "w")
    proc = subprocess.Popen([args.fluxattn, "serve", "--config", config, "--port",
                             str(args.port), "--prefill-chunk", str(chunk)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    out_json = os.path.join(args.out, f"serve_load_chunk{chunk}.json")
    try:
        wait_healthy(url, proc, 300)
        # One short warm-up level (GEMM heuristics, cuDNN graphs), then the measured levels.
        base = [args.python, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "serve_loadgen.py"), "--url", url + "/v1",
                "--prompt-tokens", str(args.prompt_tokens), "--max-tokens",
                str(args.max_tokens), "--vocab", str(vocab - 1)]
        subprocess.run(base + ["--concurrency", "4", "--requests", "2"], check=True,
                       stdout=subprocess.DEVNULL)
        levels = []
        for clients in args.concurrency.split(","):
            before = scrape(url)
            level_json = out_json + f".{clients}"
            subprocess.run(base + ["--concurrency", clients, "--seconds", str(args.seconds),
                                   "--json", level_json], check=True)
            after = scrape(url)
            for lv in json.load(open(level_json))["levels"]:
                lv["server"] = server_view(before, after)
                levels.append(lv)
            os.remove(level_json)
        json.dump({"levels": levels}, open(out_json, "w"), indent=2)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return json.load(open(out_json))["levels"]

if __name__ == "__main__":
    main()
