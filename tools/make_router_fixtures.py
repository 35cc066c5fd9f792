#!/usr/bin/env python3
"""Writes the routing fixtures of tests/fixtures/router/.

1. flux_tiny/: a tiny random-weight Flux Attention checkpoint in the published layout
   (architecture PawQwen3ForCausalLM, Qwen3 tensors plus the per-layer router tensors
   model.layers.{i}.self_attn.mask_allocator.*, config.json with pooling_mode, pool_size,
   use_softmax, toggle_type, sink_size, local_window_size).
2. flux_tiny_expected.json: what an independent float64 PyTorch forward of that checkpoint gives
   for a few prompts: per layer the router logits and the FA/SA decision, the last-position logits
   of the prompt, and greedy continuation tokens (the triangle and xattn variants also keep the
   logits of the last greedy step). Layers the router sends to SA use streaming
   attention with the block rule of the reference implementation (block 128): a query at position
   p reads key j <= p iff j//B < ceil(sink/B) or p//B - j//B < ceil(window/B). Prompts are longer
   than sink + window, so SA layers change the result (the script checks that they do).
3. router_cases.json: router-only cases (softmax and sigmoid variants, T = 1, T < 2 * pool_size,
   T = 2 * pool_size, longer) with their queries, weights and logits.
4. flux_tiny_triangle/ + flux_tiny_triangle_expected.json: the same kind of checkpoint with
   toggle_type "triangle" (retrieval_mode "full"), following the evaluation modeling code of the
   published checkpoints: at prefill an SA layer runs the streaming rule for every query except
   the last n = min(triangle_n_last, T - 1), which attend densely (causal); at decode an SA layer
   runs the streaming rule, an FA layer dense attention.
5. flux_tiny_xattn/ + flux_tiny_xattn_expected.json: retrieval_mode "xattn" (toggle_type
   "streaming"): FA layers run XAttention at prefill as the original does (stride 16, threshold
   0.9, 128-token blocks, per query head): strided antidiagonal logits
   sum_k q[g*S + S-1-k] . k[h*S + k] / sqrt(D) / S between query group g and key group h <= g,
   soft-maxed over h, summed per (query block, KV block); per query block, block 0 and the
   diagonal block are kept, then the other causal blocks in decreasing score while the kept mass
   is below threshold * the row's total; attention then reads the kept blocks (causal). Decode
   on FA layers is dense. The model has as many KV heads as query heads, so the original's
   per-query-head selection is also a per-KV-head one.

The router biases are chosen so that the decisions are mixed: layers where every prompt goes to
FA, layers where every prompt goes to SA, and layers where prompts differ. Every decision margin,
every XAttention selection boundary and every greedy top-2 gap is kept far from zero so float32
engines reproduce them exactly. Greedy continuation runs prefill once, then one token per step
against the cached keys and values (decode semantics, not a prefill of the longer sequence).

Random numbers come from numpy's PCG64 with a fixed seed; the forward runs in float64 on the CPU,
so the output depends only on the seed (and, to float64 rounding, on the torch version).

Usage: python3 tools/make_router_fixtures.py [--out tests/fixtures/router] [--seed 7]
           [--variants streaming,triangle,xattn]
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

BLOCK = 128  # block size of the reference streaming attention and of XAttention
XATTN_STRIDE = 16
XATTN_THRESHOLD = 0.9
MIN_MARGIN = 0.5  # |decision margin| kept at least this large
MIN_TOP2_GAP = 1e-3  # greedy steps need a clear winner
MIN_XATTN_MARGIN = 1e-4  # XAttention selection boundaries, as a share of the row's mass
GREEDY_TOKENS = 6

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

# One entry per fixture checkpoint. prompt_lengths: prompts longer than sink + window (SA differs
# from FA) and one shorter than 2 * pool_size (the pooled rows overlap). layer_targets, per layer:
# F = FA for every prompt, S = SA for every prompt, M = prompts differ. qk_norm_scale sharpens
# attention (XAttention only drops blocks where attention is concentrated).
VARIANTS = {
    "streaming": dict(checkpoint="flux_tiny", expected="flux_tiny_expected.json", seed_offset=0,
                      model=MODEL, flux=FLUX, prompt_lengths=[560, 430, 70],
                      layer_targets="FMSM", qk_norm_scale=1.0),
    "triangle": dict(checkpoint="flux_tiny_triangle", expected="flux_tiny_triangle_expected.json",
                     seed_offset=1000, model=MODEL,
                     flux=dict(FLUX, toggle_type="triangle", retrieval_mode="full",
                               triangle_n_last=96),  # not the default (128)
                     prompt_lengths=[700, 560, 70], layer_targets="MSFM", qk_norm_scale=1.0),
    "xattn": dict(checkpoint="flux_tiny_xattn", expected="flux_tiny_xattn_expected.json",
                  seed_offset=2000, model=dict(MODEL, num_key_value_heads=4),
                  flux=dict(FLUX, toggle_type="streaming", retrieval_mode="xattn"),
                  prompt_lengths=[1100, 700, 70], layer_targets="FMFM", qk_norm_scale=2.5),
}


def f32(a):
    """Rounds to float32 (what the checkpoint stores) and returns float64 for the forward."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def make_weights(rng, c, flux, qk_norm_scale=1.0):
    h, d, hq, hkv, inter = (c["hidden_size"], c["head_dim"], c["num_attention_heads"],
                            c["num_key_value_heads"], c["intermediate_size"])

    def linear(out_dim, in_dim):
        return f32(rng.normal(0.0, 1.0 / math.sqrt(in_dim), size=(out_dim, in_dim)))

    def norm(n, scale=1.0):
        return f32(scale * (1.0 + 0.1 * rng.normal(size=n)))

    w = {"model.embed_tokens.weight": f32(rng.normal(size=(c["vocab_size"], h)))}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = linear(hq * d, h)
        w[p + "self_attn.k_proj.weight"] = linear(hkv * d, h)
        w[p + "self_attn.v_proj.weight"] = linear(hkv * d, h)
        w[p + "self_attn.o_proj.weight"] = linear(h, hq * d)
        w[p + "self_attn.q_norm.weight"] = norm(d, qk_norm_scale)
        w[p + "self_attn.k_norm.weight"] = norm(d, qk_norm_scale)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "mlp.gate_proj.weight"] = linear(inter, h)
        w[p + "mlp.up_proj.weight"] = linear(inter, h)
        w[p + "mlp.down_proj.weight"] = linear(h, inter)
        w.update(make_router(rng, p + "self_attn.mask_allocator.", d,
                             2 if flux["use_softmax"] else 1))
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


