#!/usr/bin/env python3
"""PyTorch baseline for mote's LoRA and MoTE training steps, on the C2 shape of pytorch_gpt2.py.

Model: C2 = GPT-2 style (LayerNorm, gelu-tanh MLP, learned positions, tied embeddings), 6 layers,
6 heads, d_model 384, d_ff 1536, vocab 8192, batch 8 x 128 tokens, float32, built and initialized
by pytorch_gpt2.GPT as mote initializes it; its four nn.Linear layers per block are then frozen and
wrapped with adapters. A step is forward, cross-entropy over all 1024 tokens, backward, and AdamW
(lr 1e-4) over the adapters only. Cases (the names of mote_bench --case):
  c2_lora         LoRA rank 16, alpha 32 on c_attn, attn c_proj, c_fc and mlp c_proj of every block:
                  y = base(x) + (alpha/r) * (x @ A.T) @ B.T, A [r, in] kaiming-uniform(a=sqrt(5)) as
                  PEFT and mote draw it, B [out, r] N(0, 0.02) (not zeros, so that every gradient is
                  non-trivial, as in steady state; mote_bench does the same)
  c2_mote         per linear layer 3 step experts + 1 shared expert, each a rank-16 LoRA as above;
                  every token carries a step id in {0, 1, 2} and
                  y = base(x) + 0.5 * E_step(x) + 0.5 * E_shared(x). Tokens are gathered per expert:
                  flatten to [N, d]; per step expert e, idx = nonzero(step_ids == e), x_e = x[idx],
                  out.index_add_(0, idx, 0.5 * E_e(x_e)); the shared expert runs on all tokens. The
                  index lists are computed once per batch (shared by all 24 layers) inside the timed
                  step. Each sequence is three contiguous runs (step 0, then 1, then 2): the first two
                  of 32-56 tokens, the third the rest, as in mote_bench.
  c2_lora_r32     one LoRA of rank 32 per linear layer (the "single LoRA, rank x2" baseline)
  c2_full         every parameter trains (pytorch_gpt2.py's c2_train)

Before anything else it runs a small self-check on a tiny shape: the MoTE layer's output (and its
gradients) equal a dense mask-based reference to 1e-5, the LoRA layer equals the base layer when B is
zero, and the step-id layout is three contiguous runs per sequence. `--check` runs only the self-check.
The command line, the environment report and the reference-BLAS guard are pytorch_gpt2.py's:
    /usr/bin/python3 benchmarks/pytorch_lora.py --case c2_mote --threads 2 [--warmup 2] [--reps 5]
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_gpt2  # noqa: E402  (GPT, the case runner, the environment checks)

LINEARS = ("c_attn", "c_proj", "c_fc", "mlp_proj")  # mlp_proj is GPT-2's mlp.c_proj
RANK, ALPHA = 16, 32.0
NUM_STEPS = 3  # step experts per linear layer (plus one shared expert)


class LoRAExpert(torch.nn.Module):
    """delta(x) = (alpha / r) * (x @ A.T) @ B.T."""

    def __init__(self, d_in, d_out, rank, alpha, b_std=0.02):
        super().__init__()
        self.scale = alpha / rank
        self.A = torch.nn.Parameter(torch.empty(rank, d_in))
        self.B = torch.nn.Parameter(torch.empty(d_out, rank))
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        # Small random B instead of the usual zeros, so gradients reach A from the first step.
        torch.nn.init.normal_(self.B, std=b_std)

    def forward(self, x):
        return F.linear(F.linear(x, self.A), self.B) * self.scale


class LoRALinear(torch.nn.Module):
    """A frozen nn.Linear plus one LoRA adapter."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.lora = LoRAExpert(base.in_features, base.out_features, rank, alpha)

    def forward(self, x):
        return self.base(x) + self.lora(x)


class Routing:
    """Per-batch token -> step-expert assignment, shared by every MoTE layer of the model."""

    def __init__(self):
        self.idx = None

    def set(self, step_ids):
        flat = step_ids.reshape(-1)
        self.idx = [torch.nonzero(flat == e, as_tuple=True)[0] for e in range(NUM_STEPS)]


class MoTELinear(torch.nn.Module):
    """Frozen nn.Linear + 0.5 * (its token's step expert) + 0.5 * (shared expert), all rank-r LoRAs."""

    def __init__(self, base, routing, rank, alpha):
        super().__init__()
        self.base = base
        self.routing = routing
        d_in, d_out = base.in_features, base.out_features
        self.experts = torch.nn.ModuleList(LoRAExpert(d_in, d_out, rank, alpha) for _ in range(NUM_STEPS))
        self.shared = LoRAExpert(d_in, d_out, rank, alpha)

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        out = self.base(x2) + 0.5 * self.shared(x2)
        for e, expert in enumerate(self.experts):
            idx = self.routing.idx[e]
            if idx.numel():
                out.index_add_(0, idx, 0.5 * expert(x2.index_select(0, idx)))
        return out.view(*shape[:-1], out.shape[-1])


def step_id_layout(batch, seq, generator):
    """Per sequence, three contiguous runs 0..0 1..1 2..2: the first two of 32..56 tokens (at seq 128;
    seq/4 .. seq/4 + 24 in general), the third the rest."""
    ids = torch.empty(batch, seq, dtype=torch.long)
    lo = seq // 4
    for b in range(batch):
        n0 = lo + int(torch.randint(0, 25, (1,), generator=generator))
        n1 = lo + int(torch.randint(0, 25, (1,), generator=generator))
        ids[b, :n0], ids[b, n0:n0 + n1], ids[b, n0 + n1:] = 0, 1, 2
    return ids


