#!/usr/bin/env python3
"""GPT-2 in PyTorch: the baseline that benchmarks/compare.py sets beside mote_bench.

The model is initialized as mote's nn::CausalLM is (include/mote/nn/causal_lm.hpp, layers.hpp):
token embeddings and every projection N(0, 0.02), the two residual projections of each block
(attention c_proj, MLP c_proj) N(0, 0.02 / sqrt(2 * layers)), learned positions N(0, 0.01), biases
0, LayerNorms 1 and 0, the LM head tied to the token embeddings. On uniform random targets its first
loss is then near ln V, and a run whose first loss is not within 10% of ln V fails (exit status 3).

Cases (the names, shapes and work of mote_bench --case; see benchmarks/bench_cases.hpp):
  c1_train, c2_train      forward, cross-entropy, backward and AdamW (lr 1e-4) at 4 x 64 (C1 = GPT-2
                          124M) and 8 x 128 (C2 = 6 layers, 6 heads, d 384, vocab 8192)
  c1_forward, c2_forward  the logits of every position, under torch.inference_mode()
  c1_decode_bN, c2_decode_bN  greedy decoding of --new-tokens tokens (default 128) after a 32-token
                          prompt for N sequences: the prompt's forward gives the first token, then
                          new_tokens - 1 cached steps, as mote's generate counts them; a KV cache
                          allocated once, last-position logits only, torch.inference_mode()
The LoRA and MoTE steps are in pytorch_lora.py.

    /usr/bin/python3 benchmarks/pytorch_gpt2.py --case c2_train --threads 2 [--warmup 2] [--reps 5]
prints one line, RESULT {json}, for compare.py: each timed repetition's seconds, every training
step's loss, and the process's resident memory with torch loaded but no model (idle) and at its peak.
    /usr/bin/python3 benchmarks/pytorch_gpt2.py --probe --threads 2
prints the environment (BLAS library as loaded, OpenBLAS core type and threads, wait policy) and GEMM
rates on mote_bench's ceiling shapes. With no --case or --probe it runs every case once, readably.

Debian's python3-torch multiplies through libblas.so.3: the reference BLAS (a few GFLOP/s) unless an
optimized one is installed (benchmarks/setup-baselines.sh installs OpenBLAS). Every run measures a
GEMM first and refuses (exit status 4) below --min-gemm-gflops. OpenBLAS's threads are set to
--threads, as are torch's.
"""
import argparse
import contextlib
import ctypes
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

CONFIGS = {
    "c1": dict(vocab=50257, d=768, layers=12, heads=12, context=1024, batch=4, seq=64),
    "c2": dict(vocab=8192, d=384, layers=6, heads=6, context=1024, batch=8, seq=128),
}
PROMPT_LEN = 32
# mote_bench's ceiling shapes (bench_ceilings.hpp), M x N x K.
GEMM_SHAPES = ((768, 768, 2048), (2048, 768, 768), (64, 3072, 768), (1024, 1536, 384))

_bf16 = False


