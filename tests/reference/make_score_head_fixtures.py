#!/usr/bin/env python3
"""Writes the PyTorch reference fixture for the score head (tests/eval/test_score_head.cpp).

A tiny Llama of make_model_fixtures.py's LLAMA sizes, laid out as Hugging Face's
LlamaForSequenceClassification (no transformers package): the LlamaModel under "model.*", no lm_head,
and a bias-free score.weight [num_labels, d]. Each row is right-padded with pad_token_id; its scores are
the final-normed hidden state at its last non-padding token (the rightmost id != pad_token_id) through
score.weight, and the loss is the single-label cross-entropy of those scores against the labels.
Everything in float64 with seeded weights of this script's own.

It writes, under tests/reference/fixtures/:
  score_head_tiny_llama.txt      text fixture (format of make_op_fixtures.py): attr lines, tensors ids,
                                 labels, last (the position each row is read at), scores, loss and
                                 grad.<hf name> for every parameter, score.weight included
  score_head_tiny_llama/         a checkpoint directory: config.json (architectures
                                 LlamaForSequenceClassification, num_labels, id2label, label2id,
                                 pad_token_id) and model.safetensors (F64, model.* and score.weight)

Run: /usr/bin/python3 tests/reference/make_score_head_fixtures.py  (needs Debian's python3-torch)
"""
import json
import os

import torch
import torch.nn.functional as F

from make_model_fixtures import (LLAMA, OUT, apply_rope, causal_attention, draw, f64, llama_config_json, llama_params,
                                 rms_norm, tensor_lines, write_safetensors)

NAME = "score_head_tiny_llama"
LABELS = ["safe", "unsafe", "unsure"]
PAD = 0
LENGTHS = [8, 5, 3]  # real tokens per row; the rest of each row of 8 is padding
SEQ = 8


def llama_hidden(c, p, ids):
    """LlamaModel's output: the final-normed hidden states [B, T, d], causal attention without a padding mask
    (right padding never reaches a real token through a causal mask)."""
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
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        y = causal_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + y @ p[h + "self_attn.o_proj.weight"].t()
        m = rms_norm(x, p[h + "post_attention_layernorm.weight"], c["eps"])
        m = F.silu(m @ p[h + "mlp.gate_proj.weight"].t()) * (m @ p[h + "mlp.up_proj.weight"].t())
        x = x + m @ p[h + "mlp.down_proj.weight"].t()
    return rms_norm(x, p["model.norm.weight"], c["eps"])


def last_non_pad(ids, pad):
    """The rightmost position whose id is not pad, per row (current transformers' rule)."""
    t = ids.shape[1]
    positions = torch.arange(t)
    return torch.where(ids != pad, positions, torch.full_like(positions, -1)).max(dim=1).values


def config_json(c):
    cfg = llama_config_json(c)
    cfg["architectures"] = ["LlamaForSequenceClassification"]
    cfg["num_labels"] = len(LABELS)
    cfg["id2label"] = {str(i): name for i, name in enumerate(LABELS)}
    cfg["label2id"] = {name: i for i, name in enumerate(LABELS)}
    cfg["pad_token_id"] = PAD
    cfg["problem_type"] = "single_label_classification"
    return cfg


def main():
    c = LLAMA
    gen = torch.Generator().manual_seed(303)
    params = llama_params(c, gen)
    del params["lm_head.weight"]  # LlamaForSequenceClassification has no LM head
    params["score.weight"] = draw(gen, (len(LABELS), c["d"]), 0.3)

    ids = torch.full((len(LENGTHS), SEQ), PAD, dtype=torch.int64)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = torch.randint(1, c["vocab"], (n,), generator=gen)  # no pad id inside the real tokens
    labels = torch.tensor([2, 0, 1])
    last = last_non_pad(ids, PAD)
    assert last.tolist() == [n - 1 for n in LENGTHS]

    hidden = llama_hidden(c, params, ids)
    scores = hidden[torch.arange(ids.shape[0]), last] @ params["score.weight"].t()
    loss = F.cross_entropy(scores, labels)
    loss.backward()

    lines = [f"# {NAME}: written by tests/reference/make_score_head_fixtures.py with torch {torch.__version__}, float64",
             f"op {NAME}"]
    lines += [f"attr {k} {repr(float(v))}" for k, v in c.items()]
    lines += [f"attr num_labels {float(len(LABELS))!r}", f"attr pad_token_id {float(PAD)!r}"]
    lines += tensor_lines("ids", ids.to(torch.int32)) + tensor_lines("labels", labels.to(torch.int32))
    lines += tensor_lines("last", last.to(torch.int32))
    lines += tensor_lines("scores", scores) + tensor_lines("loss", loss.reshape(1))
    for pname, t in params.items():
        lines += tensor_lines("grad." + pname, t.grad)
    with open(os.path.join(OUT, NAME + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    folder = os.path.join(OUT, NAME)
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "model.safetensors"), params)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config_json(c), f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
