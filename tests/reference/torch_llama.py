"""An independent LLaMA in PyTorch, following the Hugging Face LlamaForCausalLM math.

Used to check parallama's logits, loss, gradients and optimizer steps, and by the peer
benchmark in bench/. Parameter names are the Hugging Face ones.
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def load_safetensors(path):
    """Reads a safetensors file (F32 and BF16) into a dict of float32 numpy arrays."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        buf = data[b:end]
        if e["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4")
        elif e["dtype"] == "BF16":
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: unsupported dtype {e['dtype']}")
        out[name] = arr.reshape(e["shape"]).copy()
    return out


def param_shapes(cfg):
    C, V, F_ = cfg["dim"], cfg["vocab_size"], cfg["ffn_dim"]
    D = C // cfg["n_heads"]
    H, KVH = cfg["n_heads"], cfg["n_kv_heads"]
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "self_attn.q_proj.weight"] = (H * D, C)
        shapes[p + "self_attn.k_proj.weight"] = (KVH * D, C)
        shapes[p + "self_attn.v_proj.weight"] = (KVH * D, C)
        shapes[p + "self_attn.o_proj.weight"] = (C, H * D)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        shapes[p + "mlp.gate_proj.weight"] = (F_, C)
        shapes[p + "mlp.up_proj.weight"] = (F_, C)
        shapes[p + "mlp.down_proj.weight"] = (C, F_)
    shapes["model.norm.weight"] = (C,)
    if not cfg["tie_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_params(cfg, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 1:
            params[name] = torch.ones(shape, dtype=dtype)
        else:
            params[name] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    return params


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(T, D, theta, dtype):
    # inv_freq in float32 as Hugging Face computes it, then widened.
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    pos = torch.arange(T, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    emb = torch.cat((angles, angles), dim=-1).to(dtype)
    return emb.cos(), emb.sin()


def forward(params, cfg, tokens):
    """tokens: (B, T) int64. Returns logits (B, T, V)."""
    B, T = tokens.shape
    C, H, KVH = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    D = C // H
    eps = cfg["norm_eps"]
    dtype = params["model.embed_tokens.weight"].dtype
    cos, sin = rope_cos_sin(T, D, cfg["rope_theta"], dtype)
    mask = torch.full((T, T), float("-inf"), dtype=dtype).triu(1)
    h = params["model.embed_tokens.weight"][tokens]
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, params[p + "input_layernorm.weight"], eps)
        q = (x @ params[p + "self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
        k = (x @ params[p + "self_attn.k_proj.weight"].T).view(B, T, KVH, D).transpose(1, 2)
        v = (x @ params[p + "self_attn.v_proj.weight"].T).view(B, T, KVH, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KVH, dim=1)
        v = v.repeat_interleave(H // KVH, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D) + mask
        att = torch.softmax(scores, dim=-1) @ v
        h = h + att.transpose(1, 2).reshape(B, T, H * D) @ params[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, params[p + "post_attention_layernorm.weight"], eps)
        gate = x @ params[p + "mlp.gate_proj.weight"].T
        up = x @ params[p + "mlp.up_proj.weight"].T
        h = h + (F.silu(gate) * up) @ params[p + "mlp.down_proj.weight"].T
    h = rms_norm(h, params["model.norm.weight"], eps)
    head = params["model.embed_tokens.weight" if cfg["tie_embeddings"] else "lm_head.weight"]
    return h @ head.T


def loss_fn(logits, targets):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def decays(name):
    """Weight decay applies to matrices only: projections and an untied output head."""
    return name.endswith("_proj.weight") or name == "lm_head.weight"


def make_adamw(params, lr, betas, eps, weight_decay):
    groups = [
        {"params": [t for n, t in params.items() if decays(n)], "weight_decay": weight_decay},
        {"params": [t for n, t in params.items() if not decays(n)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def _self_test():
    cfg = dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=6, vocab_size=11,
               norm_eps=1e-5, rope_theta=10000.0, tie_embeddings=False)
    params = {n: t.requires_grad_() for n, t in init_params(cfg, seed=1, dtype=torch.float64).items()}
    for t in params.values():  # larger weights make finite differences meaningful
        with torch.no_grad():
            t.mul_(10.0) if t.dim() == 2 else t.add_(0.1 * torch.randn(t.shape, dtype=t.dtype))
    tokens = torch.tensor([[1, 5, 7, 2], [3, 3, 9, 0]])
    targets = torch.tensor([[5, 7, 2, IGNORE_INDEX], [3, 9, 0, 4]])
    names = list(params)

    def f(*tensors):
        return loss_fn(forward(dict(zip(names, tensors)), cfg, tokens), targets)

    assert torch.autograd.gradcheck(f, tuple(params[n] for n in names), eps=1e-6, atol=1e-6)

    # Grouped-query attention with one KV head equals multi-head attention whose KV heads are
    # identical copies of it.
    cfg2 = dict(cfg, n_kv_heads=2)
    p2 = init_params(cfg2, seed=2, dtype=torch.float64)
    logits_a = forward(p2, cfg2, tokens)
    cfg3 = dict(cfg2, n_kv_heads=1)
    p3 = dict(p2)
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"):
        p3[name] = p2[name][:4]  # head 0's rows only
    p2b = dict(p2)
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"):
        p2b[name] = torch.cat([p2[name][:4], p2[name][:4]])  # both heads identical
    assert torch.allclose(forward(p3, cfg3, tokens), forward(p2b, cfg2, tokens), atol=1e-12)
    assert not torch.allclose(logits_a, forward(p2b, cfg2, tokens))
    print("torch_llama self-test passed")


if __name__ == "__main__":
    _self_test()
