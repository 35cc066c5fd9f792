"""The demo model in plain PyTorch: Qwen3 (GQA, q/k RMSNorm, RoPE, SwiGLU, tied embeddings)
with the Flux layer router of the published checkpoints, and streaming SA with the block rule
FluxAttn uses (block B = 128): a query at position p reads key j <= p iff
j // B < ceil(sink / B) or p // B - j // B < ceil(window / B).

Tensor names are those of Hugging Face Qwen3 (`model.layers.{i}.self_attn.q_proj.weight`, ...)
and of the Flux router (`model.layers.{i}.self_attn.mask_allocator.cls_feat_extractor.{0,2}`,
`...cls_router_head_agnostic.{0,2,4}`), so `state_dict()` is the exported checkpoint.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)
FLUX = dict(pooling_mode="ctx_q", pool_size=64, use_softmax=True, toggle_type="streaming",
            sink_size=64, local_window_size=256)
BLOCK = 128


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype)


class Router(nn.Module):
    """D -> 8D -> 2D feature extractor, 2D -> 4D -> D -> 2 head (logit 1 = FA)."""

    def __init__(self, d):
        super().__init__()
        self.cls_feat_extractor = nn.Sequential(nn.Linear(d, 8 * d), nn.SiLU(),
                                                nn.Linear(8 * d, 2 * d))
        self.cls_router_head_agnostic = nn.Sequential(
            nn.Linear(2 * d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d), nn.SiLU(), nn.Linear(d, 2))

    def forward(self, pooled):
        return self.cls_router_head_agnostic(self.cls_feat_extractor(pooled))


def streaming_mask(t, device, sink=FLUX["sink_size"], window=FLUX["local_window_size"]):
    p = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    sink_blocks = -(-sink // BLOCK)
    window_blocks = -(-window // BLOCK)
    return (j <= p) & ((j // BLOCK < sink_blocks) | (p // BLOCK - j // BLOCK < window_blocks))


def rope_tables(t, d, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
    ang = torch.arange(t, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    d = x.shape[-1]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, d = c["hidden_size"], c["head_dim"]
        self.hq, self.hkv, self.d = c["num_attention_heads"], c["num_key_value_heads"], d
        self.q_proj = nn.Linear(h, self.hq * d, bias=False)
        self.k_proj = nn.Linear(h, self.hkv * d, bias=False)
        self.v_proj = nn.Linear(h, self.hkv * d, bias=False)
        self.o_proj = nn.Linear(self.hq * d, h, bias=False)
        self.q_norm = RMSNorm(d, c["rms_norm_eps"])
        self.k_norm = RMSNorm(d, c["rms_norm_eps"])
        self.mask_allocator = Router(d)

    def qkv(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.hq, self.d))  # router input
        k = self.k_norm(self.k_proj(x).view(b, t, self.hkv, self.d))
        v = self.v_proj(x).view(b, t, self.hkv, self.d)
        qr = apply_rope(q, cos, sin).transpose(1, 2)
        kr = apply_rope(k, cos, sin).transpose(1, 2)
        return q, qr, kr, v.transpose(1, 2)

    def attend(self, qr, kr, v, sa_mask=None):
        """Full causal attention, or the streaming rule when sa_mask ([T, T] bool) is given."""
        g = self.hq // self.hkv
        k = kr.repeat_interleave(g, dim=1)
        vv = v.repeat_interleave(g, dim=1)
        if sa_mask is None:
            o = F.scaled_dot_product_attention(qr, k, vv, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(qr, k, vv, attn_mask=sa_mask)
        return o

    def out(self, o):
        b, h, t, d = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, t, h * d))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


def pool_queries(q, prompt_len, pool_size):
    """ctx_q pooling per sample: q [B, T, H, D] -> [B, D], first and last pool_size prompt rows."""
    b, t = q.shape[:2]
    ar = torch.arange(t, device=q.device)[None, :]
    n = torch.clamp(prompt_len, max=pool_size)[:, None]
    first = (ar < n).float()
    last = ((ar >= prompt_len[:, None] - n) & (ar < prompt_len[:, None])).float()
    w = (first + last) / (2.0 * n.float())
    return torch.einsum("bt,btd->bd", w, q.float().mean(dim=2))


class DemoModel(nn.Module):
    def __init__(self, c=CONFIG):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        self.lm_head_tied = c["tie_word_embeddings"]
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def base_parameters(self):
        return [p for n, p in self.named_parameters() if "mask_allocator" not in n]

    def router_parameters(self):
        return [p for n, p in self.named_parameters() if "mask_allocator" in n]

    def forward(self, ids, sa_layers=None, route=None):
        """Logits [B, T, V].

        sa_layers: optional bool [B, L]: per sample and layer, streaming instead of full.
        route: optional dict for router training: prompt_len [B], tau, hard (bool); then every
          layer computes both FA and SA and mixes them with the straight-through Gumbel gate,
          and route["fa"] receives the per-layer FA gates [B, L] (with gradient).
        """
        b, t = ids.shape
        c = self.c
        cos, sin = rope_tables(t, c["head_dim"], c["rope_theta"], ids.device)
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        mask = None
        x = self.model.embed_tokens(ids)
        gates = []
        for i, layer in enumerate(self.model.layers):
            att = layer.self_attn
            hcur = layer.input_layernorm(x)
            q, qr, kr, v = att.qkv(hcur, cos, sin)
            if route is not None:
                if mask is None:
                    mask = streaming_mask(t, ids.device)
                pooled = pool_queries(q, route["prompt_len"], FLUX["pool_size"])
                logits = att.mask_allocator(pooled.float())
                if route.get("gumbel", True):
                    g = -torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-9)))
                    soft = F.softmax((logits + g) / route["tau"], dim=-1)
                else:
                    soft = F.softmax(logits, dim=-1)
                hard = F.one_hot(soft.argmax(-1), 2).float()
                z = (hard - soft.detach() + soft)[:, 1]  # FA gate
                gates.append(z)
                o_fa = att.attend(qr, kr, v)
                o_sa = att.attend(qr, kr, v, mask)
                zz = z.to(o_fa.dtype)[:, None, None, None]
                o = zz * o_fa + (1 - zz) * o_sa
            else:
                o = att.attend(qr, kr, v)
                if sa_layers is not None and bool(sa_layers[:, i].any()):
                    if mask is None:
                        mask = streaming_mask(t, ids.device)
                    sel = sa_layers[:, i].nonzero().squeeze(1)
                    o = o.clone()
                    o[sel] = att.attend(qr[sel], kr[sel], v[sel], mask)
            x = x + att.out(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        if route is not None:
            route["fa"] = torch.stack(gates, dim=1)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.T


def config_json(c=CONFIG, flux=FLUX):
    return {
        "architectures": ["PawQwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "head_dim": c["head_dim"],
        "hidden_act": "silu",
        "hidden_size": c["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": c["intermediate_size"],
        "local_window_size": flux["local_window_size"],
        "max_position_embeddings": c["max_position_embeddings"],
        "max_window_layers": c["num_hidden_layers"],
        "model_type": "qwen3",
        "num_attention_heads": c["num_attention_heads"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_key_value_heads": c["num_key_value_heads"],
        "pool_size": flux["pool_size"],
        "pooling_mode": flux["pooling_mode"],
        "rms_norm_eps": c["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": c["rope_theta"],
        "sink_size": flux["sink_size"],
        "sliding_window": None,
        "tie_word_embeddings": c["tie_word_embeddings"],
        "toggle_type": flux["toggle_type"],
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "use_softmax": flux["use_softmax"],
        "vocab_size": c["vocab_size"],
    }


def count_parameters(m):
    return sum(p.numel() for p in m.parameters())


def cosine_lr(progress, peak, warm=0.03, floor=0.1):
    if progress < warm:
        return peak * progress / warm
    x = min(1.0, (progress - warm) / (1 - warm))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * x)))
