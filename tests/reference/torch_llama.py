"""An independent LLaMA in PyTorch that follows the math of Hugging Face `LlamaForCausalLM`.

It is the reference parallama is checked against (tests/reference/check_llama.py) and the model
of the PyTorch peer benchmark (bench/torch_bench.py). It runs in float32 or float64.

The configuration is a dict with the keys dim, n_layers, n_heads, n_kv_heads, ffn_dim,
vocab_size, norm_eps, rope_theta and tie_embeddings; head_dim = dim // n_heads. Parameter names
are the Hugging Face ones (see `param_shapes`), so `named_parameters()` and `state_dict()` of
`LlamaForCausalLM` below use exactly the names found in a Hugging Face safetensors checkpoint.

    /usr/bin/python3 tests/reference/torch_llama.py     # self-test
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------
# safetensors (numpy only)
# ---------------------------------------------------------------------------------------------

def load_safetensors(path):
    """Reads a safetensors file into {name: float32 numpy array}. Supports F32 and BF16.

    Layout: an 8-byte little-endian u64 N, N bytes of JSON header, then the data region. Each
    header entry has dtype, shape and data_offsets [begin, end) relative to the data region;
    the optional "__metadata__" entry is skipped.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{path}: {name} has data_offsets {begin}..{end} outside the file")
        shape = [int(s) for s in entry["shape"]]
        count = int(np.prod(shape, dtype=np.int64))
        buf = data[begin:end]
        dtype = entry["dtype"]
        if dtype == "F32":
            width = 4
            arr = np.frombuffer(buf, dtype="<f4").astype(np.float32)
        elif dtype == "BF16":
            width = 2
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            raise ValueError(f"{path}: {name} has unsupported dtype {dtype}")
        if len(buf) != count * width:
            raise ValueError(f"{path}: {name} has {len(buf)} bytes for shape {shape} ({dtype})")
        tensors[name] = arr.reshape(shape).copy()
    return tensors


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

def head_dim(cfg):
    return cfg["dim"] // cfg["n_heads"]


def param_shapes(cfg):
    """{Hugging Face name: shape} for every parameter, in checkpoint order."""
    C, V, Fd = cfg["dim"], cfg["vocab_size"], cfg["ffn_dim"]
    H, KVH, D = cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(cfg["n_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "self_attn.q_proj.weight"] = (H * D, C)
        shapes[p + "self_attn.k_proj.weight"] = (KVH * D, C)
        shapes[p + "self_attn.v_proj.weight"] = (KVH * D, C)
        shapes[p + "self_attn.o_proj.weight"] = (C, H * D)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        shapes[p + "mlp.gate_proj.weight"] = (Fd, C)
        shapes[p + "mlp.up_proj.weight"] = (Fd, C)
        shapes[p + "mlp.down_proj.weight"] = (C, Fd)
    shapes["model.norm.weight"] = (C,)
    if not cfg["tie_embeddings"]:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def matmul_param_count(cfg):
    """Parameters in all projection matrices plus the output head (tied or not)."""
    C, Fd = cfg["dim"], cfg["ffn_dim"]
    q_dim = cfg["n_heads"] * head_dim(cfg)
    kv_dim = cfg["n_kv_heads"] * head_dim(cfg)
    per_layer = C * q_dim + 2 * C * kv_dim + q_dim * C + 3 * C * Fd
    return cfg["n_layers"] * per_layer + cfg["vocab_size"] * C


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(T, D, theta, dtype):
    """cos and sin tables (T, D) for positions 0..T-1.

    As in Hugging Face, the frequencies, angles, cos and sin are computed in float32 and then
    cast to the working dtype: inv_freq = theta^(-arange(0, D, 2)/D), angles = pos * inv_freq,
    emb = cat(angles, angles).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    pos = torch.arange(T, dtype=torch.int64).float()
    angles = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x: (B, heads, T, D); cos, sin: (T, D)."""
    return x * cos + rotate_half(x) * sin


def causal_attention(q, k, v):
    """q: (B, H, T, D); k, v: (B, H, T, D). Explicit scaled, masked softmax attention."""
    T, D = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs @ v


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["dim"]
        self.n_heads, self.n_kv_heads, self.head_dim = cfg["n_heads"], cfg["n_kv_heads"], head_dim(cfg)
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        H, KVH, D = self.n_heads, self.n_kv_heads, self.head_dim
        self.q_proj = nn.Linear(C, H * D, bias=False)
        self.k_proj = nn.Linear(C, KVH * D, bias=False)
        self.v_proj = nn.Linear(C, KVH * D, bias=False)
        self.o_proj = nn.Linear(H * D, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, KVH, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, KVH, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, KVH, D).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        # KV head j serves query heads j*(H/KVH) .. (j+1)*(H/KVH)-1.
        k = k.repeat_interleave(H // KVH, dim=1)
        v = v.repeat_interleave(H // KVH, dim=1)
        out = causal_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * D))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, Fd = cfg["dim"], cfg["ffn_dim"]
        self.gate_proj = nn.Linear(C, Fd, bias=False)
        self.up_proj = nn.Linear(C, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.mlp = MLP(cfg)

    def forward(self, h, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg["n_layers"])])
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])

    def forward(self, tokens):
        h = self.embed_tokens(tokens)
        cos, sin = rope_cos_sin(tokens.shape[1], head_dim(self.cfg), self.cfg["rope_theta"], h.dtype)
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.norm(h)


