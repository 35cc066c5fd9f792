#!/usr/bin/env python3
"""Writes the routing fixtures of tests/fixtures/router/.

1. flux_tiny/: a tiny random-weight Flux Attention checkpoint in the published layout
   (architecture PawQwen3ForCausalLM, Qwen3 tensors plus the per-layer router tensors
   model.layers.{i}.self_attn.mask_allocator.*, config.json with pooling_mode, pool_size,
   use_softmax, toggle_type, sink_size, local_window_size).
2. flux_tiny_expected.json: what an independent float64 PyTorch forward of that checkpoint gives
   for a few prompts: per layer the router logits and the FA/SA decision, the last-position logits
   of the prompt, and greedy continuation tokens. Layers the router sends to SA use streaming
   attention with the block rule of the reference implementation (block 128): a query at position
   p reads key j <= p iff j//B < ceil(sink/B) or p//B - j//B < ceil(window/B). Prompts are longer
   than sink + window, so SA layers change the result (the script checks that they do).
3. router_cases.json: router-only cases (softmax and sigmoid variants, T = 1, T < 2 * pool_size,
   T = 2 * pool_size, longer) with their queries, weights and logits.

The router biases are chosen so that the decisions are mixed: layers where every prompt goes to
FA, layers where every prompt goes to SA, and layers where prompts differ. Every decision margin
and every greedy top-2 gap is kept far from zero so float32 engines reproduce them exactly.

Random numbers come from numpy's PCG64 with a fixed seed; the forward runs in float64 on the CPU,
so the output depends only on the seed (and, to float64 rounding, on the torch version).

Usage: python3 tools/make_router_fixtures.py [--out tests/fixtures/router] [--seed 7]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

BLOCK = 128  # block size of the reference streaming attention

MODEL = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
)
FLUX = dict(
    pooling_mode="ctx_q",
    pool_size=48,  # not the reference default (100), so an engine must read config.json
    use_softmax=True,
    toggle_type="streaming",
    sink_size=64,  # 1 sink block of 128
    local_window_size=256,  # 2 window blocks of 128
)
# Prompt lengths: two longer than sink + window (SA differs from FA), one shorter than
# 2 * pool_size (the pooled rows overlap).
PROMPT_LENGTHS = [560, 430, 70]
# Per layer: F = FA for every prompt, S = SA for every prompt, M = prompts differ.
LAYER_TARGETS = "FMSM"
GREEDY_TOKENS = 6
MIN_MARGIN = 0.5  # |decision margin| kept at least this large
MIN_TOP2_GAP = 1e-3  # greedy steps need a clear winner


def f32(a):
    """Rounds to float32 (what the checkpoint stores) and returns float64 for the forward."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def make_weights(rng):
    c = MODEL
    h, d, hq, hkv, inter = (c["hidden_size"], c["head_dim"], c["num_attention_heads"],
                            c["num_key_value_heads"], c["intermediate_size"])

    def linear(out_dim, in_dim):
        return f32(rng.normal(0.0, 1.0 / math.sqrt(in_dim), size=(out_dim, in_dim)))

    def norm(n):
        return f32(1.0 + 0.1 * rng.normal(size=n))

    w = {"model.embed_tokens.weight": f32(rng.normal(size=(c["vocab_size"], h)))}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = linear(hq * d, h)
        w[p + "self_attn.k_proj.weight"] = linear(hkv * d, h)
        w[p + "self_attn.v_proj.weight"] = linear(hkv * d, h)
        w[p + "self_attn.o_proj.weight"] = linear(h, hq * d)
        w[p + "self_attn.q_norm.weight"] = norm(d)
        w[p + "self_attn.k_norm.weight"] = norm(d)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "mlp.gate_proj.weight"] = linear(inter, h)
        w[p + "mlp.up_proj.weight"] = linear(inter, h)
        w[p + "mlp.down_proj.weight"] = linear(h, inter)
        w.update(make_router(rng, p + "self_attn.mask_allocator.", d,
                             2 if FLUX["use_softmax"] else 1))
    w["model.norm.weight"] = norm(h)
    w["lm_head.weight"] = linear(c["vocab_size"], h)
    return w


