#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for the neural-network ops (tests/autograd/test_torch_reference.cpp).

Each case draws seeded random inputs, evaluates the op in float64 with torch (the Hugging Face
formulas: F.layer_norm, gelu(approximate='tanh'), Llama's RMSNorm, rotate_half RoPE, masked
grouped-query attention, cross_entropy with ignore_index and a per-token mask), then back-propagates
sum(out * seed) for a random seed tensor and records the input gradients.

File format, one item per line ('#' starts a comment line):
    op <name>                              which mote op to run
    attr <name> <value>                    a scalar argument (eps, theta, causal, scale, ignore_index)
    tensor <name> <dtype> shape <dims...>  header; the next line holds the values, row-major
Tensors: the differentiated inputs and the constant ones (ids, masks, loss weights) by argument name,
then `out`, `seed`, and `grad_<input>` for each differentiated input.
Floats are written with repr(), which round-trips float64 exactly.

Run: /usr/bin/python3 tests/reference/make_op_fixtures.py  (needs Debian's python3-torch)
"""
import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
f64 = torch.float64


def fmt_values(t):
    flat = t.reshape(-1).tolist()
    if t.dtype == f64:
        return " ".join(repr(float(v)) for v in flat)
    return " ".join(str(int(v)) for v in flat)


DTYPE_NAMES = {f64: "float64", torch.int32: "int32", torch.uint8: "uint8"}


def write_case(file_stem, op, attrs, inputs, forward, constants=None):
    """inputs: name -> float64 tensor, differentiated; constants: name -> tensor (ids, masks, weights), not.
    forward(**inputs, **constants) -> output."""
    constants = constants or {}
    leaves = {name: t.clone().requires_grad_(True) for name, t in inputs.items()}
    out = forward(**leaves, **constants)
    gen = torch.Generator().manual_seed(hash_name(file_stem) + 1)
    seed = torch.randn(out.shape, generator=gen, dtype=f64)
    (out * seed).sum().backward()

    tensors = list(inputs.items()) + list(constants.items()) + [("out", out.detach()), ("seed", seed)]
    tensors += [("grad_" + name, leaves[name].grad) for name in inputs]
    lines = [f"# {file_stem}: written by tests/reference/make_op_fixtures.py with torch {torch.__version__}, float64",
             f"op {op}"]
    lines += [f"attr {k} {repr(v)}" for k, v in attrs.items()]
    for name, t in tensors:
        lines.append(f"tensor {name} {DTYPE_NAMES[t.dtype]} shape" + "".join(f" {d}" for d in t.shape))
        lines.append(fmt_values(t))
    with open(os.path.join(OUT, file_stem + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def hash_name(name):
    # A stable per-case seed (Python's hash() is salted per process).
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=f64) * scale


# ----------------------------------------------------------------------------- the formulas


def rms_norm(x, weight, eps):
    # LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight.
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(x, positions, theta):
    head_dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=f64) / head_dim))
    freqs = positions.to(f64)[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    if positions.dim() == 2:  # [B, T, Dh] -> [B, 1, T, Dh], broadcast over heads
        cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def attention(q, k, v, causal, scale, mask=None):
    _, heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (scale if scale != 0 else 1.0 / math.sqrt(head_dim))
    allowed = torch.ones(q_len, kv_len, dtype=torch.bool)
    if causal:  # query t sits at absolute position kv_len - q_len + t
        allowed = torch.arange(kv_len)[None, :] <= (kv_len - q_len + torch.arange(q_len))[:, None]
    allowed = allowed[None, None]
    if mask is not None:
        allowed = allowed & (mask.bool()[:, None] if mask.dim() == 3 else mask.bool()[None, None])
    # A finite fill keeps fully masked rows NaN-free; multiplying by `allowed` then zeroes them.
    scores = scores.masked_fill(~allowed, torch.finfo(f64).min)
    probs = torch.softmax(scores, dim=-1) * allowed
    return probs @ v


def cross_entropy(logits, targets, ignore_index, loss_mask=None):
    vocab = logits.shape[-1]
    nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1).long(), ignore_index=ignore_index,
                          reduction="none")
    weights = (targets.reshape(-1) != ignore_index).to(f64)
    if loss_mask is not None:
        weights = weights * loss_mask.reshape(-1)
    return (nll * weights).sum() / weights.sum()


# ----------------------------------------------------------------------------- the cases


def main():
    os.makedirs(OUT, exist_ok=True)

    def gen_for(stem):
        return torch.Generator().manual_seed(hash_name(stem))

    g = gen_for("op_layer_norm")
    write_case("op_layer_norm", "layer_norm", {"eps": 1e-5},
               {"x": randn(g, 2, 3, 6, scale=2.0), "weight": 1 + randn(g, 6, scale=0.3), "bias": randn(g, 6, scale=0.5)},
               lambda x, weight, bias: F.layer_norm(x, (x.shape[-1],), weight, bias, 1e-5))

    g = gen_for("op_rms_norm")
    write_case("op_rms_norm", "rms_norm", {"eps": 1e-6},
               {"x": randn(g, 2, 3, 6, scale=2.0), "weight": 1 + randn(g, 6, scale=0.3)},
               lambda x, weight: rms_norm(x, weight, 1e-6))

    g = gen_for("op_gelu")
    write_case("op_gelu", "gelu", {}, {"x": randn(g, 3, 8, scale=2.0)}, lambda x: F.gelu(x, approximate="tanh"))

    g = gen_for("op_silu")
    write_case("op_silu", "silu", {}, {"x": randn(g, 3, 8, scale=2.0)}, lambda x: F.silu(x))

    g = gen_for("op_swiglu")
    write_case("op_swiglu", "swiglu", {}, {"gate": randn(g, 2, 3, 4, scale=2.0), "up": randn(g, 2, 3, 4)},
               lambda gate, up: F.silu(gate) * up)

    g = gen_for("op_softmax")
    write_case("op_softmax", "softmax", {}, {"x": randn(g, 3, 7, scale=2.0)}, lambda x: torch.softmax(x, -1))

    g = gen_for("op_log_softmax")
    write_case("op_log_softmax", "log_softmax", {}, {"x": randn(g, 3, 7, scale=2.0)},
               lambda x: torch.log_softmax(x, -1))

    # Per-batch positions as a packed or offset batch would have them; theta as Llama 2.
    g = gen_for("op_rope")
    positions = torch.tensor([[5, 6, 7], [1000, 2047, 3]], dtype=torch.int32)
    write_case("op_rope", "rope", {"theta": 10000.0}, {"x": randn(g, 2, 2, 3, 4)},
               lambda x, positions: rope(x, positions, 10000.0), {"positions": positions})

    # One [T] row shared by the batch; theta as Llama 3.
    g = gen_for("op_rope_shared_positions")
    positions = torch.tensor([17, 4, 300], dtype=torch.int32)
    write_case("op_rope_shared_positions", "rope", {"theta": 500000.0},
               {"x": randn(g, 1, 2, 3, 8)},
               lambda x, positions: rope(x, positions, 500000.0), {"positions": positions})

    # Causal grouped-query attention (H = 2 query heads on Hkv = 1), T = 3 queries after a cache of 1.
    g = gen_for("op_attention_causal_gqa")
    write_case("op_attention_causal_gqa", "attention", {"causal": 1, "scale": 0.0},
               {"q": randn(g, 1, 2, 3, 4), "k": randn(g, 1, 1, 4, 4), "v": randn(g, 1, 1, 4, 4)},
               lambda q, k, v: attention(q, k, v, True, 0.0))

    # Causal plus a [B, T, S] mask with one fully masked query row, T < S.
    g = gen_for("op_attention_masked")
    mask = (torch.rand(2, 3, 4, generator=g) < 0.7).to(torch.uint8)
    mask[1, 2, :] = 0
    write_case("op_attention_masked", "attention", {"causal": 1, "scale": 0.0},
               {"q": randn(g, 2, 2, 3, 2), "k": randn(g, 2, 1, 4, 2), "v": randn(g, 2, 1, 4, 2)},
               lambda q, k, v, mask: attention(q, k, v, True, 0.0, mask), {"mask": mask})

    # Not causal, a shared [T, S] mask, an explicit scale, T > S, plain multi-head.
    g = gen_for("op_attention_full_scaled")
    mask = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.uint8)
    write_case("op_attention_full_scaled", "attention", {"causal": 0, "scale": 0.3},
               {"q": randn(g, 1, 2, 4, 3), "k": randn(g, 1, 2, 3, 3), "v": randn(g, 1, 2, 3, 3)},
               lambda q, k, v, mask: attention(q, k, v, False, 0.3, mask), {"mask": mask})

    g = gen_for("op_cross_entropy")
    targets = torch.tensor([3, -100, 0, 5, 5, -100, 1], dtype=torch.int32)
    write_case("op_cross_entropy", "cross_entropy", {"ignore_index": -100},
               {"logits": randn(g, 7, 6, scale=2.0)},
               lambda logits, targets: cross_entropy(logits, targets, -100), {"targets": targets})

    g = gen_for("op_cross_entropy_masked")
    targets = torch.tensor([[4, 0, -1], [2, 2, 1]], dtype=torch.int32)
    loss_mask = torch.tensor([[1.0, 0.25, 1.0], [0.0, 2.0, 0.5]], dtype=f64)
    write_case("op_cross_entropy_masked", "cross_entropy", {"ignore_index": -1},
               {"logits": randn(g, 2, 3, 5, scale=2.0)},
               lambda logits, targets, loss_mask: cross_entropy(logits, targets, -1, loss_mask),
               {"targets": targets, "loss_mask": loss_mask})


if __name__ == "__main__":
    main()
