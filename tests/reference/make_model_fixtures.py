#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for whole models (tests/nn/test_nn.cpp).

Two tiny models, shaped exactly like mote::presets::tiny_gpt2 and tiny_llama, are written out in
plain PyTorch float64 following the Hugging Face GPT2LMHeadModel and LlamaForCausalLM formulas
(no transformers package): GPT-2 with Conv1D [in, out] weights, a fused c_attn, learned positions,
LayerNorm, gelu-tanh and a tied lm_head; Llama with RMSNorm, rotate-half RoPE, grouped-query
attention (repeat_kv), SwiGLU and an untied lm_head. Weights are seeded random draws.

For each model it writes, under tests/reference/fixtures/:
  model_<name>.txt               text fixture (format of make_op_fixtures.py):
                                 attr lines with the config, tensors ids, targets, logits, loss,
                                 param.<hf name> for every weight and grad.<hf name> for every gradient
                                 of the mean cross-entropy (targets of -100 are ignored)
  model_<name>.safetensors       the weights under their Hugging Face names, F64, written by hand
  model_<name>_config.json       the Hugging Face config.json of the model

Run: /usr/bin/python3 tests/reference/make_model_fixtures.py  (needs Debian's python3-torch)
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
f64 = torch.float64

GPT2 = dict(vocab=64, d=32, layers=2, heads=4, kv_heads=4, ff=128, max_seq=16, eps=1e-5)
LLAMA = dict(vocab=64, d=32, layers=2, heads=4, kv_heads=2, ff=64, max_seq=16, eps=1e-5, theta=10000.0)
BATCH, SEQ = 2, 8


def draw(gen, shape, std=0.1, mean=0.0):
    return (torch.randn(shape, generator=gen, dtype=f64) * std + mean).requires_grad_(True)


# ---- GPT-2 ----------------------------------------------------------------------------------
def gpt2_params(c, gen):
    d, ff = c["d"], c["ff"]
    p = {"wte.weight": draw(gen, (c["vocab"], d)), "wpe.weight": draw(gen, (c["max_seq"], d))}
    for i in range(c["layers"]):
        h = f"h.{i}."
        p[h + "ln_1.weight"] = draw(gen, (d,), 0.1, 1.0)
        p[h + "ln_1.bias"] = draw(gen, (d,))
        p[h + "attn.c_attn.weight"] = draw(gen, (d, 3 * d))  # Conv1D: [in, out]
        p[h + "attn.c_attn.bias"] = draw(gen, (3 * d,))
        p[h + "attn.c_proj.weight"] = draw(gen, (d, d))
        p[h + "attn.c_proj.bias"] = draw(gen, (d,))
        p[h + "ln_2.weight"] = draw(gen, (d,), 0.1, 1.0)
        p[h + "ln_2.bias"] = draw(gen, (d,))
        p[h + "mlp.c_fc.weight"] = draw(gen, (d, ff))
        p[h + "mlp.c_fc.bias"] = draw(gen, (ff,))
        p[h + "mlp.c_proj.weight"] = draw(gen, (ff, d))
        p[h + "mlp.c_proj.bias"] = draw(gen, (d,))
    p["ln_f.weight"] = draw(gen, (d,), 0.1, 1.0)
    p["ln_f.bias"] = draw(gen, (d,))
    return p


def causal_attention(q, k, v):
    """q [B, H, T, Dh], k and v [B, H, T, Dh] (kv already repeated)."""
    t = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def gpt2_forward(c, p, ids):
    b, t = ids.shape
    d, nh = c["d"], c["heads"]
    dh = d // nh
    x = p["wte.weight"][ids] + p["wpe.weight"][torch.arange(t)]
    for i in range(c["layers"]):
        h = f"h.{i}."
        a = F.layer_norm(x, (d,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], c["eps"])
        qkv = a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = (z.view(b, t, nh, dh).transpose(1, 2) for z in (q, k, v))
        y = causal_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + y @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = F.layer_norm(x, (d,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], c["eps"])
        m = F.gelu(m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"], approximate="tanh")
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (d,), p["ln_f.weight"], p["ln_f.bias"], c["eps"])
    return x @ p["wte.weight"].t()  # tied lm_head


def gpt2_config_json(c):
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c["vocab"], "n_embd": c["d"],
            "n_layer": c["layers"], "n_head": c["heads"], "n_inner": c["ff"], "n_positions": c["max_seq"],
            "n_ctx": c["max_seq"], "layer_norm_epsilon": c["eps"], "activation_function": "gelu_new",
            "tie_word_embeddings": True, "torch_dtype": "float64"}