def make_router(rng, prefix, d, num_outputs):
    """One layer's router: D -> 8D -> 2D feature extractor, 2D -> 4D -> D -> outputs head."""
    dims = [(d, 8 * d), (8 * d, 2 * d), (2 * d, 4 * d), (4 * d, d), (d, num_outputs)]
    names = ["cls_feat_extractor.0", "cls_feat_extractor.2", "cls_router_head_agnostic.0",
             "cls_router_head_agnostic.2", "cls_router_head_agnostic.4"]
    w = {}
    for (fan_in, fan_out), name in zip(dims, names):
        w[f"{prefix}{name}.weight"] = f32(
            rng.normal(0.0, 1.5 / math.sqrt(fan_in), size=(fan_out, fan_in)))
        w[f"{prefix}{name}.bias"] = f32(rng.normal(0.0, 0.5, size=fan_out))
    return w


# ----------------------------------------------------------------------------------------------
# Independent float64 forward (no transformers code).


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x, positions, theta):
    """x: [T, H, D], rotate-half convention of Qwen3."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def allowed_mask(num_tokens, sparse):
    """[T, T] boolean: query p may read key j."""
    p = torch.arange(num_tokens)[:, None]
    j = torch.arange(num_tokens)[None, :]
    causal = j <= p
    if not sparse:
        return causal
    sink_blocks = -(-FLUX["sink_size"] // BLOCK)
    window_blocks = -(-FLUX["local_window_size"] // BLOCK)
    keep = (j // BLOCK < sink_blocks) | (p // BLOCK - j // BLOCK < window_blocks)
    return causal & keep


def attention(q, k, v, sparse):
    """q: [T, Hq, D], k/v: [T, Hkv, D] after RoPE."""
    num_tokens, hq, d = q.shape
    group = hq // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(d)
    scores = scores.masked_fill(~allowed_mask(num_tokens, sparse)[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", probs, v)


def router_logits(w, prefix, q, pool_size):
    """The layer router on queries q [T, Hq, D] (after q_norm, before RoPE)."""
    pooled = torch.cat([q[:pool_size], q[-pool_size:]], dim=0).mean(dim=0).mean(dim=0)

    def lin(x, name):
        return F.linear(x, t(w[f"{prefix}{name}.weight"]), t(w[f"{prefix}{name}.bias"]))

    f = lin(F.silu(lin(pooled, "cls_feat_extractor.0")), "cls_feat_extractor.2")
    h = F.silu(lin(f, "cls_router_head_agnostic.0"))
    h = F.silu(lin(h, "cls_router_head_agnostic.2"))
    return lin(h, "cls_router_head_agnostic.4")


def margin_of(logits):
    return float(logits[1] - logits[0]) if logits.numel() == 2 else float(logits[0])


class Forward:
    """Runs the model layer by layer so routing decisions can be made between layers."""

    def __init__(self, w):
        self.w = w

    def embed(self, ids):
        return t(self.w["model.embed_tokens.weight"])[torch.tensor(ids)]

    def queries(self, i, x):
        c, w, p = MODEL, self.w, f"model.layers.{i}."
        hq, d = c["num_attention_heads"], c["head_dim"]
        h = rms_norm(x, t(w[p + "input_layernorm.weight"]), c["rms_norm_eps"])
        q = (h @ t(w[p + "self_attn.q_proj.weight"]).T).view(-1, hq, d)
        return rms_norm(q, t(w[p + "self_attn.q_norm.weight"]), c["rms_norm_eps"])

    def layer(self, i, x, sparse):
        c, w, p = MODEL, self.w, f"model.layers.{i}."
        hkv, d, eps = c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
        h = rms_norm(x, t(w[p + "input_layernorm.weight"]), eps)
        q = self.queries(i, x)
        k = (h @ t(w[p + "self_attn.k_proj.weight"]).T).view(-1, hkv, d)
        k = rms_norm(k, t(w[p + "self_attn.k_norm.weight"]), eps)
        v = (h @ t(w[p + "self_attn.v_proj.weight"]).T).view(-1, hkv, d)
        positions = torch.arange(x.shape[0])
        q = rope(q, positions, c["rope_theta"])
        k = rope(k, positions, c["rope_theta"])
        o = attention(q, k, v, sparse).reshape(x.shape[0], -1)
        x = x + o @ t(w[p + "self_attn.o_proj.weight"]).T
        h = rms_norm(x, t(w[p + "post_attention_layernorm.weight"]), eps)
        gate = F.silu(h @ t(w[p + "mlp.gate_proj.weight"]).T)
        up = h @ t(w[p + "mlp.up_proj.weight"]).T
        return x + (gate * up) @ t(w[p + "mlp.down_proj.weight"]).T

    def logits(self, x):
        h = rms_norm(x, t(self.w["model.norm.weight"]), MODEL["rms_norm_eps"])
        return h @ t(self.w["lm_head.weight"]).T

    def run(self, ids, decisions):
        """Full forward with fixed per-layer decisions (True = FA); logits of every position."""
        x = self.embed(ids)
        for i, full in enumerate(decisions):
            x = self.layer(i, x, sparse=not full)
        return self.logits(x)

    def prefill(self, ids):
        """Prefill with the router deciding per layer; returns logits, decisions, router logits."""
        x = self.embed(ids)
        decisions, all_logits = [], []
        for i in range(MODEL["num_hidden_layers"]):
            r = router_logits(self.w, f"model.layers.{i}.self_attn.mask_allocator.",
                              self.queries(i, x), FLUX["pool_size"])
            full = margin_of(r) > 0
            decisions.append(full)
            all_logits.append([float(v) for v in r])
            x = self.layer(i, x, sparse=not full)
        return self.logits(x), decisions, all_logits


def steer_router(w, fwd, prompts):
    """Adjusts each layer's last router layer so decisions follow LAYER_TARGETS robustly.

    Layer i's router input depends on the decisions of layers < i, so layers are fixed in order.
    Only cls_router_head_agnostic.4 changes: the SA-vs-FA difference of its rows is scaled (to
    separate prompts) and its bias shifted (to place the threshold).
    """
    xs = [fwd.embed(ids) for ids in prompts]
    for i, target in enumerate(LAYER_TARGETS):
        prefix = f"model.layers.{i}.self_attn.mask_allocator."
        wname, bname = prefix + "cls_router_head_agnostic.4.weight", prefix + \
            "cls_router_head_agnostic.4.bias"

        def margins():
            return [margin_of(router_logits(w, prefix, fwd.queries(i, x), FLUX["pool_size"]))
                    for x in xs]

        m = np.array(margins())
        if target == "M":
            order = np.sort(m)
            gaps = np.diff(order)
            k = int(np.argmax(gaps))
            scale = max(1.0, 4.0 * MIN_MARGIN / max(gaps[k], 1e-6))
            row_diff = w[wname][1] - w[wname][0]
            w[wname] = f32(np.stack([w[wname][0], w[wname][0] + scale * row_diff]))
            m = np.array(margins())
            order = np.sort(m)
            threshold = 0.5 * (order[k] + order[k + 1])
        elif target == "F":
            threshold = m.min() - 2 * MIN_MARGIN
        else:
            threshold = m.max() + 2 * MIN_MARGIN
        b = w[bname].copy()
        b[1] -= threshold
        w[bname] = f32(b)
        m = np.array(margins())
        if np.abs(m).min() < MIN_MARGIN:
            sys.exit(f"layer {i}: router margins {m} too close to 0; try another --seed")
        xs = [fwd.layer(i, x, sparse=not (mi > 0)) for x, mi in zip(xs, m)]


def greedy(fwd, ids, decisions, eos):
    tokens, seq = [], list(ids)
    for _ in range(GREEDY_TOKENS):
        last = fwd.run(seq, decisions)[-1]
        top2 = torch.topk(last, 2).values
        if float(top2[0] - top2[1]) < MIN_TOP2_GAP:
            sys.exit("greedy step too close to a tie; try another --seed")
        token = int(torch.argmax(last))
        if token == eos:
            sys.exit("greedy decoding produced the end-of-sequence token; try another --seed")
        tokens.append(token)
        seq.append(token)
    return tokens


def router_cases(rng):
    """Router-only cases: head_dim 8, a softmax and a sigmoid router."""
    d = 8
    routers = {"softmax": make_router(rng, "model.layers.0.self_attn.mask_allocator.", d, 2),
               "sigmoid": make_router(rng, "model.layers.0.self_attn.mask_allocator.", d, 1)}
    # (router, heads, tokens, pool_size)
    shapes = [("softmax", 2, 1, 4), ("softmax", 2, 5, 4), ("softmax", 3, 8, 4),
              ("softmax", 2, 23, 4), ("softmax", 1, 40, 16), ("sigmoid", 2, 1, 3),
              ("sigmoid", 4, 4, 3), ("sigmoid", 2, 6, 3), ("sigmoid", 2, 17, 3)]
    prefix = "model.layers.0.self_attn.mask_allocator."
    queries = []
    for name, heads, tokens, pool in shapes:
        offset = rng.normal(size=d)
        queries.append(f32(offset + rng.normal(size=(tokens, heads, d))))
    # Centre each router's final bias between its cases' margins so both decisions occur.
    for name, router in routers.items():
        m = sorted(margin_of(router_logits(router, prefix, t(q), pool))
                   for (n, _, _, pool), q in zip(shapes, queries) if n == name)
        k = int(np.argmax(np.diff(m)))
        b = router[prefix + "cls_router_head_agnostic.4.bias"].copy()
        b[-1] -= 0.5 * (m[k] + m[k + 1])
        router[prefix + "cls_router_head_agnostic.4.bias"] = f32(b)
    cases = []
    for (name, heads, tokens, pool), q in zip(shapes, queries):
        logits = router_logits(routers[name], prefix, t(q), pool)
        if abs(margin_of(logits)) < 0.05:
            sys.exit("router case too close to the decision boundary; try another --seed")
        cases.append(dict(router=name, num_heads=heads, tokens=tokens, pool_size=pool,
                          queries=[float(v) for v in q.reshape(-1)],
                          logits=[float(v) for v in logits],
                          decision="full" if margin_of(logits) > 0 else "sparse"))
    return dict(
        head_dim=d,
        routers={name: {k: dict(shape=list(v.shape), data=[float(x) for x in v.reshape(-1)])
                        for k, v in r.items()} for name, r in routers.items()},
        cases=cases)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "router"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    rng = np.random.Generator(np.random.PCG64(args.seed))
    w = make_weights(rng)
    prompts = [[int(v) for v in rng.integers(0, MODEL["vocab_size"] - 1, size=n)]
               for n in PROMPT_LENGTHS]
    fwd = Forward(w)
    steer_router(w, fwd, prompts)

    eos = MODEL["vocab_size"] - 1
    records = []
    for ids in prompts:
        logits, decisions, rlogits = fwd.prefill(ids)
        dense = fwd.run(ids, [True] * len(decisions))[-1]
        sa_effect = float((logits[-1] - dense).abs().max())
        if len(ids) > FLUX["sink_size"] + FLUX["local_window_size"] and not all(decisions):
            if sa_effect < 1e-3:
                sys.exit(f"SA layers barely change the {len(ids)}-token prompt ({sa_effect})")
        records.append(dict(
            prompt_ids=ids,
            decisions=["full" if d else "sparse" for d in decisions],
            router_logits=rlogits,
            last_logits=[float(v) for v in logits[-1]],
            full_attention_last_logits=[float(v) for v in dense],
            greedy_tokens=greedy(fwd, ids, decisions, eos)))
    pattern = ["".join("F" if d == "full" else "S" for d in r["decisions"]) for r in records]
    per_layer = set(zip(*pattern))
    if not any(len(set(col)) > 1 for col in per_layer):
        sys.exit(f"decisions do not differ between prompts: {pattern}")

    out = os.path.abspath(args.out)
    ckpt = os.path.join(out, "flux_tiny")
    os.makedirs(ckpt, exist_ok=True)
    config = dict(
        architectures=["PawQwen3ForCausalLM"], model_type="qwen3", attention_bias=False,
        attention_dropout=0.0, bos_token_id=eos, eos_token_id=eos, hidden_act="silu",
        initializer_range=0.02, max_position_embeddings=2048, max_window_layers=MODEL[
            "num_hidden_layers"], rope_scaling=None, sliding_window=None,
        tie_word_embeddings=False, torch_dtype="float32", use_cache=True,
        use_sliding_window=False, **MODEL, **FLUX)
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: np.ascontiguousarray(v.astype(np.float32)) for k, v in sorted(w.items())},
              os.path.join(ckpt, "model.safetensors"), metadata={"format": "pt"})

    expected = dict(
        generator=dict(script="tools/make_router_fixtures.py", seed=args.seed,
                       torch=torch.__version__, numpy=np.__version__),
        checkpoint="flux_tiny", block_size=BLOCK, sink_size=FLUX["sink_size"],
        local_window_size=FLUX["local_window_size"], pool_size=FLUX["pool_size"],
        use_softmax=FLUX["use_softmax"], prompts=records)
    with open(os.path.join(out, "flux_tiny_expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    cases = router_cases(rng)
    cases["generator"] = expected["generator"]
    with open(os.path.join(out, "router_cases.json"), "w") as f:
        json.dump(cases, f)
        f.write("\n")
    for r, p in zip(records, pattern):
        print(f"prompt of {len(r['prompt_ids'])} tokens: decisions {p}, greedy "
              f"{r['greedy_tokens']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