class LlamaForCausalLM(nn.Module):
    """tokens (B, T) int64 -> logits (B, T, V). With tie_embeddings there is no lm_head and the
    output head is model.embed_tokens.weight."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.model = LlamaModel(self.cfg)
        if not self.cfg["tie_embeddings"]:
            self.lm_head = nn.Linear(cfg["dim"], cfg["vocab_size"], bias=False)

    def output_weight(self):
        return self.model.embed_tokens.weight if self.cfg["tie_embeddings"] else self.lm_head.weight

    def forward(self, tokens):
        return self.model(tokens) @ self.output_weight().T


def cross_entropy(logits, targets):
    """Mean cross-entropy over the targets that are not IGNORE_INDEX."""
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def init_weights(model, seed, std=0.02):
    """Deterministic initialisation: matrices N(0, std), norm weights 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)
    return model


def build_model(cfg, weights=None, dtype=torch.float32, seed=0):
    """A LlamaForCausalLM in `dtype`, loaded from {HF name: array} when weights are given
    (every name must be present, with the right shape, and no other), else initialised."""
    model = LlamaForCausalLM(cfg).to(dtype)
    if weights is None:
        return init_weights(model, seed)
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"weights do not match the layout: missing {missing}, unexpected {extra}")
    params = dict(model.named_parameters())
    assert set(params) == set(expected), sorted(set(params) ^ set(expected))
    with torch.no_grad():
        for name, shape in expected.items():
            w = torch.as_tensor(np.asarray(weights[name]))
            if tuple(w.shape) != tuple(shape):
                raise ValueError(f"{name}: shape {tuple(w.shape)}, expected {tuple(shape)}")
            params[name].copy_(w.to(dtype))
    return model


# ---------------------------------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------------------------------

def decays(name):
    """Weight decay applies to matrices only: the projections and an untied output head; not to
    the norms nor to model.embed_tokens.weight."""
    return name.endswith("_proj.weight") or name == "lm_head.weight"