# ---- Llama ----------------------------------------------------------------------------------
def llama_params(c, gen):
    d, ff, kv = c["d"], c["ff"], c["kv_heads"] * (c["d"] // c["heads"])
    p = {"model.embed_tokens.weight": draw(gen, (c["vocab"], d))}
    for i in range(c["layers"]):
        h = f"model.layers.{i}."
        p[h + "self_attn.q_proj.weight"] = draw(gen, (d, d))  # nn.Linear: [out, in]
        p[h + "self_attn.k_proj.weight"] = draw(gen, (kv, d))
        p[h + "self_attn.v_proj.weight"] = draw(gen, (kv, d))
        p[h + "self_attn.o_proj.weight"] = draw(gen, (d, d))
        p[h + "mlp.gate_proj.weight"] = draw(gen, (ff, d))
        p[h + "mlp.up_proj.weight"] = draw(gen, (ff, d))
        p[h + "mlp.down_proj.weight"] = draw(gen, (d, ff))
        p[h + "input_layernorm.weight"] = draw(gen, (d,), 0.1, 1.0)
        p[h + "post_attention_layernorm.weight"] = draw(gen, (d,), 0.1, 1.0)
    p["model.norm.weight"] = draw(gen, (d,), 0.1, 1.0)
    p["lm_head.weight"] = draw(gen, (c["vocab"], d))
    return p


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, positions, theta):
    dh = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=f64) / dh))
    freqs = positions.to(f64)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


def llama_forward(c, p, ids):
    b, t = ids.shape
    d, nh, nkv = c["d"], c["heads"], c["kv_heads"]
    dh = d // nh
    pos = torch.arange(t)
    x = p["model.embed_tokens.weight"][ids]
    for i in range(c["layers"]):
        h = f"model.layers.{i}."
        a = rms_norm(x, p[h + "input_layernorm.weight"], c["eps"])
        q = (a @ p[h + "self_attn.q_proj.weight"].t()).view(b, t, nh, dh).transpose(1, 2)
        k = (a @ p[h + "self_attn.k_proj.weight"].t()).view(b, t, nkv, dh).transpose(1, 2)
        v = (a @ p[h + "self_attn.v_proj.weight"].t()).view(b, t, nkv, dh).transpose(1, 2)
        q, k = apply_rope(q, pos, c["theta"]), apply_rope(k, pos, c["theta"])
        k = k.repeat_interleave(nh // nkv, dim=1)  # repeat_kv: query head j reads kv head j // (nh / nkv)
        v = v.repeat_interleave(nh // nkv, dim=1)
        y = causal_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + y @ p[h + "self_attn.o_proj.weight"].t()
        m = rms_norm(x, p[h + "post_attention_layernorm.weight"], c["eps"])
        m = F.silu(m @ p[h + "mlp.gate_proj.weight"].t()) * (m @ p[h + "mlp.up_proj.weight"].t())
        x = x + m @ p[h + "mlp.down_proj.weight"].t()
    x = rms_norm(x, p["model.norm.weight"], c["eps"])
    return x @ p["lm_head.weight"].t()


def llama_config_json(c):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c["vocab"],
            "hidden_size": c["d"], "intermediate_size": c["ff"], "num_hidden_layers": c["layers"],
            "num_attention_heads": c["heads"], "num_key_value_heads": c["kv_heads"],
            "max_position_embeddings": c["max_seq"], "rms_norm_eps": c["eps"], "rope_theta": c["theta"],
            "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False, "torch_dtype": "float64"}


# ---- writers --------------------------------------------------------------------------------
def fmt(t):
    flat = t.detach().reshape(-1).tolist()
    if t.dtype == f64:
        return " ".join(repr(float(v)) for v in flat)
    return " ".join(str(int(v)) for v in flat)


def tensor_lines(name, t):
    dtype = {f64: "float64", torch.int32: "int32", torch.int64: "int32"}[t.dtype]
    return [f"tensor {name} {dtype} shape" + "".join(f" {s}" for s in t.shape), fmt(t)]


def write_safetensors(path, params):
    header, blobs, offset = {}, [], 0
    for name, t in params.items():
        data = t.detach().contiguous().numpy().astype("<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # keep the data 8-byte aligned, as the format recommends
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_model(name, c, params, forward, config_json, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c["vocab"], (BATCH, SEQ), generator=gen)
    targets = torch.randint(0, c["vocab"], (BATCH, SEQ), generator=gen)
    targets[0, 2] = -100  # one ignored token
    targets[1, 5] = -100
    logits = forward(c, params, ids)
    loss = F.cross_entropy(logits.reshape(-1, c["vocab"]), targets.reshape(-1), ignore_index=-100)
    loss.backward()

    lines = [f"# model_{name}: written by tests/reference/make_model_fixtures.py with torch {torch.__version__}, float64",
             f"op {name}"]
    lines += [f"attr {k} {repr(float(v))}" for k, v in c.items()]
    lines += tensor_lines("ids", ids.to(torch.int32)) + tensor_lines("targets", targets.to(torch.int32))
    lines += tensor_lines("logits", logits) + tensor_lines("loss", loss.reshape(1))
    for pname, t in params.items():
        lines += tensor_lines("param." + pname, t)
    for pname, t in params.items():
        lines += tensor_lines("grad." + pname, t.grad)
    with open(os.path.join(OUT, f"model_{name}.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_safetensors(os.path.join(OUT, f"model_{name}.safetensors"), params)
    with open(os.path.join(OUT, f"model_{name}_config.json"), "w") as f:
        json.dump(config_json(c), f, indent=2)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_model("tiny_gpt2", GPT2, gpt2_params(GPT2, torch.Generator().manual_seed(101)), gpt2_forward, gpt2_config_json, 201)
    write_model("tiny_llama", LLAMA, llama_params(LLAMA, torch.Generator().manual_seed(102)), llama_forward,
                llama_config_json, 202)


if __name__ == "__main__":
    main()
