#!/usr/bin/env python3
"""Builds tiny random-weight Hugging Face checkpoints and reference outputs for tests/models.

For each fixture it writes tests/fixtures/models/<name>/ with config.json, safetensors weights
(single file or sharded with model.safetensors.index.json) and reference.json holding, computed
by transformers (attn_implementation="eager", float32):
  - prompts: token id lists (random, seeded)
  - last_logits[i]: logits at the last position of prompt i
  - all_logits: logits at every position of prompt 0 (a short prompt)
  - greedy[i]: greedy continuation of prompt i (argmax of a full forward per step, no cache,
    no stop tokens), with the smallest top-1/top-2 logit margin seen
Weights stored as bf16/f16 are rounded first; the reference uses those rounded weights upcast to
float32. Deterministic (seeded); runs with transformers 4.4x and 5.x.

The *_d128_* fixtures have the head dimension of real checkpoints (128, what the CUDA kernels
read natively), bf16 weights and a prompt of several thousand tokens (Llama 3.1 with llama3 RoPE
scaling below its original context, so the scaled frequencies matter); they are best made on a
GPU (--device cuda), where the float32 reference is still computed in float32.

Usage: python3 tools/make_model_fixtures.py [--out tests/fixtures/models] [--only a,b]
       [--device cpu|cuda]
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

GREEDY_TOKENS = 10
PROMPT_LENGTHS = (7, 1, 23)


def make_config(cls, rope, **kw):
    """Config with RoPE given in the form this transformers version understands."""
    theta = rope.pop("rope_theta")
    params = dict(rope)
    try:
        cfg = cls(rope_parameters=dict(params, rope_theta=theta), **kw)
        if getattr(cfg, "rope_parameters", None):
            return cfg
    except TypeError:
        pass
    scaling = params if params.get("rope_type", "default") != "default" else None
    return cls(rope_theta=theta, rope_scaling=scaling, **kw)


FIXTURES = [
    # name, architecture class, config kwargs, rope, dtype, tied, shards, config form
    dict(name="llama3_f32", cls="LlamaConfig", model="LlamaForCausalLM", dtype="f32",
         kw=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=96, vocab_size=320,
                 tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=256,
                 bos_token_id=1, eos_token_id=2),
         rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=64)),
    # Same shape, bf16, tied, sharded, and config.json rewritten in the legacy
    # rope_theta + rope_scaling form.
    dict(name="llama3_bf16_tied_sharded", cls="LlamaConfig", model="LlamaForCausalLM",
         dtype="bf16", shards=3, legacy_rope=True,
         kw=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                 num_key_value_heads=1, intermediate_size=80, vocab_size=300,
                 tie_word_embeddings=True, rms_norm_eps=1e-5, max_position_embeddings=256,
                 bos_token_id=1, eos_token_id=[2, 3]),
         rope=dict(rope_type="llama3", rope_theta=10000.0, factor=4.0, low_freq_factor=1.0,
                   high_freq_factor=2.0, original_max_position_embeddings=32)),
    dict(name="qwen2_f16_tied", cls="Qwen2Config", model="Qwen2ForCausalLM", dtype="f16",
         kw=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=72, vocab_size=400,
                 tie_word_embeddings=True, rms_norm_eps=1e-6, max_position_embeddings=256,
                 eos_token_id=5),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="qwen2_f32", cls="Qwen2Config", model="Qwen2ForCausalLM", dtype="f32",
         kw=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=2, intermediate_size=96, vocab_size=352,
                 tie_word_embeddings=False, rms_norm_eps=1e-6, max_position_embeddings=256),
         rope=dict(rope_type="default", rope_theta=10000.0)),
    # Qwen3: head_dim 24 while hidden / heads = 16.
    dict(name="qwen3_f32", cls="Qwen3Config", model="Qwen3ForCausalLM", dtype="f32",
         kw=dict(hidden_size=64, head_dim=24, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=80, vocab_size=400,
                 tie_word_embeddings=False, rms_norm_eps=1e-6, max_position_embeddings=256,
                 eos_token_id=7),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="qwen3_bf16_tied", cls="Qwen3Config", model="Qwen3ForCausalLM", dtype="bf16",
         kw=dict(hidden_size=48, head_dim=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, intermediate_size=64, vocab_size=333,
                 tie_word_embeddings=True, rms_norm_eps=1e-6, max_position_embeddings=256),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    # A Flux checkpoint: Qwen3 weights plus layer-router tensors in the published key layout.
    # The reference is the plain Qwen3 forward (every layer full attention).
    dict(name="paw_qwen3_f32", cls="Qwen3Config", model="Qwen3ForCausalLM", dtype="f32",
         paw=True,
         kw=dict(hidden_size=64, head_dim=16, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=96, vocab_size=300,
                 tie_word_embeddings=False, rms_norm_eps=1e-6, max_position_embeddings=256),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="qwen3_d128_bf16", cls="Qwen3Config", model="Qwen3ForCausalLM", dtype="bf16",
         prompt_lengths=(9, 8000, 1), greedy_tokens=6,
         kw=dict(hidden_size=256, head_dim=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=384, vocab_size=512,
                 tie_word_embeddings=False, rms_norm_eps=1e-6, max_position_embeddings=16384),
         rope=dict(rope_type="default", rope_theta=1000000.0)),
    dict(name="llama31_d128_bf16", cls="LlamaConfig", model="LlamaForCausalLM", dtype="bf16",
         prompt_lengths=(5, 6000, 2), greedy_tokens=6,
         kw=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, intermediate_size=384, vocab_size=512,
                 tie_word_embeddings=False, rms_norm_eps=1e-5, max_position_embeddings=16384,
                 bos_token_id=1, eos_token_id=2),
         rope=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=1024)),
]

DEVICE = "cpu"

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def randomize(model, gen):
    """Weights large enough that greedy choices have clear margins."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in ** 0.5))


