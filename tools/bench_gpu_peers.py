#!/usr/bin/env python3
"""Peers of bench_cuda on the same GPU, in the same run: torch SDPA (flash and cuDNN backends)
for dense causal prefill, FlexAttention with the streaming block mask (sink block 0 + 16 window
blocks of 128, causal), and SDPA decode over a contiguous KV cache. Shapes as bench_cuda:
Hq 32, Hkv 8, D 128, bf16, batch 1 unless said. Prints a table; --json writes the rows."""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F


def bench_ms(fn, repeats=10):
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefill-lengths", default="4096,16384,32768,65536")
    ap.add_argument("--decode-lengths", default="32768,131072")
    ap.add_argument("--decode-batches", default="1,8")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    hq, hkv, d = 32, 8, 128
    dev = "cuda"
    rows = []
    for t in [int(x) for x in args.prefill_lengths.split(",") if x]:
        q = torch.randn(1, hq, t, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16)
        flops = 2.0 * hq * t * t * d
        for name, backend in [("flash", SDPBackend.FLASH_ATTENTION),
                              ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                with sdpa_kernel(backend):
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                enable_gqa=True)
                    ms = bench_ms(fn, 3 if t >= 32768 else 10)
                rows.append({"case": f"torch sdpa {name} prefill causal T={t}", "ms": ms,
                             "tflops": flops / ms / 1e9})
            except Exception as e:  # a backend refusing the shape is reported, not fatal
                rows.append({"case": f"torch sdpa {name} prefill causal T={t}",
                             "error": str(e).splitlines()[0][:120]})
        if t == 32768 and not args.no_flex:
            try:
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention

                def streaming(b, h, qi, ki):
                    qb, kb = qi // 128, ki // 128
                    return (qi >= ki) & ((kb == 0) | (qb - kb <= 16))

                mask = create_block_mask(streaming, 1, 1, t, t, device=dev, BLOCK_SIZE=128)
                flex = torch.compile(flex_attention, dynamic=False)
                t0 = time.time()
                flex(q, k, v, block_mask=mask, enable_gqa=True)
                torch.cuda.synchronize()
                compile_s = time.time() - t0
                ms = bench_ms(lambda: flex(q, k, v, block_mask=mask, enable_gqa=True), 10)
                rows.append({"case": "torch flex_attention streaming sink128+win2048 T=32768",
                             "ms": ms, "compile_s": compile_s})
                causal = create_block_mask(lambda b, h, qi, ki: qi >= ki, 1, 1, t, t, device=dev,
                                           BLOCK_SIZE=128)
                fms = bench_ms(lambda: flex(q, k, v, block_mask=causal, enable_gqa=True), 3)
                rows.append({"case": "torch flex_attention causal T=32768", "ms": fms,
                             "tflops": flops / fms / 1e9})
            except Exception as e:
                rows.append({"case": "torch flex_attention streaming T=32768",
                             "error": str(e).splitlines()[0][:120]})
        del q, k, v
        torch.cuda.empty_cache()
    for bsz in [int(x) for x in args.decode_batches.split(",") if x]:
        for kv in [int(x) for x in args.decode_lengths.split(",") if x]:
            q = torch.randn(bsz, hq, 1, d, device=dev, dtype=torch.bfloat16)
            k = torch.randn(bsz, hkv, kv, d, device=dev, dtype=torch.bfloat16)
            v = torch.randn(bsz, hkv, kv, d, device=dev, dtype=torch.bfloat16)
            ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), 50)
            nbytes = 2.0 * bsz * kv * hkv * d * 2
            rows.append({"case": f"torch sdpa decode B={bsz} KV={kv}", "ms": ms,
                         "tbps": nbytes / ms / 1e9})
            del q, k, v
            torch.cuda.empty_cache()
    print(f"peers on {torch.cuda.get_device_name()} (torch {torch.__version__})")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<62} error: {r['error']}")
            continue
        extra = ""
        if "tflops" in r:
            extra = f"{r['tflops']:10.1f} TFLOP/s"
        if "tbps" in r:
            extra = f"{r['tbps']:10.3f} TB/s"
        print(f"{r['case']:<62} {r['ms']:10.4f} ms {extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
