#!/usr/bin/env python3
"""End-to-end prefill and decode of whole models on one GPU: FluxAttn against Hugging Face
transformers (attn_implementation="sdpa", bf16) on the same random-weight checkpoint, in one run.

For each shape it writes a random bf16 checkpoint (config.json + safetensors, through
transformers' save_pretrained), times transformers, frees the GPU, then runs `fluxattn bench
--device cuda` on the same folder with every layer on full attention, and prints one table
(prefill seconds, decode ms/token, the ratio transformers / FluxAttn) plus the JSON of both.

Work per point, written first (the floors the kernels are judged against, H200: ~989 TFLOP/s
dense bf16, ~4.8 TB/s HBM):
  prefill FLOPs  = 2 * params_without_embedding * T + 4 * layers * T^2 / 2 * Hq * D (causal)
  decode bytes   = weight bytes + KV bytes read at context T (2 * layers * T * Hkv * D * 2)

Usage (on the GPU machine): python3 tools/bench_e2e_gpu.py --fluxattn BUNDLE/bin/fluxattn
    --work /tmp/e2e --out OUTDIR [--shapes qwen3-4b,llama3.1-8b] [--contexts 8192,32768]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = {
    # Qwen3-4B: tied embeddings, q/k norms.
    "qwen3-4b": dict(cls="Qwen3Config", model="Qwen3ForCausalLM",
                     kw=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             vocab_size=151936, max_position_embeddings=40960, rope_theta=1e6,
                             rms_norm_eps=1e-6, tie_word_embeddings=True)),
    # Llama-3.1-8B with its llama3 RoPE scaling.
    "llama3.1-8b": dict(cls="LlamaConfig", model="LlamaForCausalLM",
                        kw=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=8,
                                vocab_size=128256, max_position_embeddings=131072,
                                rope_theta=500000.0, rms_norm_eps=1e-5,
                                tie_word_embeddings=False,
                                rope_scaling=dict(rope_type="llama3", factor=8.0,
                                                  low_freq_factor=1.0, high_freq_factor=4.0,
                                                  original_max_position_embeddings=8192))),
}


def work(shape, t):
    kw = shape["kw"]
    h, L, hq, hkv = kw["hidden_size"], kw["num_hidden_layers"], kw["num_attention_heads"], \
        kw["num_key_value_heads"]
    d = kw.get("head_dim", h // hq)
    inter = kw["intermediate_size"]
    per_layer = h * (hq * d) * 2 + h * (hkv * d) * 2 + 3 * h * inter
    params = L * per_layer + kw["vocab_size"] * h  # lm_head is read once per token
    flops = 2 * params * t + 2 * L * t * t * hq * d  # QK^T and PV, causal half of 4*T^2*Hq*D
    decode_bytes = 2 * params + 2 * L * t * hkv * d * 2
    return flops, decode_bytes, params


def make_checkpoint(name, shape, folder):
    import torch
    import transformers
    if os.path.exists(os.path.join(folder, "config.json")):
        return
    cfg = getattr(transformers, shape["cls"])(**shape["kw"])
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = getattr(transformers, shape["model"])(cfg).to(torch.bfloat16)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="4GB")
    del model
    torch.cuda.empty_cache()


def last_logits_call(model):
    """model(...) computing logits of the last position only, in the spelling this transformers
    version knows (logits_to_keep, earlier num_logits_to_keep)."""
    import inspect
    names = inspect.signature(model.forward).parameters
    key = "logits_to_keep" if "logits_to_keep" in names else "num_logits_to_keep"
    return lambda **kw: model(**kw, **{key: 1})


def time_transformers(folder, contexts, decode_tokens, repeats):
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    vocab = model.config.vocab_size
    call = last_logits_call(model)
    rows = []
    for t in contexts:
        prefill, decode = [], []
        for r in range(-1, repeats):  # r = -1: an untimed warm-up run
            g = torch.Generator(device="cuda").manual_seed(max(r, 0))
            ids = torch.randint(0, vocab, (1, t), device="cuda", generator=g)
            torch.cuda.synchronize()
            with torch.no_grad():
                t0 = time.perf_counter()
                out = call(input_ids=ids, use_cache=True)
                torch.cuda.synchronize()
                prefill.append(time.perf_counter() - t0)
                past = out.past_key_values
                nxt = out.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(decode_tokens):
                    out = call(input_ids=nxt, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    nxt = out.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                decode.append(1e3 * (time.perf_counter() - t0) / max(decode_tokens, 1))
            del out, past
            torch.cuda.empty_cache()
        prefill, decode = prefill[1:], decode[1:]  # drop the warm-up
        rows.append(dict(context=t, prefill_s=prefill, decode_ms=decode))
        print(f"  transformers T={t}: prefill {statistics.median(prefill):.3f} s, "
              f"decode {statistics.median(decode):.2f} ms/token", flush=True)
    del model
    torch.cuda.empty_cache()
    return dict(version=transformers.__version__, torch=torch.__version__, rows=rows)


def time_fluxattn(binary, folder, contexts, decode_tokens, repeats, work_dir, name,
                  dense_prefill, env=None, label=""):
    """One `fluxattn bench` call over one config per [attention] dense_prefill choice, with
    `env` added to the environment."""
    pool_mib = 12288
    configs = []
    for kernel in dense_prefill:
        config = os.path.join(work_dir, f"{name}-{kernel}.toml")
        with open(config, "w") as f:
            f.write(f'[model]\npath = "{folder}"\ndevice = "cuda"\n\n'
                    f'[attention]\ndense_prefill = "{kernel}"\n\n'
                    f'[backends.full]\nplugin = "full"\n\n[kv]\npool_mib = {pool_mib}\n')
        configs += ["--config", config]
    out_json = os.path.join(work_dir, f"{name}-fluxattn{'-' + label if label else ''}.json")
    cmd = [binary, "bench", *configs, "--context",
           ",".join(str(c) for c in contexts), "--decode-tokens", str(decode_tokens),
           "--repeats", str(repeats), "--warmup", "1", "--json", out_json]
    print("  $ " + "".join(f"{k}={v} " for k, v in (env or {}).items()) + " ".join(cmd),
          flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return dict(error=proc.stderr.strip().splitlines()[-1:] or ["failed"],
                    seconds=time.perf_counter() - t0)
    with open(out_json) as f:
        return dict(result=json.load(f), seconds=time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fluxattn", required=True)
    ap.add_argument("--work", required=True, help="folder for the checkpoints (tens of GB)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", default="qwen3-4b")
    ap.add_argument("--contexts", default="8192,32768")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-prefill", default="auto",
                    help="comma-separated [attention] dense_prefill choices, one FluxAttn "
                         "config each (auto, cudnn, fluxattn)")
    ap.add_argument("--variants", default="",
                    help="FluxAttn runs under other environments, one bench call each, in the "
                         "order given: 'LABEL:VAR=VALUE,VAR=VALUE;LABEL:...' (for example "
                         "'pdl-off:FLUXATTN_CUDA_PDL=0;pdl-on:FLUXATTN_CUDA_PDL=1')")
    args = ap.parse_args()
    variants = []
    for item in filter(None, args.variants.split(";")):
        label, _, assignments = item.partition(":")
        env = dict(a.split("=", 1) for a in filter(None, assignments.split(",")))
        variants.append((label, env))
    variants = variants or [("", {})]
    contexts = [int(c) for c in args.contexts.split(",")]
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    report = {"contexts": contexts, "decode_tokens": args.decode_tokens,
              "repeats": args.repeats, "shapes": {}}
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        folder = os.path.join(args.work, name)
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        make_checkpoint(name, shape, folder)
        print(f"  checkpoint: {time.perf_counter() - t0:.1f} s", flush=True)
        hf = time_transformers(folder, contexts, args.decode_tokens, args.repeats)
        fa = {label: dict(env=env, **time_fluxattn(args.fluxattn, folder, contexts,
                                                    args.decode_tokens, args.repeats, args.work,
                                                    name, args.dense_prefill.split(","), env,
                                                    label))
              for label, env in variants}
        report["shapes"][name] = dict(transformers=hf, fluxattn=fa)
        with open(os.path.join(args.out, "e2e.json"), "w") as f:
            json.dump(report, f, indent=2)
    # The table: medians, [min, max] of the repeats after the warm-up.
    def spread(xs):
        return f"[{min(xs):.3g}, {max(xs):.3g}]" if xs else ""

    print("\nshape        T      phase   work          transformers (sdpa)              "
          "FluxAttn                          transformers / FluxAttn")
    for name, r in report["shapes"].items():
        fa_rows = {}  # (variant config, context) -> row
        for label, run in r["fluxattn"].items():
            for row in run.get("result", {}).get("bench", []):
                config = f"{label} {row['config']}".strip()
                fa_rows[(config, int(row.get("context", 0)))] = row
        configs = list(dict.fromkeys(c for c, _ in fa_rows))
        for row in r["transformers"]["rows"]:
            t = row["context"]
            flops, dbytes, _ = work(SHAPES[name], t)
            hp = statistics.median(row["prefill_s"])
            hd = statistics.median(row["decode_ms"])
            for config in configs or [""]:
                fr = fa_rows.get((config, t), {})
                fp = fr.get("prefill_seconds")
                fd = fr.get("decode_ms_per_token")
                label = f"{name} {config}".strip()
                print(f"{label:24s} {t:6d} prefill {flops / 1e12:7.1f} TFLOP  {hp:7.3f} s "
                      f"{spread(row['prefill_s']):18s} {flops / hp / 1e12:4.0f} TF/s  "
                      + (f"{fp:7.3f} s {spread(fr.get('prefill_seconds_samples', [])):18s} "
                         f"{flops / fp / 1e12:4.0f} TF/s  {hp / fp:5.2f}x" if fp else "-"))
                print(f"{label:24s} {t:6d} decode  {dbytes / 1e9:7.2f} GB     {hd:7.2f} ms "
                      f"{spread(row['decode_ms']):18s} {dbytes / hd / 1e9:4.2f} TB/s  "
                      + (f"{fd:7.2f} ms {spread(fr.get('decode_ms_per_token_samples', [])):18s}"
                         f"{dbytes / fd / 1e9:4.2f} TB/s  {hd / fd:5.2f}x" if fd else "-"))
                if fr.get("dense_prefill_kernel"):
                    print(f"{'':24s}        dense prefill kernel: {fr['dense_prefill_kernel']}")

if __name__ == "__main__":
    main()