def make_adamw(named_params, lr, betas, eps, weight_decay):
    """torch.optim.AdamW with two groups: decayed matrices, and the rest with weight_decay 0."""
    named = list(named_params)
    groups = [
        {"params": [p for n, p in named if decays(n)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def train_adamw(model, tokens, targets, steps, lr, betas, eps, weight_decay):
    """`steps` AdamW steps on the same batch (constant lr, no clipping); returns the losses.
    Each step: zero grad, forward, backward, optimizer step."""
    opt = make_adamw(model.named_parameters(), lr, betas, eps, weight_decay)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(model(tokens), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def adamw_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update of tensor p in place, written out (torch.optim.AdamW semantics, step
    counted from 1): p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)."""
    p.mul_(1.0 - lr * weight_decay)
    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    m_hat = m / (1.0 - beta1 ** step)
    v_hat = v / (1.0 - beta2 ** step)
    p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


# ---------------------------------------------------------------------------------------------
# self-test
# ---------------------------------------------------------------------------------------------

def _plain_mha_logits(model, tokens):
    """Logits computed without the module code: per-head loops, per-row causal softmax, RoPE by
    explicit 2-D rotations of the pairs (i, i + D/2) with float64 angles. Requires
    n_kv_heads == n_heads."""
    cfg = model.cfg
    P = {n: p.detach() for n, p in model.named_parameters()}
    C, H, D, eps = cfg["dim"], cfg["n_heads"], head_dim(cfg), cfg["norm_eps"]
    assert cfg["n_kv_heads"] == H
    B, T = tokens.shape

    def norm(x, w):
        return x / torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1] + eps) * w

    def rope(x, t):  # x: (D,) at position t
        out = torch.empty_like(x)
        for i in range(D // 2):
            a = t * (cfg["rope_theta"] ** (-2.0 * i / D))
            c, s = math.cos(a), math.sin(a)
            out[i] = x[i] * c - x[i + D // 2] * s
            out[i + D // 2] = x[i + D // 2] * c + x[i] * s
        return out

    logits = torch.empty(B, T, cfg["vocab_size"], dtype=torch.float64)
    for b in range(B):
        h = P["model.embed_tokens.weight"][tokens[b]].clone()  # (T, C)
        for li in range(cfg["n_layers"]):
            p = f"model.layers.{li}."
            x = norm(h, P[p + "input_layernorm.weight"])
            heads = []
            for hd in range(H):
                rows = slice(hd * D, (hd + 1) * D)
                q = x @ P[p + "self_attn.q_proj.weight"][rows].T
                k = x @ P[p + "self_attn.k_proj.weight"][rows].T
                v = x @ P[p + "self_attn.v_proj.weight"][rows].T
                q = torch.stack([rope(q[t], t) for t in range(T)])
                k = torch.stack([rope(k[t], t) for t in range(T)])
                out = torch.zeros(T, D, dtype=torch.float64)
                for t in range(T):
                    s = torch.tensor([q[t] @ k[u] / math.sqrt(D) for u in range(t + 1)])
                    w = torch.exp(s - s.max())
                    w = w / w.sum()
                    out[t] = sum(w[u] * v[u] for u in range(t + 1))
                heads.append(out)
            h = h + torch.cat(heads, dim=1) @ P[p + "self_attn.o_proj.weight"].T
            x = norm(h, P[p + "post_attention_layernorm.weight"])
            g = x @ P[p + "mlp.gate_proj.weight"].T
            u = x @ P[p + "mlp.up_proj.weight"].T
            h = h + (g / (1.0 + torch.exp(-g)) * u) @ P[p + "mlp.down_proj.weight"].T
        h = norm(h, P["model.norm.weight"])
        head = P["model.embed_tokens.weight" if cfg["tie_embeddings"] else "lm_head.weight"]
        logits[b] = h @ head.T
    return logits


def _write_safetensors(path, tensors):
    """Minimal writer for the self-test: {name: (dtype string, float32 numpy array)}."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, arr) in tensors.items():
        arr = np.array(arr, dtype=np.float32, order="C")
        if dtype == "F32":
            blob = arr.astype("<f4").tobytes()
        else:  # BF16 by truncation
            blob = (arr.view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def _spread_weights(model, matrix_scale, norm_noise):
    """Scales the matrices up and perturbs the norm weights, so the model is far from linear."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(norm_noise * torch.randn(p.shape, dtype=p.dtype))
            else:
                p.mul_(matrix_scale)


def _self_test():
    import os
    import tempfile

    from torch.nn.utils.stateless import functional_call

    torch.manual_seed(0)
    base = dict(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=6, vocab_size=11,
                norm_eps=1e-5, rope_theta=10000.0, tie_embeddings=False)
    tokens = torch.tensor([[1, 5, 7, 2, 9], [3, 3, 10, 0, 4]])
    targets = torch.tensor([[5, 7, 2, IGNORE_INDEX, 1], [3, 10, 0, 4, IGNORE_INDEX]])

    # (a) Gradients against central finite differences (torch.autograd.gradcheck), in float64,
    # for a few parameters, tied and untied. Weights are made large enough for the model to be
    # far from linear.
    for tied in (False, True):
        cfg = dict(base, tie_embeddings=tied)
        model = build_model(cfg, dtype=torch.float64, seed=1)
        _spread_weights(model, matrix_scale=25.0, norm_noise=0.3)
        params = dict(model.named_parameters())
        chosen = ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                  "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                  "model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                  "model.layers.1.mlp.gate_proj.weight", "model.layers.0.mlp.down_proj.weight",
                  "model.norm.weight"] + ([] if tied else ["lm_head.weight"])
        originals = {n: params[n].detach().clone() for n in chosen}

        def loss_of(*values):
            # The module run with the chosen parameters replaced by `values`.
            return cross_entropy(functional_call(model, dict(zip(chosen, values)), (tokens,)), targets)

        inputs = tuple(originals[n].clone().requires_grad_() for n in chosen)
        assert torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
        # The module's own backward agrees with the functional one used by gradcheck.
        model.zero_grad()
        cross_entropy(model(tokens), targets).backward()
        func = torch.autograd.grad(loss_of(*inputs), inputs)
        for n, g in zip(chosen, func):
            assert torch.allclose(params[n].grad, g, rtol=1e-12, atol=1e-14), n
    print("gradients match finite differences (tied and untied)")

    # (b) With n_kv_heads == n_heads the model equals a plain multi-head computation.
    for tied in (False, True):
        cfg = dict(base, n_heads=2, n_kv_heads=2, tie_embeddings=tied)
        model = build_model(cfg, dtype=torch.float64, seed=2)
        _spread_weights(model, matrix_scale=20.0, norm_noise=0.2)
        with torch.no_grad():
            ours, plain = model(tokens), _plain_mha_logits(model, tokens)
        # The only difference left is the float32 RoPE table (about 1e-7 relative).
        err = (ours - plain).abs().max().item() / plain.abs().max().item()
        assert err < 1e-6, err
    print("multi-head attention matches a plain per-head computation")

    # (b') Grouped-query attention equals multi-head attention whose KV heads are copies:
    # KV head j serves query heads j*(H/KVH) .. (j+1)*(H/KVH)-1.
    cfg_g = dict(base, dim=16, n_heads=4, n_kv_heads=2)
    cfg_m = dict(cfg_g, n_kv_heads=4)
    gqa = build_model(cfg_g, dtype=torch.float64, seed=3)
    _spread_weights(gqa, matrix_scale=20.0, norm_noise=0.0)
    D = head_dim(cfg_g)
    weights = {n: p.detach().clone() for n, p in gqa.named_parameters()}
    for name, w in list(weights.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            weights[name] = w.view(cfg_g["n_kv_heads"], D, -1).repeat_interleave(2, dim=0).reshape(-1, w.shape[1])
    mha = build_model(cfg_m, weights=weights, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(gqa(tokens), mha(tokens), rtol=0, atol=1e-12)
        # The other assignment (repeat instead of repeat_interleave) gives different logits.
        for name, w in gqa.named_parameters():
            if name.endswith(("k_proj.weight", "v_proj.weight")):
                weights[name] = w.detach().repeat(2, 1)
        other = build_model(cfg_m, weights=weights, dtype=torch.float64)
        assert not torch.allclose(gqa(tokens), other(tokens), rtol=0, atol=1e-6)
    print("grouped-query attention matches multi-head attention with shared KV heads")

    # (c) torch.optim.AdamW with the two groups equals the written-out update.
    cfg = dict(base, tie_embeddings=False)
    model = build_model(cfg, dtype=torch.float64, seed=4)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in ref.items()}
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
    train_adamw(model, tokens, targets, 3, hp["lr"], (hp["beta1"], hp["beta2"]), hp["eps"], hp["weight_decay"])
    shadow = build_model(cfg, weights=ref, dtype=torch.float64)
    for step in range(1, 4):
        shadow.zero_grad()
        cross_entropy(shadow(tokens), targets).backward()
        with torch.no_grad():
            for n, p in shadow.named_parameters():
                wd = hp["weight_decay"] if decays(n) else 0.0
                adamw_update(p, p.grad, *state[n], step, hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], wd)
    trained = dict(model.named_parameters())
    for n, p in shadow.named_parameters():
        assert torch.allclose(trained[n], p, rtol=1e-12, atol=1e-14), n
    assert not decays("model.embed_tokens.weight") and not decays("model.norm.weight")
    assert decays("model.layers.0.mlp.up_proj.weight") and decays("lm_head.weight")
    print("AdamW matches the written-out update")

    # (d) safetensors reader: F32 exactly, BF16 by truncation, metadata skipped.
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.safetensors")
        _write_safetensors(path, {"a": ("F32", a), "b": ("BF16", b), "s": ("F32", np.float32(2.5).reshape(()))})
        got = load_safetensors(path)
    assert set(got) == {"a", "b", "s"} and got["a"].dtype == np.float32
    assert np.array_equal(got["a"], a) and got["s"].shape == () and got["s"] == 2.5
    assert np.array_equal(got["b"], (b.view(np.uint32) & 0xFFFF0000).view(np.float32))
    print("safetensors reader round-trips F32 and BF16")
    print("torch_llama self-test passed")


if __name__ == "__main__":
    _self_test()
