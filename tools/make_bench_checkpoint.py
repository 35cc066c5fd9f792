#!/usr/bin/env python3
"""Random-weight checkpoints for tools/bench-vs-llama.sh, and the summary of its results.

--out DIR writes DIR/hf-f32 and DIR/hf-bf16 (Hugging Face folders: config.json and
model.safetensors) and DIR/gguf-f32.gguf and DIR/gguf-bf16.gguf (the same tensors through gguf-py,
which must be importable: PYTHONPATH=<llama.cpp>/gguf-py). All four hold the same random weights
(normal, std 0.02; norms 1 + that), rounded to bfloat16 first so that the f32 and bf16 files differ
only in storage. The GGUF has a placeholder SentencePiece vocabulary (llama-bench feeds random
token ids and never tokenizes text).

--summarize FILE prints the markdown tables of docs/benchmarks.md from the JSON lines the script
collected.
"""

import argparse
import json
import os
import statistics
import struct
import sys

SHAPE = dict(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072,
             vocab=151936, rope_theta=1000000.0, eps=1e-6, max_positions=40960)


def tensor_list(s):
    h, d, inter, v = s["hidden"], s["head_dim"], s["intermediate"], s["vocab"]
    q, kv = s["heads"] * d, s["kv_heads"] * d
    out = [("model.embed_tokens.weight", (v, h)), ("model.norm.weight", (h,))]
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                (p + "self_attn.q_norm.weight", (d,)), (p + "self_attn.k_norm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                (p + "mlp.down_proj.weight", (h, inter))]
    return out


def bf16_bits(a):
    import numpy as np
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, dtype, arr in tensors:
        n = arr.nbytes
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, arr in tensors:
            f.write(arr.tobytes())


def hf_config(s, dtype):
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
            "hidden_size": s["hidden"], "num_hidden_layers": s["layers"],
            "num_attention_heads": s["heads"], "num_key_value_heads": s["kv_heads"],
            "head_dim": s["head_dim"], "intermediate_size": s["intermediate"],
            "vocab_size": s["vocab"], "rope_theta": s["rope_theta"], "rms_norm_eps": s["eps"],
            "max_position_embeddings": s["max_positions"], "tie_word_embeddings": True,
            "hidden_act": "silu", "attention_bias": False, "torch_dtype": dtype,
            "bos_token_id": 1, "eos_token_id": 2}


