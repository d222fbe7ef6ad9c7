#!/usr/bin/env python3
"""A plain GPT-2 in PyTorch, timed on the shapes of mote's model benchmark, for comparison.

Run it in PyTorch's fastest configuration on this kind of machine, in its own command:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE python3 benchmarks/pytorch_gpt2.py
It prints tokens/s for the training step (forward, backward, AdamW), the forward pass, and KV-cache
decode at batch 1 (32-token prompt, 128 new tokens), for C1 = GPT-2 124M at batch 4 x 64 and
C2 = 6 layers, 6 heads, d 384, vocab 8192 at batch 8 x 128, plus peak resident memory.

With --bf16 the training step and the forward pass run under torch.autocast("cpu", dtype=torch.bfloat16),
PyTorch's counterpart of mote's matmul_precision::bf16 (decode stays float32 in both).

Debian's python3-torch does its matrix products through the libblas.so.3 that Debian's alternatives
system selects. Install an optimized one first (`apt-get install libopenblas0-openmp`, which makes
itself the preferred alternative; check with `update-alternatives --display libblas.so.3-x86_64-linux-gnu`):
with the reference BLAS torch runs at about 6 GFLOP/s instead of about 170 on a 2-vCPU EPYC.
"""
import contextlib
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F


def precision():
    """Mixed bf16 under --bf16 (autocast), float32 otherwise."""
    if "--bf16" in sys.argv:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = torch.nn.LayerNorm(d)
        self.c_attn = torch.nn.Linear(d, 3 * d)
        self.c_proj = torch.nn.Linear(d, d)
        self.ln_2 = torch.nn.LayerNorm(d)
        self.c_fc = torch.nn.Linear(d, 4 * d)
        self.mlp_proj = torch.nn.Linear(4 * d, d)

    def forward(self, x, cache=None):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # Plain attention (Debian's torch 1.13 has no fused SDPA); a decode step (t == 1) sees the whole cache.
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if t > 1:
            s = k.shape[2]
            mask = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
            scores = scores.masked_fill(~mask, float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, vocab, d, layers, heads, context=1024):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(context, d)
        self.h = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(d)

    def forward(self, ids, start=0, caches=None):
        pos = torch.arange(start, start + ids.shape[1])
        x = self.wte(ids) + self.wpe(pos)
        for i, block in enumerate(self.h):
            x = block(x, None if caches is None else caches[i])
        return self.ln_f(x) @ self.wte.weight.T  # tied head


def tokens_per_second(fn, tokens, reps):
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return tokens / times[len(times) // 2]


def bench(name, vocab, d, layers, heads, batch, seq, reps):
    torch.manual_seed(0)
    model = GPT(vocab, d, layers, heads)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (batch, seq))
    targets = torch.randint(0, vocab, (batch, seq))

    def train_step():
        opt.zero_grad(set_to_none=True)
        with precision():
            loss = F.cross_entropy(model(ids).view(-1, vocab), targets.view(-1))
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad(), precision():
            model(ids)

    prompt = torch.randint(0, vocab, (1, 32))

    def decode():
        with torch.no_grad():
            caches = [dict() for _ in range(layers)]
            logits = model(prompt, 0, caches)
            token = logits[:, -1:].argmax(-1)
            for i in range(128):
                logits = model(token, 32 + i, caches)
                token = logits[:, -1:].argmax(-1)

    train = tokens_per_second(train_step, batch * seq, reps)
    fwd = tokens_per_second(forward, batch * seq, reps)
    dec = tokens_per_second(decode, 128, max(2, reps // 2))
    print(f"{name}: train {train:8.0f} tok/s   forward {fwd:8.0f} tok/s   decode {dec:6.0f} tok/s")


def main():
    torch.set_num_threads(os.cpu_count())
    reps = 3 if "--quick" in sys.argv else 7
    mode = "bf16 autocast" if "--bf16" in sys.argv else "float32"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {mode}")
    bench("C1 gpt2-124M b4x64 ", 50257, 768, 12, 12, 4, 64, reps)
    bench("C2 6L d384 b8x128  ", 8192, 384, 6, 6, 8, 128, reps)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
