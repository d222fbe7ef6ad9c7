#!/usr/bin/env python3
"""PyTorch baseline for mote's LoRA / MoTE training step, on the C2 shape of pytorch_gpt2.py.

Model: C2 = GPT-2 style (LayerNorm, gelu-tanh MLP, learned positions, tied embeddings), 6 layers,
6 heads, d_model 384, d_ff 1536, vocab 8192, batch 8 x 128 tokens, float32, reusing the GPT/Block
classes of benchmarks/pytorch_gpt2.py (its four nn.Linear layers per block are swapped for adapter
wrappers after construction; pytorch_gpt2.py itself is untouched).

It times one training step (forward, cross entropy over all 1024 tokens, backward, AdamW over the
trainable parameters only) in four configurations and prints tokens/s for each:
  full            every parameter trains (the same step as pytorch_gpt2.py's C2 train, re-measured here)
  lora            base frozen; LoRA rank 16, alpha 32 on c_attn, attn c_proj, c_fc and mlp c_proj of
                  every block: y = base(x) + (alpha/r) * (x @ A.T) @ B.T, A [r, in] kaiming-uniform(a=sqrt(5)),
                  B [out, r] small random (not zero, so every gradient is non-trivial as in steady state)
  mote            base frozen; per linear layer 3 step experts + 1 shared expert, each a rank-16 LoRA as
                  above (same alpha/r scaling); every token carries a step id in {0, 1, 2} and
                  y = base(x) + 0.5 * E_step(x) + 0.5 * E_shared(x). Implemented by gathering tokens per
                  expert: flatten to [N, d]; per step expert e, idx = nonzero(step_ids == e), x_e = x[idx],
                  out.index_add_(0, idx, 0.5 * E_e(x_e)); the shared expert runs on all tokens. The per-expert
                  index lists are computed once per batch (shared by all 24 layers) inside the timed step;
                  the gathers and index_adds run inside every layer's forward. Each sequence is split into
                  three contiguous runs (step 0, then 1, then 2) of different, per-sequence lengths (~32-56).
  single_lora_2r  base frozen; one LoRA of rank 32 per linear layer (the "single LoRA, rank x2" baseline)
Timing: 2 warm-up steps per configuration, then `reps` rounds in which each configuration runs one step
(interleaved, so background load drifts hit all four alike); the median step time is reported. It also
prints the cost of mote relative to lora (time per step ratio), the speedup of lora over full training
(full time / lora time), trainable parameter counts and peak RSS.

Before timing it always runs a small self-check on a tiny shape: the MoTE layer's output (and its
gradients) equal a dense mask-based reference to 1e-5, the LoRA layer equals the base layer when B is
zero, and the step-id layout is three contiguous runs per sequence. `--check` runs only the self-check;
`--quick` uses 3 timed rounds instead of 7; `--bf16` runs forward and loss under bf16 autocast.

Run it in PyTorch's fastest configuration on this machine, in its own command:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 benchmarks/pytorch_lora.py
Debian's python3-torch does its matrix products through whatever libblas.so.3 Debian's alternatives
system selects; it needs an optimized BLAS installed (`apt-get install libopenblas0-openmp`, which
registers itself as the preferred alternative; check with
`update-alternatives --display libblas.so.3-x86_64-linux-gnu`). Without it torch falls back to the
reference BLAS, about 6 GFLOP/s instead of about 170 here, and every number below is meaningless.
"""
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_gpt2  # noqa: E402  (GPT, Block)
from pytorch_gpt2 import precision  # noqa: E402  (autocast under --bf16)

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
    """Per sequence, three contiguous runs 0..0 1..1 2..2 whose lengths differ and vary per sequence."""
    ids = torch.empty(batch, seq, dtype=torch.long)
    lo, hi = seq // 4, seq // 2 - seq // 16  # 32..56 at seq 128
    for b in range(batch):
        while True:
            n0 = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            n1 = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            n2 = seq - n0 - n1
            if lo <= n2 <= hi and len({n0, n1, n2}) == 3:
                break
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
        assert len(set(counts)) == 3 and min(counts) > 0, counts
        assert torch.equal(row, torch.sort(row).values), "runs not contiguous"

    # Trainable parameter sets of the benchmark configurations (tiny model).
    for mode, per_linear in (("lora", 1), ("single_lora_2r", 2), ("mote", NUM_STEPS + 1)):
        model, trainable, _ = build(mode, 64, 16, 2, 2)
        want_n = 2 * per_linear * RANK * sum(i + o for i, o in ((16, 48), (16, 16), (16, 64), (64, 16)))
        assert sum(p.numel() for p in trainable) == want_n, mode
        assert all(p.requires_grad == (".A" in n or ".B" in n) for n, p in model.named_parameters()), mode
    print("self-check passed (mote == dense reference to 1e-5, fwd+grad; lora == base when B == 0)")


def main():
    torch.set_num_threads(os.cpu_count())
    mode = "bf16 autocast" if "--bf16" in sys.argv else "float32"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {mode}")
    self_check()
    if "--check" in sys.argv:
        return
    reps = 3 if "--quick" in sys.argv else 7
    vocab, d, layers, heads, batch, seq = 8192, 384, 6, 6, 8, 128
    tokens = batch * seq
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(3))
    targets = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(4))
    step_ids = step_id_layout(batch, seq, torch.Generator().manual_seed(5))

    modes = ("full", "lora", "mote", "single_lora_2r")
    steps, counts = {}, {}
    for mode in modes:
        model, trainable, routing = build(mode, vocab, d, layers, heads)
        opt = torch.optim.AdamW(trainable, lr=1e-4)
        counts[mode] = sum(p.numel() for p in trainable)

        def train_step(model=model, opt=opt, routing=routing):
            opt.zero_grad(set_to_none=True)
            if routing is not None:
                routing.set(step_ids)  # per-batch expert index lists, inside the timed step
            with precision():
                loss = F.cross_entropy(model(ids).view(-1, vocab), targets.view(-1))
            loss.backward()
            opt.step()

        steps[mode] = train_step

    for mode in modes:  # warm-up (also creates the AdamW state)
        steps[mode]()
        steps[mode]()
    times = {mode: [] for mode in modes}
    for _ in range(reps):
        for mode in modes:
            start = time.perf_counter()
            steps[mode]()
            times[mode].append(time.perf_counter() - start)
    med = {mode: sorted(ts)[len(ts) // 2] for mode, ts in times.items()}

    print(f"C2 6L d384 b{batch}x{seq}, train step (fwd + bwd + AdamW), median of {reps}")
    for mode in modes:
        print(f"  {mode:15s} {tokens / med[mode]:8.0f} tok/s  {med[mode] * 1e3:7.1f} ms/step"
              f"  {counts[mode] / 1e6:7.3f} M trainable")
    print(f"  mote / lora cost            {med['mote'] / med['lora']:5.2f}x time per step")
    print(f"  single_lora_2r / lora cost  {med['single_lora_2r'] / med['lora']:5.2f}x time per step")
    print(f"  full / lora (lora speedup)  {med['full'] / med['lora']:5.2f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