def build(mode, vocab, d, layers, heads, seed=0):
    """Returns (model, trainable params, routing or None)."""
    torch.manual_seed(seed)
    model = pytorch_gpt2.GPT(vocab, d, layers, heads)
    if mode == "full":
        return model, list(model.parameters()), None
    for p in model.parameters():
        p.requires_grad_(False)
    routing = Routing() if mode == "mote" else None
    for block in model.h:
        for name in LINEARS:
            base = getattr(block, name)
            if mode == "lora":
                wrapped = LoRALinear(base, RANK, ALPHA)
            elif mode == "single_lora_2r":
                wrapped = LoRALinear(base, 2 * RANK, ALPHA)
            elif mode == "mote":
                wrapped = MoTELinear(base, routing, RANK, ALPHA)
            else:
                raise ValueError(mode)
            setattr(block, name, wrapped)
    return model, [p for p in model.parameters() if p.requires_grad], routing


def self_check():
    torch.manual_seed(1)
    dtype_tol = 1e-5
    b, t, d_in, d_out = 3, 17, 24, 40
    base = torch.nn.Linear(d_in, d_out)
    for p in base.parameters():
        p.requires_grad_(False)

    # LoRA with B = 0 is exactly the base layer; with B != 0 it matches the formula.
    lora = LoRALinear(base, 4, 8.0)
    x = torch.randn(b, t, d_in)
    with torch.no_grad():
        want = x @ base.weight.T + base.bias + 2.0 * (x @ lora.lora.A.T) @ lora.lora.B.T
        assert (lora(x) - want).abs().max() < dtype_tol, "lora formula"
        lora.lora.B.zero_()
        assert torch.equal(lora(x), base(x)), "lora with B = 0 differs from base"

    # MoTE gather/index_add layer against a dense mask-based reference, forward and backward.
    routing = Routing()
    mote = MoTELinear(base, routing, 4, 8.0)
    step_ids = step_id_layout(b, t, torch.Generator().manual_seed(2))
    step_ids[0] = torch.arange(t) % NUM_STEPS  # also exercise interleaved ids
    step_ids[1, :] = 2  # and a sequence that uses a single expert
    routing.set(step_ids)
    x = torch.randn(b, t, d_in, requires_grad=True)
    got = mote(x)
    want = base(x) + 0.5 * mote.shared(x)
    for e, expert in enumerate(mote.experts):
        want = want + 0.5 * (step_ids == e).unsqueeze(-1).to(x.dtype) * expert(x)
    # Token-by-token too, for the forward pass.
    with torch.no_grad():
        for bi in range(b):
            for ti in range(t):
                xt = x[bi, ti]
                yt = base(xt) + 0.5 * mote.shared(xt) + 0.5 * mote.experts[int(step_ids[bi, ti])](xt)
                assert (got[bi, ti] - yt).abs().max() < dtype_tol, "mote token-by-token"
    assert (got - want).abs().max() < dtype_tol, "mote forward"
    g = torch.randn_like(got)
    params = [x] + [p for p in mote.parameters() if p.requires_grad]
    grads_got = torch.autograd.grad(got, params, g, retain_graph=True)
    grads_want = torch.autograd.grad(want, params, g)
    for i, (a, w) in enumerate(zip(grads_got, grads_want)):
        assert (a - w).abs().max() < dtype_tol, f"mote gradient {i}"

    # Step-id layout: three contiguous runs of distinct lengths, in order.
    ids = step_id_layout(8, 128, torch.Generator().manual_seed(0))
    for row in ids:
        counts = torch.bincount(row, minlength=3).tolist()
        assert 32 <= counts[0] <= 56 and 32 <= counts[1] <= 56 and counts[2] >= 16, counts
        assert torch.equal(row, torch.sort(row).values), "runs not contiguous"

    # Trainable parameter sets of the benchmark configurations (tiny model).
    for mode, per_linear in (("lora", 1), ("single_lora_2r", 2), ("mote", NUM_STEPS + 1)):
        model, trainable, _ = build(mode, 64, 16, 2, 2)
        want_n = 2 * per_linear * RANK * sum(i + o for i, o in ((16, 48), (16, 16), (16, 64), (64, 16)))
        assert sum(p.numel() for p in trainable) == want_n, mode
        assert all(p.requires_grad == (".A" in n or ".B" in n) for n, p in model.named_parameters()), mode
    print("self-check passed (mote == dense reference to 1e-5, fwd+grad; lora == base when B == 0)")


def run_case(name, warmup, reps, new_tokens):
    """Returns (tokens per repetition, seconds, losses, ln V), as pytorch_gpt2.run_case."""
    modes = {"c2_lora": "lora", "c2_mote": "mote", "c2_lora_r32": "single_lora_2r", "c2_full": "full"}
    if name not in modes:
        raise SystemExit(f"pytorch_lora.py: unknown case {name!r} (one of {', '.join(modes)})")
    c = pytorch_gpt2.CONFIGS["c2"]
    vocab, batch, seq = c["vocab"], c["batch"], c["seq"]
    model, trainable, routing = build(modes[name], vocab, c["d"], c["layers"], c["heads"], seed=1)
    ids, targets = pytorch_gpt2.random_batch(vocab, batch, seq)
    step_ids = step_id_layout(batch, seq, torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    before = (lambda: routing.set(step_ids)) if routing is not None else None  # per-batch index lists, timed
    losses = []
    seconds = pytorch_gpt2.time_reps(warmup, reps, pytorch_gpt2.train_step_fn(model, opt, ids, targets, losses, before))
    return batch * seq, seconds, losses, math.log(vocab)


if __name__ == "__main__":
    sys.exit(pytorch_gpt2.main_with(run_case, "LoRA / MoTE baseline for mote_bench",
                                    ["c2_full", "c2_lora", "c2_mote", "c2_lora_r32"], self_check))