def streaming_mask(p, j, flux):
    """Boolean [len(p), len(j)]: the block streaming rule (causality included)."""
    p, j = p[:, None], j[None, :]
    sink_blocks = -(-flux["sink_size"] // BLOCK)
    window_blocks = -(-flux["local_window_size"] // BLOCK)
    keep = (j // BLOCK < sink_blocks) | (p // BLOCK - j // BLOCK < window_blocks)
    return (j <= p) & keep


def xattn_blocks(q, k):
    """XAttention block selection of the original, per query head (q, k: [T, H, D], after RoPE).

    Returns the kept blocks [H, nb, nb] and the smallest selection margin (share of row mass).
    """
    s, bsz, thr = XATTN_STRIDE, BLOCK, XATTN_THRESHOLD
    num_tokens, heads, d = q.shape
    groups = -(-num_tokens // s)
    qp = torch.zeros(groups * s, heads, d, dtype=q.dtype)
    kp = torch.zeros(groups * s, heads, d, dtype=k.dtype)
    qp[:num_tokens], kp[:num_tokens] = q, k
    # Query group g pairs its query at offset S-1-j with the key at offset j of key group h.
    qr = qp.view(groups, s, heads, d).flip(1)
    kr = kp.view(groups, s, heads, d)
    logits = torch.einsum("gjhd,ljhd->hgl", qr, kr) / math.sqrt(d) / s
    causal = torch.arange(groups)[None, :] <= torch.arange(groups)[:, None]
    probs = torch.softmax(logits.masked_fill(~causal[None], float("-inf")), dim=-1)
    per_block = bsz // s
    nb = -(-groups // per_block)
    padded = torch.zeros(heads, nb * per_block, nb * per_block, dtype=probs.dtype)
    padded[:, :groups, :groups] = probs
    scores = padded.view(heads, nb, per_block, nb, per_block).sum(dim=(2, 4))
    keep = torch.zeros(heads, nb, nb, dtype=torch.bool)
    margin = float("inf")
    for h in range(heads):
        for qb in range(nb):
            row = scores[h, qb, : qb + 1]
            total = float(row.sum())
            required = thr * total
            forced = {0, qb}
            mass = sum(float(row[b]) for b in forced)
            for b in forced:
                keep[h, qb, b] = True
            others = sorted((b for b in range(qb + 1) if b not in forced),
                            key=lambda b: -float(row[b]))
            for n, b in enumerate(others):
                margin = min(margin, abs(mass - required) / total)
                if mass >= required:
                    if n > 0:  # swapping the last kept block and this one changes the set
                        margin = min(margin, (float(row[others[n - 1]]) - float(row[b])) / total)
                    break
                keep[h, qb, b] = True
                mass += float(row[b])
    return keep, margin


class Forward:
    """Runs the model layer by layer so routing decisions can be made between layers."""

    def __init__(self, w, model, flux, dense_sparse_decode=False):
        self.w, self.c, self.flux = w, model, flux
        self.dense_sparse_decode = dense_sparse_decode  # only to show that decode matters
        self.xattn_margin = float("inf")
        self.xattn_kept = []  # kept share of causal blocks, per XAttention prefill

    def embed(self, ids):
        return t(self.w["model.embed_tokens.weight"])[torch.tensor(ids)]

    def queries(self, i, x):
        c, w, p = self.c, self.w, f"model.layers.{i}."
        hq, d = c["num_attention_heads"], c["head_dim"]
        h = rms_norm(x, t(w[p + "input_layernorm.weight"]), c["rms_norm_eps"])
        q = (h @ t(w[p + "self_attn.q_proj.weight"]).T).view(-1, hq, d)
        return rms_norm(q, t(w[p + "self_attn.q_norm.weight"]), c["rms_norm_eps"])

    def prefill_mask(self, q, k, full):
        """[H or 1, T, T] boolean: which keys each prompt query reads."""
        num_tokens = q.shape[0]
        pos = torch.arange(num_tokens)
        causal = (pos[None, :] <= pos[:, None])[None]
        mode = self.flux.get("retrieval_mode", "full") if full else self.flux["toggle_type"]
        if mode == "full":
            return causal
        if mode == "streaming":
            return streaming_mask(pos, pos, self.flux)[None]
        if mode == "triangle":
            n_last = min(self.flux["triangle_n_last"], num_tokens - 1)
            dense = (pos >= num_tokens - n_last)[:, None]
            return (streaming_mask(pos, pos, self.flux) | (dense & causal[0]))[None]
        if mode == "xattn":
            group = q.shape[1] // k.shape[1]
            keep, margin = xattn_blocks(q, k.repeat_interleave(group, dim=1))
            self.xattn_margin = min(self.xattn_margin, margin)
            nb = keep.shape[1]
            causal_blocks = nb * (nb + 1) // 2
            self.xattn_kept.append(float(keep.sum()) / (keep.shape[0] * causal_blocks))
            tokens = keep.repeat_interleave(BLOCK, dim=1).repeat_interleave(BLOCK, dim=2)
            return tokens[:, :num_tokens, :num_tokens] & causal
        raise ValueError(mode)

    def decode_mask(self, position, full):
        """[1, 1, position + 1]: FA layers read everything, SA layers the streaming rule."""
        keys = torch.arange(position + 1)
        if full or self.dense_sparse_decode:
            return torch.ones(1, 1, position + 1, dtype=torch.bool)
        return streaming_mask(torch.tensor([position]), keys, self.flux)[None]

    def layer(self, i, x, full, cache=None, position=None):
        """One decoder layer on x [T, hidden]. Prefill (cache None or empty): the whole prompt;
        decode (position given): one token against the cached keys and values."""
        c, w, p = self.c, self.w, f"model.layers.{i}."
        hq, hkv, d, eps = (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"],
                           c["rms_norm_eps"])
        h = rms_norm(x, t(w[p + "input_layernorm.weight"]), eps)
        q = self.queries(i, x)
        k = (h @ t(w[p + "self_attn.k_proj.weight"]).T).view(-1, hkv, d)
        k = rms_norm(k, t(w[p + "self_attn.k_norm.weight"]), eps)
        v = (h @ t(w[p + "self_attn.v_proj.weight"]).T).view(-1, hkv, d)
        start = 0 if position is None else position
        positions = torch.arange(start, start + x.shape[0])
        q = rope(q, positions, c["rope_theta"])
        k = rope(k, positions, c["rope_theta"])
        if position is None:
            allowed = self.prefill_mask(q, k, full)
            if cache is not None:
                cache[i] = (k, v)
        else:
            k = torch.cat([cache[i][0], k])
            v = torch.cat([cache[i][1], v])
            cache[i] = (k, v)
            allowed = self.decode_mask(position, full)
        group = hq // hkv
        kk = k.repeat_interleave(group, dim=1)
        vv = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("thd,shd->hts", q, kk) / math.sqrt(d)
        scores = scores.masked_fill(~allowed, float("-inf"))
        o = torch.einsum("hts,shd->thd", torch.softmax(scores, dim=-1), vv).reshape(x.shape[0], -1)
        x = x + o @ t(w[p + "self_attn.o_proj.weight"]).T
        h = rms_norm(x, t(w[p + "post_attention_layernorm.weight"]), eps)
        gate = F.silu(h @ t(w[p + "mlp.gate_proj.weight"]).T)
        up = h @ t(w[p + "mlp.up_proj.weight"]).T
        return x + (gate * up) @ t(w[p + "mlp.down_proj.weight"]).T

    def logits(self, x):
        h = rms_norm(x, t(self.w["model.norm.weight"]), self.c["rms_norm_eps"])
        return h @ t(self.w["lm_head.weight"]).T

    def run(self, ids, decisions, cache=None):
        """Prefill with fixed per-layer decisions (True = FA); logits of every position."""
        x = self.embed(ids)
        for i, full in enumerate(decisions):
            x = self.layer(i, x, full, cache)
        return self.logits(x)

    def step(self, token, position, decisions, cache):
        """One decode step: the logits after `token` at `position`."""
        x = self.embed([token])
        for i, full in enumerate(decisions):
            x = self.layer(i, x, full, cache, position)
        return self.logits(x)[-1]

    def prefill(self, ids):
        """Prefill with the router deciding per layer; returns logits, decisions, router logits."""
        x = self.embed(ids)
        decisions, all_logits = [], []
        for i in range(self.c["num_hidden_layers"]):
            r = router_logits(self.w, f"model.layers.{i}.self_attn.mask_allocator.",
                              self.queries(i, x), self.flux["pool_size"])
            full = margin_of(r) > 0
            decisions.append(full)
            all_logits.append([float(v) for v in r])
            x = self.layer(i, x, full)
        return self.logits(x), decisions, all_logits


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


def steer_router(w, fwd, prompts, layer_targets):
    """Adjusts each layer's last router layer so decisions follow layer_targets robustly.

    Layer i's router input depends on the decisions of layers < i, so layers are fixed in order.
    Only cls_router_head_agnostic.4 changes: the SA-vs-FA difference of its rows is scaled (to
    separate prompts) and its bias shifted (to place the threshold).
    """
    xs = [fwd.embed(ids) for ids in prompts]
    pool = fwd.flux["pool_size"]
    for i, target in enumerate(layer_targets):
        prefix = f"model.layers.{i}.self_attn.mask_allocator."
        wname, bname = prefix + "cls_router_head_agnostic.4.weight", prefix + \
            "cls_router_head_agnostic.4.bias"

        def margins():
            return [margin_of(router_logits(w, prefix, fwd.queries(i, x), pool)) for x in xs]

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
        xs = [fwd.layer(i, x, mi > 0) for x, mi in zip(xs, m)]


def greedy(fwd, ids, decisions, eos):
    """Prefill, then one decode step per token against the cache; returns the tokens and the
    logits the last one was chosen from."""
    cache = {}
    last = fwd.run(ids, decisions, cache)[-1]
    tokens = []
    for n in range(GREEDY_TOKENS):
        top2 = torch.topk(last, 2).values
        if float(top2[0] - top2[1]) < MIN_TOP2_GAP:
            sys.exit("greedy step too close to a tie; try another --seed")
        token = int(torch.argmax(last))
        if token == eos:
            sys.exit("greedy decoding produced the end-of-sequence token; try another --seed")
        tokens.append(token)
        if n + 1 < GREEDY_TOKENS:
            last = fwd.step(token, len(ids) + n, decisions, cache)
    return tokens, last


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


def make_variant(name, spec, rng, out, seed):
    """Builds one checkpoint and its expected results; returns the generator record."""
    model, flux = spec["model"], spec["flux"]
    w = make_weights(rng, model, flux, spec["qk_norm_scale"])
    prompts = [[int(v) for v in rng.integers(0, model["vocab_size"] - 1, size=n)]
               for n in spec["prompt_lengths"]]
    fwd = Forward(w, model, flux)
    steer_router(w, fwd, prompts, spec["layer_targets"])
    fwd.xattn_margin, fwd.xattn_kept = float("inf"), []

    eos = model["vocab_size"] - 1
    span = flux["sink_size"] + flux["local_window_size"]
    records = []
    for ids in prompts:
        logits, decisions, rlogits = fwd.prefill(ids)
        dense_fwd = Forward(w, model, dict(flux, retrieval_mode="full"))
        dense = dense_fwd.run(ids, [True] * len(decisions))[-1]
        effect = float((logits[-1] - dense).abs().max())
        if len(ids) > span and not all(decisions) and effect < 1e-3:
            sys.exit(f"{name}: sparse layers barely change the {len(ids)}-token prompt ({effect})")
        record = dict(
            prompt_ids=ids,
            decisions=["full" if d else "sparse" for d in decisions],
            router_logits=rlogits,
            last_logits=[float(v) for v in logits[-1]],
            full_attention_last_logits=[float(v) for v in dense])
        record["greedy_tokens"], final = greedy(fwd, ids, decisions, eos)
        record["final_step_logits"] = [float(v) for v in final]
        if len(ids) > span and not all(decisions):
            # Decode matters too: SA layers decoding densely give other logits.
            dense_decode = Forward(w, model, flux, dense_sparse_decode=True)
            _, other = greedy(dense_decode, ids, decisions, eos)
            if float((other - final).abs().max()) < 1e-3:
                sys.exit(f"{name}: SA decode barely changes the {len(ids)}-token prompt")
        if flux["toggle_type"] == "triangle" and len(ids) > span and not all(decisions):
            # The dense tail must matter: plain streaming gives other logits.
            plain = Forward(w, model, dict(flux, toggle_type="streaming")).run(ids, decisions)[-1]
            if float((plain - logits[-1]).abs().max()) < 1e-3:
                sys.exit(f"{name}: the triangle tail barely changes the result")
            record["streaming_last_logits"] = [float(v) for v in plain]
        if flux.get("retrieval_mode") == "xattn" and any(decisions):
            # XAttention must matter: dense FA layers give other logits.
            plain = Forward(w, model, dict(flux, retrieval_mode="full")).run(ids, decisions)[-1]
            xattn_effect = float((plain - logits[-1]).abs().max())
            if len(ids) > 2 * BLOCK:
                if xattn_effect < 1e-2:
                    sys.exit(f"{name}: XAttention barely changes the {len(ids)}-token prompt "
                             f"({xattn_effect}); sharpen the attention")
                record["dense_full_last_logits"] = [float(v) for v in plain]
        records.append(record)
    pattern = ["".join("F" if d == "full" else "S" for d in r["decisions"]) for r in records]
    if not any(len(set(col)) > 1 for col in zip(*pattern)):
        sys.exit(f"{name}: decisions do not differ between prompts: {pattern}")
    if fwd.xattn_kept:
        if fwd.xattn_margin < MIN_XATTN_MARGIN:
            sys.exit(f"{name}: XAttention selection margin {fwd.xattn_margin}; try another --seed")
        if min(fwd.xattn_kept) > 0.999:
            sys.exit(f"{name}: XAttention kept every block; sharpen the attention")

    ckpt = os.path.join(out, spec["checkpoint"])
    os.makedirs(ckpt, exist_ok=True)
    config = dict(
        architectures=["PawQwen3ForCausalLM"], model_type="qwen3", attention_bias=False,
        attention_dropout=0.0, bos_token_id=eos, eos_token_id=eos, hidden_act="silu",
        initializer_range=0.02, max_position_embeddings=2048, max_window_layers=model[
            "num_hidden_layers"], rope_scaling=None, sliding_window=None,
        tie_word_embeddings=False, torch_dtype="float32", use_cache=True,
        use_sliding_window=False, **model, **flux)
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: np.ascontiguousarray(v.astype(np.float32)) for k, v in sorted(w.items())},
              os.path.join(ckpt, "model.safetensors"), metadata={"format": "pt"})

    generator = dict(script="tools/make_router_fixtures.py", seed=seed,
                     torch=torch.__version__, numpy=np.__version__)
    expected = dict(
        generator=generator, checkpoint=spec["checkpoint"], block_size=BLOCK,
        sink_size=flux["sink_size"], local_window_size=flux["local_window_size"],
        pool_size=flux["pool_size"], use_softmax=flux["use_softmax"], prompts=records)
    if name != "streaming":
        expected.update(variant=name, toggle_type=flux["toggle_type"],
                        retrieval_mode=flux["retrieval_mode"])
    if "triangle_n_last" in flux:
        expected["triangle_n_last"] = flux["triangle_n_last"]
    if fwd.xattn_kept:
        expected.update(xattn_stride=XATTN_STRIDE, xattn_threshold=XATTN_THRESHOLD,
                        xattn_min_kept_share=min(fwd.xattn_kept),
                        xattn_min_selection_margin=fwd.xattn_margin)
    with open(os.path.join(out, spec["expected"]), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    for r, p in zip(records, pattern):
        print(f"{name}: prompt of {len(r['prompt_ids'])} tokens: decisions {p}, greedy "
              f"{r['greedy_tokens']}")
    if fwd.xattn_kept:
        print(f"{name}: XAttention kept {min(fwd.xattn_kept):.3f}..{max(fwd.xattn_kept):.3f} of "
              f"the causal blocks, smallest selection margin {fwd.xattn_margin:.2e}")
    return generator


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "router"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ", ".join(VARIANTS))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    out = os.path.abspath(args.out)
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"--variants: expected names from {', '.join(VARIANTS)}, found {name!r}")
        spec = VARIANTS[name]
        seed = args.seed + spec["seed_offset"]
        rng = np.random.Generator(np.random.PCG64(seed))
        generator = make_variant(name, spec, rng, out, seed)
        if name == "streaming":
            # The router-only cases continue the streaming variant's random stream.
            cases = router_cases(rng)
            cases["generator"] = generator
            with open(os.path.join(out, "router_cases.json"), "w") as f:
                json.dump(cases, f)
                f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