def precision():
    """Mixed bf16 under --bf16 (autocast), float32 otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if _bf16 else contextlib.nullcontext()


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = torch.nn.LayerNorm(d)
        self.c_attn = torch.nn.Linear(d, 3 * d)
        self.c_proj = torch.nn.Linear(d, d)
        self.ln_2 = torch.nn.LayerNorm(d)
        self.c_fc = torch.nn.Linear(d, 4 * d)
        self.mlp_proj = torch.nn.Linear(4 * d, d)  # GPT-2's mlp.c_proj

    def forward(self, x, mask, cache=None, layer=0, start=0):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        if cache is not None:  # write this step's keys and values in place, attend over all so far
            cache.k[layer][:, :, start:start + t] = k
            cache.v[layer][:, :, start:start + t] = v
            k = cache.k[layer][:, :, :start + t]
            v = cache.v[layer][:, :, :start + t]
        # Written out: Debian's torch 1.13 has no fused scaled_dot_product_attention.
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        if t > 1:
            scores = scores.masked_fill(mask, float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class KVCache:
    """Keys and values of every layer, [batch, heads, capacity, head_dim], allocated once."""

    def __init__(self, layers, batch, heads, capacity, head_dim):
        self.k = [torch.empty(batch, heads, capacity, head_dim) for _ in range(layers)]
        self.v = [torch.empty(batch, heads, capacity, head_dim) for _ in range(layers)]


class GPT(torch.nn.Module):
    def __init__(self, vocab, d, layers, heads, context=1024):
        super().__init__()
        self.heads = heads
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(context, d)
        self.h = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(d)
        self.register_buffer("positions", torch.arange(context), persistent=False)
        self._masks = {}
        init_like_mote(self)

    def causal_mask(self, t, s):
        """True above the diagonal of the last t rows of an s x s causal mask (cached per shape)."""
        key = (t, s)
        if key not in self._masks:
            self._masks[key] = ~torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        return self._masks[key]

    def new_cache(self, batch, capacity):
        d = self.wte.weight.shape[1]
        return KVCache(len(self.h), batch, self.heads, capacity, d // self.heads)

    def forward(self, ids, start=0, cache=None, last_only=False):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(self.positions[start:start + t])
        mask = self.causal_mask(t, start + t) if t > 1 else None
        for i, block in enumerate(self.h):
            x = block(x, mask, cache, i, start)
        if last_only:
            x = x[:, -1:]
        return self.ln_f(x) @ self.wte.weight.T  # tied head


def init_like_mote(model):
    """mote's nn::CausalLM initialization (GPT-2's): see the module docstring."""
    residual_std = 0.02 / math.sqrt(2 * len(model.h))
    with torch.no_grad():
        torch.nn.init.normal_(model.wte.weight, std=0.02)
        torch.nn.init.normal_(model.wpe.weight, std=0.01)
        for block in model.h:
            for name in ("c_attn", "c_proj", "c_fc", "mlp_proj"):
                linear = getattr(block, name)
                std = residual_std if name in ("c_proj", "mlp_proj") else 0.02
                torch.nn.init.normal_(linear.weight, std=std)
                torch.nn.init.zeros_(linear.bias)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.ones_(module.weight)
                torch.nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------
# Environment: BLAS as loaded, thread pools, wait policy; the reference-BLAS guard.

def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def loaded_blas():
    """(paths of the BLAS / LAPACK libraries mapped into this process, the OpenBLAS handle or None)."""
    paths = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/"):
                name = os.path.basename(parts[5]).lower()
                if ("blas" in name or "lapack" in name or "mkl" in name or "blis" in name) and parts[5] not in paths:
                    paths.append(parts[5])
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_config.restype = ctypes.c_char_p
            return paths, lib
        except (OSError, AttributeError):
            continue
    return paths, None


def gemm_gflops(m, n, k, min_seconds=0.2):
    """Best rate of torch's float product at this shape over several timed runs."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best, spent = 0.0, 0.0
    while spent < min_seconds or best == 0.0:
        start = time.perf_counter()
        a @ b
        dt = time.perf_counter() - start
        spent += dt
        best = max(best, 2.0 * m * n * k / dt * 1e-9)
    return best


def environment(threads):
    """Sets torch's and OpenBLAS's threads; returns what a reader needs to judge the baseline."""
    torch.set_num_threads(threads)
    torch.randn(64, 64) @ torch.randn(64, 64)  # loads the BLAS
    paths, openblas = loaded_blas()
    env = {
        "torch": torch.__version__,
        "python": sys.executable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "blas_paths": [os.path.realpath(p) for p in paths],
        "blas_info": next((part.split("=", 1)[1] for part in torch.__config__.show().replace("\n", ",").split(",")
                           if part.strip().startswith("BLAS_INFO=")), "unknown"),
    }
    for var in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS"):
        env[var] = os.environ.get(var, "")
    if openblas is not None:
        openblas.openblas_set_num_threads(threads)
        openblas.openblas_get_corename.restype = ctypes.c_char_p
        env["openblas_config"] = openblas.openblas_get_config().decode()
        env["openblas_core"] = openblas.openblas_get_corename().decode()
        env["openblas_threads"] = openblas.openblas_get_num_threads()
        env["openblas_parallel"] = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(openblas.openblas_get_parallel(), "?")
    else:
        env["openblas_config"] = ""
    return env


def check_blas(env, min_gflops):
    """Refuses to go on when products run at a reference BLAS's few GFLOP/s."""
    rate = gemm_gflops(512, 512, 512, min_seconds=0.05)
    env["gemm_check_gflops"] = round(rate, 1)
    if rate < min_gflops:
        print(f"pytorch baseline: a 512^3 float product runs at {rate:.1f} GFLOP/s, under --min-gemm-gflops "
              f"{min_gflops}: torch is not using an optimized BLAS (loaded: {env['blas_paths']}). "
              "Run benchmarks/setup-baselines.sh.", file=sys.stderr)
        sys.exit(4)


# ---------------------------------------------------------------------------------------------
# Cases.

def random_batch(vocab, batch, seq, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g), torch.randint(0, vocab, (batch, seq), generator=g)


def time_reps(warmup, reps, fn):
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def train_step_fn(model, opt, ids, targets, losses, before=None):
    """One step: forward, mean cross-entropy over every token, backward, optimizer step."""
    vocab = model.wte.weight.shape[0]

    def step():
        opt.zero_grad(set_to_none=True)
        if before is not None:
            before()
        with precision():
            loss = F.cross_entropy(model(ids).view(-1, vocab), targets.view(-1))
        losses.append(loss.item())
        loss.backward()
        opt.step()

    return step