def short(x):
    """8 significant digits: far below the 1e-4 tolerance, half the fixture size."""
    return float("%.8g" % float(x))


def forward_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long, device=DEVICE),
                    use_cache=False)
    return out.logits[0].to(torch.float64).cpu()


def greedy(model, ids, steps):
    seq = list(ids)
    margin = float("inf")
    for _ in range(steps):
        last = forward_logits(model, seq)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        seq.append(int(torch.argmax(last)))
    return seq[len(ids):], margin


def router_tensors(cfg, gen):
    """Random Flux layer-router weights (D -> 8D -> 2D; 2D -> 4D -> D -> 2)."""
    d = cfg.head_dim
    out = {}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.self_attn.mask_allocator."
        shapes = {
            "cls_feat_extractor.0": (8 * d, d),
            "cls_feat_extractor.2": (2 * d, 8 * d),
            "cls_router_head_agnostic.0": (4 * d, 2 * d),
            "cls_router_head_agnostic.2": (d, 4 * d),
            "cls_router_head_agnostic.4": (2, d),
        }
        for key, (rows, cols) in shapes.items():
            out[p + key + ".weight"] = torch.randn((rows, cols), generator=gen) / cols ** 0.5
            out[p + key + ".bias"] = torch.randn((rows,), generator=gen) * 0.1
    return out


def save_weights(tensors, folder, shards):
    names = sorted(tensors)
    if shards <= 1:
        save_file({n: tensors[n].contiguous() for n in names},
                  os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    per = (len(names) + shards - 1) // shards
    total = 0
    for s in range(shards):
        part = names[s * per:(s + 1) * per]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, os.path.join(folder, fname),
                  metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += tensors[n].numel() * tensors[n].element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2,
                  sort_keys=True)


def legacy_rope_config(folder):
    """Rewrites config.json with top-level rope_theta + rope_scaling (published checkpoints)."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    params = cfg.pop("rope_parameters", None)
    if params is not None:
        params = dict(params)
        cfg["rope_theta"] = params.pop("rope_theta")
        cfg["rope_scaling"] = params if params.get("rope_type", "default") != "default" else None
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def build(fx, out_root, index):
    name = fx["name"]
    folder = os.path.join(out_root, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    cfg = make_config(getattr(transformers, fx["cls"]), dict(fx["rope"]), **fx["kw"])
    cfg._attn_implementation = "eager"
    torch.manual_seed(1000 + index)
    model = getattr(transformers, fx["model"])(cfg).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(2000 + index)
    randomize(model, gen)
    if fx["kw"].get("tie_word_embeddings"):
        model.tie_weights()
    dtype = DTYPES[fx["dtype"]]
    # Round weights to the stored dtype; the reference runs on the rounded values in float32.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    state = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    if fx["kw"].get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)
    if fx.get("paw"):
        state.update({k: v.to(dtype) for k, v in router_tensors(cfg, gen).items()})
    save_weights(state, folder, fx.get("shards", 1))
    cfg.save_pretrained(folder)
    if fx.get("legacy_rope"):
        legacy_rope_config(folder)
    with open(os.path.join(folder, "config.json")) as f:
        written = json.load(f)
    written["architectures"] = [fx["model"]]
    written["torch_dtype"] = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[fx["dtype"]]
    if fx.get("paw"):
        written["architectures"] = ["PawQwen3ForCausalLM"]
        written.update(pooling_mode="ctx_q", pool_size=4, use_softmax=True, toggle_type="streaming",
                       sink_size=16, local_window_size=32)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(written, f, indent=2, sort_keys=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(folder, extra)):
            os.remove(os.path.join(folder, extra))

    model.to(DEVICE)
    rng = np.random.default_rng(3000 + index)
    vocab = cfg.vocab_size
    lengths = fx.get("prompt_lengths", PROMPT_LENGTHS)
    prompts = [[int(t) for t in rng.integers(0, vocab, size=n)] for n in lengths]
    ref = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
           "dtype": fx["dtype"], "prompts": prompts, "last_logits": [], "greedy": []}
    margins = []
    for i, p in enumerate(prompts):
        logits = forward_logits(model, p)
        ref["last_logits"].append([short(x) for x in logits[-1]])
        if i == 0:
            ref["all_logits"] = [[short(x) for x in row] for row in logits]
        toks, margin = greedy(model, p, fx.get("greedy_tokens", GREEDY_TOKENS))
        ref["greedy"].append(toks)
        margins.append(margin)
    ref["greedy_min_margin"] = min(margins)
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    print(f"{name}: {fx['model']} {fx['dtype']} greedy min margin {min(margins):.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "fixtures", "models"))
    ap.add_argument("--only", default="", help="comma-separated fixture names")
    ap.add_argument("--device", default="cpu", help="where transformers runs (cpu or cuda)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    only = set(filter(None, args.only.split(",")))
    for i, fx in enumerate(FIXTURES):
        if not only or fx["name"] in only:
            build(fx, args.out, i)


if __name__ == "__main__":
    main()