def write_gguf(path, s, weights, bf16):
    import gguf
    import numpy as np
    arch = gguf.MODEL_ARCH.QWEN3
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name("random-qwen3-0.6b-shape")
    w.add_context_length(s["max_positions"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["intermediate"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_freq_base(s["rope_theta"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if bf16 else gguf.LlamaFileType.ALL_F32)
    # Placeholder SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, fillers.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(s["vocab"] - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (s["vocab"] - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * s["vocab"])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    names = gguf.get_tensor_name_map(arch, s["layers"])
    for name, arr in weights:
        base = name[: -len(".weight")]
        gname = names.get_name(base) + ".weight"
        if bf16 and arr.ndim == 2:
            w.add_tensor(gname, bf16_bits(arr).view(np.uint8), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(gname, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make(out):
    import numpy as np
    s = SHAPE
    rng = np.random.default_rng(1)
    weights = []
    for name, shape in tensor_list(s):
        a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        if len(shape) == 1:
            a += np.float32(1.0)
        # Rounded to bfloat16 values, so the f32 files hold exactly the bf16 weights.
        a = (bf16_bits(a).astype(np.uint32) << 16).view(np.float32)
        weights.append((name, a))
    for dtype in ("f32", "bf16"):
        d = os.path.join(out, f"hf-{dtype}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_config(s, "float32" if dtype == "f32" else "bfloat16"), f, indent=1)
        ts = []
        for name, a in weights:
            if dtype == "bf16" and a.ndim == 2:
                ts.append((name, "BF16", bf16_bits(a)))
            else:
                ts.append((name, "F32", a))
        write_safetensors(os.path.join(d, "model.safetensors"), ts)
        write_gguf(os.path.join(out, f"gguf-{dtype}.gguf"), s, weights, dtype == "bf16")
        print(f"wrote {d} and gguf-{dtype}.gguf", file=sys.stderr)


def spread(values):
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return med, (hi - lo) / med * 100 if med else 0.0


def summarize(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    # (dtype, threads, test) -> program -> [tok/s per round (median of that round's repeats)]
    table = {}
    for r in rows:
        if r["program"] == "llama.cpp":
            test = f"pp{r['n_prompt']}" if r["n_prompt"] > 0 else f"tg{r['n_gen']}"
            key = (r["dtype"], r["n_threads"], test)
            table.setdefault(key, {}).setdefault("llama.cpp", []).append(r["avg_ts"])
        elif r["program"] == "fluxattn":
            # Decode after the shortest prompt, the closest to llama-bench's tg (empty context).
            shortest = min(x["context"] for x in r["results"])
            act = r.get("activations", "f32")
            for x in r["results"]:
                tests = [(f"pp{x['context']}", "prefill_tokens_per_second")]
                if x["context"] == shortest:
                    tests.append((f"tg{x['decode_tokens']}", "decode_tokens_per_second"))
                for test, field in tests:
                    key = (r["dtype"], x["threads"], test)
                    prog = "fluxattn" if act == "f32" else "fluxattn-" + act
                    table.setdefault(key, {}).setdefault(prog, []).append(x[field]["median"])
    print("| dtype | threads | test | FluxAttn tok/s | llama.cpp tok/s | ratio (rounds) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    def order(k):
        return (k[0] != "f32", k[1], k[2].startswith("tg"), int(k[2][2:]))
    for key in sorted(table, key=order):
        progs = table[key]
        for prog, label in (("fluxattn", key[0]), ("fluxattn-bf16", key[0] + ", bf16 act.")):
            if prog not in progs:
                continue
            f_med, f_sp = spread(progs[prog])
            if "llama.cpp" in progs:
                l_med, l_sp = spread(progs["llama.cpp"])
                ratios = [a / b for a, b in zip(progs[prog], progs["llama.cpp"])]
                print(f"| {label} | {key[1]} | {key[2]} | {f_med:.1f} (±{f_sp:.0f}%) | "
                      f"{l_med:.1f} (±{l_sp:.0f}%) | {statistics.median(ratios):.2f} "
                      f"({min(ratios):.2f}-{max(ratios):.2f}) |")
            elif not key[2].startswith("pp"):
                print(f"| {label} | {key[1]} | {key[2]} | {f_med:.1f} (±{f_sp:.0f}%) | - | - |")
    bandwidth = {}
    for r in rows:
        if r["program"] == "read-bandwidth":
            bandwidth.setdefault(r["threads"], []).append(r["gb_per_s"])
    if bandwidth:
        print()
        print("| memory read, 1 GiB | threads | GB/s (rounds) |")
        print("| --- | ---: | ---: |")
        for t in sorted(bandwidth):
            v = bandwidth[t]
            print(f"| bench_model --read-bandwidth | {t} | {statistics.median(v):.1f} "
                  f"({min(v):.1f}-{max(v):.1f}) |")
    gemm = {}
    for r in rows:
        if r["program"] in ("numpy-blas", "fluxattn-gemm"):
            dt = r.get("dtype", "f32")
            if r.get("activations", "f32") == "bf16":
                dt += ", bf16 act."
            gemm.setdefault((r["threads"], dt), {}).setdefault(r["program"], []).append(r["gflops"])
    if gemm:
        print()
        print("| GEMM 512x3072x1024 | threads | weights | GFLOP/s | share of BLAS f32 |")
        print("| --- | ---: | --- | ---: | ---: |")
        for (t, dt) in sorted(gemm):
            progs = gemm[(t, dt)]
            blas = statistics.median(gemm.get((t, "f32"), {}).get("numpy-blas", [float("nan")]))
            for prog in ("numpy-blas", "fluxattn-gemm"):
                if prog in progs:
                    med, sp = spread(progs[prog])
                    print(f"| {prog} | {t} | {dt} | {med:.1f} (±{sp:.0f}%) | {med / blas:.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    p.add_argument("--summarize")
    a = p.parse_args()
    if a.summarize:
        summarize(a.summarize)
    elif a.out:
        make(a.out)
    else:
        p.error("give --out DIR or --summarize FILE")


if __name__ == "__main__":
    main()