def decode(model, prompts, new_tokens):
    """Greedy: the prompt's forward picks the first token, then new_tokens - 1 cached steps."""
    batch, prompt_len = prompts.shape
    with torch.inference_mode():
        cache = model.new_cache(batch, prompt_len + new_tokens)
        token = model(prompts, 0, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        out = [token]
        for i in range(1, new_tokens):
            token = model(token, prompt_len + i - 1, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
            out.append(token)
    return torch.cat(out, dim=1)


def run_case(name, warmup, reps, new_tokens):
    """Returns (tokens per repetition, seconds, losses, ln V)."""
    shape, _, what = name.partition("_")
    if shape not in CONFIGS:
        raise SystemExit(f"pytorch_gpt2.py: unknown case {name!r}")
    c = CONFIGS[shape]
    torch.manual_seed(1)
    model = GPT(c["vocab"], c["d"], c["layers"], c["heads"], c["context"])
    ln_v = math.log(c["vocab"])
    losses = []
    if what == "train":
        ids, targets = random_batch(c["vocab"], c["batch"], c["seq"])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        seconds = time_reps(warmup, reps, train_step_fn(model, opt, ids, targets, losses))
        return c["batch"] * c["seq"], seconds, losses, ln_v
    if what == "forward":
        ids, _ = random_batch(c["vocab"], c["batch"], c["seq"])

        def forward():
            with torch.inference_mode(), precision():
                model(ids)

        return c["batch"] * c["seq"], time_reps(warmup, reps, forward), losses, ln_v
    if what.startswith("decode_b"):
        batch = int(what[len("decode_b"):])
        prompts, _ = random_batch(c["vocab"], batch, PROMPT_LEN)

        def run():
            out = decode(model, prompts, new_tokens)
            assert out.shape == (batch, new_tokens), out.shape

        return batch * new_tokens, time_reps(warmup, reps, run), losses, ln_v
    raise SystemExit(f"pytorch_gpt2.py: unknown case {name!r}")


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--case", help="one case (see the module docstring); prints RESULT {json}")
    p.add_argument("--probe", action="store_true", help="print the environment and GEMM rates as RESULT {json}")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch's and OpenBLAS's threads (mote's count)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--min-gemm-gflops", type=float, default=20.0,
                   help="refuse to run when a 512^3 product is slower (a reference BLAS gives a few GFLOP/s)")
    p.add_argument("--bf16", action="store_true", help="training and forward under bf16 autocast")
    p.add_argument("--check", action="store_true", help="run the script's self-check only (pytorch_lora.py)")
    return p.parse_args()


def main_with(run, description, default_cases, self_check=None):
    """Shared by pytorch_gpt2.py and pytorch_lora.py: --probe, --case, or every default case readably."""
    global _bf16
    args = parse_args(description)
    _bf16 = args.bf16
    if self_check is not None:
        self_check()
        if args.check:
            return 0
    env = environment(args.threads)
    check_blas(env, args.min_gemm_gflops)
    if args.probe:
        env["gemm"] = [dict(m=m, n=n, k=k, gflops=round(gemm_gflops(m, n, k), 2)) for m, n, k in GEMM_SHAPES]
        print("RESULT " + json.dumps(dict(side="torch", case="probe", **env)), flush=True)
        return 0
    idle_kib = status_kib("VmRSS")
    if args.case:
        tokens, seconds, losses, ln_v = run(args.case, max(0, args.warmup), max(1, args.reps), args.new_tokens)
        result = dict(side="torch", case=args.case, tokens=tokens, seconds=seconds, losses=losses, ln_vocab=ln_v,
                      idle_kib=idle_kib, peak_kib=status_kib("VmHWM"), threads=args.threads,
                      omp_wait_policy=env["OMP_WAIT_POLICY"], env=env)
        print("RESULT " + json.dumps(result), flush=True)
        if losses and not abs(losses[0] - ln_v) <= 0.1 * ln_v:
            print(f"{args.case}: first loss {losses[0]:.4f} is not within 10% of ln V = {ln_v:.4f}", file=sys.stderr)
            return 3
        return 0
    print(json.dumps(env, indent=1))
    status = 0
    for name in default_cases:
        tokens, seconds, losses, ln_v = run(name, max(0, args.warmup), max(1, args.reps), args.new_tokens)
        median = sorted(seconds)[len(seconds) // 2]
        line = f"{name:14s} {tokens / median:9.1f} tok/s (median of {len(seconds)})"
        if losses:
            line += f"   loss first {losses[0]:.4f} last {losses[-1]:.4f} (ln V {ln_v:.4f})"
            if not abs(losses[0] - ln_v) <= 0.1 * ln_v:
                line += "   FIRST LOSS NOT WITHIN 10% OF ln V"
                status = 3
        print(line, flush=True)
    print(f"peak RSS {status_kib('VmHWM') / 1024:.0f} MiB (idle {idle_kib / 1024:.0f} MiB)")
    return status


if __name__ == "__main__":
    sys.exit(main_with(run_case, "GPT-2 baseline for mote_bench",
                       ["c1_train", "c1_forward", "c1_decode_b1", "c2_train", "c2_forward", "c2_decode_b1",
                        "c2_decode_b8"]))
