#!/usr/bin/env python3
"""mote against PyTorch on the same CPU, in interleaved rounds, each figure beside its ceiling.

    python3 benchmarks/compare.py [--quick] [--rounds 4] [--threads N] [--out FILE.md] [--json FILE]

Needs build/bench/benchmarks/mote_bench (cmake -S . -B build/bench -G Ninja -DMOTE_BUILD_TESTS=OFF &&
cmake --build build/bench --target mote_bench) and Debian's python3-torch with OpenBLAS
(benchmarks/setup-baselines.sh). The driver itself needs only the standard library.

What it does, in order:
 1. PyTorch's BLAS: probes torch's GEMM rate (pytorch_gpt2.py --probe) under the inherited
    environment and under each OpenBLAS core type this CPU can run (OPENBLAS_CORETYPE unset, Haswell,
    Zen, SkylakeX, Cooperlake), and uses the fastest for every PyTorch run. Refuses to go on when
    products run at a reference BLAS's few GFLOP/s.
 2. Rounds (at least 4 for a result; --quick runs 2 with fewer steps, for smoke tests only). Each
    round runs mote_bench --ceilings and the torch probe (the ceilings of that round), then every
    case as separate processes: mote and PyTorch, each under the default OpenMP wait policy and
    under OMP_WAIT_POLICY=PASSIVE, in an order that alternates from round to round. Each process
    builds its model, warms up, and times its repetitions (benchmarks/bench_cases.hpp,
    pytorch_gpt2.py, pytorch_lora.py: same shapes, same initialization, same work).
 3. Per case and side: the pooled median of every timed repetition of every round, the spread
    (min-max), under the side's faster wait policy (both policies are listed); the ratio of the
    medians; the ceiling that bounds the case and each side's fraction of it; first and last losses
    of every training process (a first loss not within 10% of ln V stops the run); peak resident
    memory net of each process's idle footprint (mote_bench before its model; Python with torch
    loaded before its model).

Ceilings (the best of all rounds; a figure above its ceiling is reported as a wrong ceiling):
  training, forward, LoRA/MoTE steps: GEMM peak (the best of mote's kernel, Eigen and torch on
      mote_bench's GEMM shapes) over the step's multiply-add FLOPs per token (6 per dense weight for
      training, 2 for forward, plus attention; an adapter step: the frozen base's forward and input
      gradients plus the adapters' 6 r (in + out) per linear layer and expert).
  decode: every one of the new_tokens forward passes reads all weights once, so time is at least
      new_tokens x weight bytes / the read bandwidth of all threads on a buffer of the weights' size
      (or the GEMM bound of the passes' FLOPs, if larger). The DRAM read bandwidth (a buffer 8x the
      last-level cache) is listed beside it.
  The register-only FMA peak bounds the GEMM peak.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name, script, warm-up steps, timed repetitions (full run), timed repetitions (--quick)
CASES = [
    ("c1_train", "pytorch_gpt2.py", 2, 4, 1),
    ("c1_forward", "pytorch_gpt2.py", 1, 6, 2),
    ("c1_decode_b1", "pytorch_gpt2.py", 1, 2, 1),
    ("c2_train", "pytorch_gpt2.py", 2, 8, 2),
    ("c2_forward", "pytorch_gpt2.py", 1, 10, 2),
    ("c2_decode_b1", "pytorch_gpt2.py", 1, 5, 1),
    ("c2_decode_b8", "pytorch_gpt2.py", 1, 3, 1),
    ("c2_lora", "pytorch_lora.py", 2, 8, 2),
    ("c2_mote", "pytorch_lora.py", 2, 8, 2),
]
LABELS = {
    "c1_train": "C1 train step (GPT-2 124M, 4 x 64)",
    "c1_forward": "C1 forward (4 x 64)",
    "c1_decode_b1": "C1 decode, batch 1 (32 + 128)",
    "c2_train": "C2 train step (8 x 128)",
    "c2_forward": "C2 forward (8 x 128)",
    "c2_decode_b1": "C2 decode, batch 1 (32 + 128)",
    "c2_decode_b8": "C2 decode, batch 8 (32 + 128)",
    "c2_lora": "C2 LoRA r16 step (8 x 128)",
    "c2_mote": "C2 MoTE 3+shared step (8 x 128)",
}
# The model shapes (as bench_common.hpp's c2_config and presets::gpt2).
SHAPES = {
    "c1": dict(vocab=50257, d=768, layers=12, ff=3072, batch=4, seq=64),
    "c2": dict(vocab=8192, d=384, layers=6, ff=1536, batch=8, seq=128),
}
PROMPT_LEN = 32
NEW_TOKENS = 128  # decoded per sequence, the prompt's forward included (as nn::generate counts)
RANK = 16


class RunError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd, env, timeout):
    """Runs one process and returns its RESULT line's JSON; raises RunError on failure."""
    start = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunError(f"timed out after {timeout} s: {shlex.join(cmd)}")
    result = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if result is not None:
        result["_rc"] = p.returncode
        result["_wall_s"] = time.perf_counter() - start
    if p.returncode != 0 or result is None:
        message = f"exit status {p.returncode}: {shlex.join(cmd)}\n"
        message += "\n".join((p.stderr or p.stdout).strip().splitlines()[-6:])
        if result is not None:
            message += f"\nits result: {json.dumps(result)[:800]}"
        raise RunError(message)
    return result


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine():
    info = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    info["hypervisor"] = "hypervisor" in cpu_flags()
    return info


def base_env(threads, policy):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def torch_env(threads, policy, blas):
    env = base_env(threads, policy)
    for key, value in blas.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def choose_blas(args):
    """Probes torch's GEMM rate under each OpenBLAS core type; returns (the fastest, every probe)."""
    flags = cpu_flags()
    candidates = [("inherited environment", {})]
    if os.environ.get("OPENBLAS_CORETYPE") or os.environ.get("OPENBLAS_L2_SIZE"):
        candidates.append(("OPENBLAS_CORETYPE unset (OpenBLAS detects)",
                           {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}))
    if not args.no_coretype_search:
        for core, need in (("Haswell", {"avx2", "fma"}), ("Zen", {"avx2", "fma"}), ("SkylakeX", {"avx512f"}),
                           ("Cooperlake", {"avx512f", "avx512_bf16"})):
            if need <= flags:
                candidates.append((f"OPENBLAS_CORETYPE={core}", {"OPENBLAS_CORETYPE": core, "OPENBLAS_L2_SIZE": None}))
    table = {}
    for _ in range(2):  # two passes, interleaved; each candidate keeps its better one
        for label, settings in candidates:
            env = torch_env(args.threads, "default", settings)
            r = run_json([args.python, os.path.join(HERE, "pytorch_gpt2.py"), "--probe", "--threads", str(args.threads),
                          "--min-gemm-gflops", str(args.min_gemm_gflops)], env, 300)
            score = math.exp(sum(math.log(g["gflops"]) for g in r["gemm"]) / len(r["gemm"]))
            log(f"  torch BLAS probe, {label}: core {r.get('openblas_core', '?')}, GEMM geometric mean {score:.1f} GFLOP/s")
            if label not in table or score > table[label]["score"]:
                table[label] = dict(label=label, settings=settings, core=r.get("openblas_core", ""), score=score, probe=r)
            if not r.get("openblas_config"):
                return table[label], list(table.values())  # not OpenBLAS: its core types do not apply
    best = max(table.values(), key=lambda t: t["score"])
    return best, list(table.values())


def pooled(results):
    seconds = [s for r in results for s in r["seconds"]]
    tokens = results[0]["tokens"]
    return dict(median_s=statistics.median(seconds), min_s=min(seconds), max_s=max(seconds), n=len(seconds),
                tokens=tokens, median_tps=tokens / statistics.median(seconds), min_tps=tokens / max(seconds),
                max_tps=tokens / min(seconds),
                net_mib=statistics.median((r["peak_kib"] - r["idle_kib"]) / 1024 for r in results),
                idle_mib=statistics.median(r["idle_kib"] / 1024 for r in results),
                peak_mib=statistics.median(r["peak_kib"] / 1024 for r in results))


def flops_per_token(case, dense):
    """Multiply-add FLOPs per token of a case (a lower bound on its work; see the module docstring)."""
    shape, _, what = case.partition("_")
    s = SHAPES[shape]
    attention = 2.0 * s["layers"] * s["seq"] * s["d"]  # QK^T and PV, causal half, forward
    forward = 2.0 * dense + attention
    if what == "train":
        return 3.0 * forward
    if what == "forward":
        return forward
    if what in ("lora", "mote"):
        d, ff = s["d"], s["ff"]
        per_expert = 6.0 * RANK * sum(i + o for i, o in ((d, 3 * d), (d, d), (d, ff), (ff, d))) * s["layers"]
        frozen = 2.0 * (2.0 * dense) + 3.0 * attention  # forward + input gradients; attention backward in full
        return frozen + per_expert * (2 if what == "mote" else 1)
    raise ValueError(case)


def ceiling(case, ceil):
    """(tokens/s that no implementation can pass on this machine, what bounds it)."""
    shape, _, what = case.partition("_")
    dense = ceil[f"{shape}_weight_bytes"] / 4.0
    if what.startswith("decode_b"):
        batch = int(what[len("decode_b"):])
        new = NEW_TOKENS
        read_s = new * ceil[f"{shape}_weight_bytes"] / (ceil[f"{shape}_weights_read_gbps"] * 1e9)
        gemm_s = batch * (PROMPT_LEN + new - 1) * 2.0 * dense / (ceil["gemm_peak_gflops"] * 1e9)
        if read_s >= gemm_s:
            return batch * new / read_s, f"weights' read {ceil[f'{shape}_weights_read_gbps']:.1f} GB/s"
        return batch * new / gemm_s, f"GEMM {ceil['gemm_peak_gflops']:.0f} GFLOP/s"
    return ceil["gemm_peak_gflops"] * 1e9 / flops_per_token(case, dense), f"GEMM {ceil['gemm_peak_gflops']:.0f} GFLOP/s"


def fmt_tps(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, fewer steps (not a result)")
    ap.add_argument("--rounds", type=int, help="rounds (default 4, --quick 2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of both sides (default: all cores)")
    ap.add_argument("--cases", help="comma-separated subset of: " + ",".join(c[0] for c in CASES))
    ap.add_argument("--policies", default="default,PASSIVE", help="OpenMP wait policies to measure on both sides")
    ap.add_argument("--mote-bench", default=os.path.join(ROOT, "build", "bench", "benchmarks", "mote_bench"))
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                    help="the Python that has Debian's torch")
    ap.add_argument("--min-gemm-gflops", type=float, default=20.0)
    ap.add_argument("--no-coretype-search", action="store_true", help="only the inherited OpenBLAS settings")
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--json", help="write every process's raw result here")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.quick else 4)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    cases = [c for c in CASES if not args.cases or c[0] in args.cases.split(",")]
    unknown = set(args.cases.split(",")) - {c[0] for c in CASES} if args.cases else set()
    if unknown or not cases:
        sys.exit(f"compare.py: unknown cases {sorted(unknown)}; known: {', '.join(c[0] for c in CASES)}")
    if not os.access(args.mote_bench, os.X_OK):
        sys.exit(f"compare.py: no {args.mote_bench}; build it with: cmake -S . -B build/bench -G Ninja "
                 "-DMOTE_BUILD_TESTS=OFF && cmake --build build/bench --target mote_bench")
    if subprocess.run([args.python, "-c", "import torch"], capture_output=True).returncode != 0:
        sys.exit(f"compare.py: {args.python} cannot import torch; run benchmarks/setup-baselines.sh")

    started = datetime.datetime.now(datetime.timezone.utc)
    wall0 = time.perf_counter()
    command = "python3 benchmarks/compare.py " + shlex.join(sys.argv[1:])
    log(f"{command}: {rounds} rounds, {len(cases)} cases, policies {policies}, {args.threads} threads")
    try:
        blas, probes = choose_blas(args)
    except RunError as e:
        sys.exit(f"compare.py: the PyTorch baseline refused to run:\n{e}")
    log(f"  PyTorch runs with: {blas['label']}")

    raw = {"ceilings": [], "probes": [], "runs": []}
    results = {}  # (case, side, policy) -> [result]
    try:
        for r in range(rounds):
            log(f"round {r + 1}/{rounds}")
            raw["ceilings"].append(run_json([args.mote_bench, "--ceilings"], base_env(args.threads, "default"), 600))
            raw["probes"].append(run_json([args.python, os.path.join(HERE, "pytorch_gpt2.py"), "--probe", "--threads",
                                           str(args.threads), "--min-gemm-gflops", str(args.min_gemm_gflops)],
                                          torch_env(args.threads, "default", blas["settings"]), 300))
            for name, script, warmup, reps_full, reps_quick in cases:
                reps = reps_quick if args.quick else reps_full
                warm = 1 if args.quick else warmup
                configs = [("mote", p) for p in policies] + [("torch", p) for p in policies]
                if r % 2 == 1:
                    configs.reverse()
                for side, policy in configs:
                    if side == "mote":
                        cmd = [args.mote_bench, "--case", name, "--warmup", str(warm), "--reps", str(reps),
                               "--new-tokens", str(NEW_TOKENS)]
                        env = base_env(args.threads, policy)
                    else:
                        cmd = [args.python, os.path.join(HERE, script), "--case", name, "--threads", str(args.threads),
                               "--warmup", str(warm), "--reps", str(reps), "--new-tokens", str(NEW_TOKENS),
                               "--min-gemm-gflops", str(args.min_gemm_gflops)]
                        env = torch_env(args.threads, policy, blas["settings"])
                    res = run_json(cmd, env, 900)
                    res["policy"], res["round"] = policy, r
                    raw["runs"].append(res)
                    results.setdefault((name, side, policy), []).append(res)
                    med = statistics.median(res["seconds"])
                    loss = f", loss {res['losses'][0]:.4f} -> {res['losses'][-1]:.4f}" if res["losses"] else ""
                    log(f"  {name:13s} {side:5s} {policy:8s} {res['tokens'] / med:10.1f} tok/s{loss}")
    except RunError as e:
        log(f"compare.py: stopped: {e}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(raw, f)
        sys.exit(1)

    # Ceilings: the best of every round.
    ceil = {}
    for key in ("fma_peak_gflops", "c1_weights_read_gbps", "c2_weights_read_gbps", "dram_read_gbps"):
        ceil[key] = max(c[key] for c in raw["ceilings"])
    for key in ("c1_weight_bytes", "c2_weight_bytes", "dram_bytes", "llc_bytes", "fma_isa", "compiler", "eigen",
                "compiled_isa"):
        ceil[key] = raw["ceilings"][0][key]
    gemm_best = []
    for c in raw["ceilings"]:
        for g in c["gemm"]:
            gemm_best += [(g["mote_gflops"], "mote", g), (g["eigen_gflops"], "Eigen", g)]
    for p in raw["probes"]:
        for g in p["gemm"]:
            gemm_best.append((g["gflops"], "torch", g))
    peak, who, g = max(gemm_best, key=lambda t: t[0])
    ceil["gemm_peak_gflops"] = peak
    ceil["gemm_peak_by"] = f"{who}, {g['m']}x{g['n']}x{g['k']}"

    lines = []
    out = lines.append
    probe0 = raw["probes"][0]
    m = machine()
    wall = time.perf_counter() - wall0
    out(f"Measured {started:%Y-%m-%d %H:%M} UTC in {wall / 60:.0f} min with `{command}`"
        + (" (**--quick: a smoke test, not a result**)" if args.quick else
           " (**fewer than 4 rounds: not a result**)" if rounds < 4 else "") + ".")
    out("")
    out(f"- Machine: {m['cpu']}, {m['cores']} cores{' (virtual machine)' if m['hypervisor'] else ''}, "
        f"{m.get('memory_gib', '?')} GiB, last-level cache {ceil['llc_bytes'] / 2**20:.0f} MiB, Linux {m['kernel']}.")
    out(f"- mote: `mote_bench` (g++ {ceil['compiler']}, Eigen {ceil['eigen']}, compiled for {ceil['compiled_isa']}), "
        f"{args.threads} OpenMP threads.")
    out(f"- PyTorch: torch {probe0['torch']} ({probe0['python']}), {probe0['torch_threads']} threads; BLAS "
        f"`{probe0['openblas_config'] or 'not OpenBLAS'}` (mapped: "
        + ", ".join(f"`{path}`" for path in probe0["blas_paths"]) + ")"
        + (f", core {probe0['openblas_core']}, {probe0['openblas_threads']} {probe0['openblas_parallel']} threads"
           if probe0.get("openblas_config") else "")
        + f"; {blas['label']}, the fastest of: "
        + "; ".join(f"{p['label']} {p['score']:.0f}" for p in probes) + " GFLOP/s (GEMM geometric mean).")
    out(f"- {rounds} interleaved rounds; per round and side each case is one process per wait policy "
        f"({', '.join(policies)}). Figures: the pooled median of the n timed repetitions of all rounds "
        "(min-max), under the side's faster policy, named in brackets; the ratio is of the two medians.")
    out("")
    out("| measurement | n | mote tok/s | PyTorch tok/s | mote / PyTorch | ceiling tok/s | mote / ceiling | PyTorch / ceiling |")
    out("|---|---|---|---|---|---|---|---|")
    chosen, wrong = {}, []
    for name, *_ in cases:
        best = {}
        for side in ("mote", "torch"):
            stats = {p: pooled(results[(name, side, p)]) for p in policies}
            policy = min(stats, key=lambda p: stats[p]["median_s"])
            best[side] = (policy, stats[policy], stats)
        chosen[name] = best
        bound, bound_name = ceiling(name, ceil)
        cells = []
        for side in ("mote", "torch"):
            policy, st, _ = best[side]
            cells.append(f"{fmt_tps(st['median_tps'])} ({fmt_tps(st['min_tps'])}-{fmt_tps(st['max_tps'])}) [{policy}]")
            if st["max_tps"] > bound:
                wrong.append(f"{name}: {side} reached {fmt_tps(st['max_tps'])} tok/s, above its ceiling "
                             f"{fmt_tps(bound)} ({bound_name}): that ceiling is wrong")
        ratio = best["mote"][1]["median_tps"] / best["torch"][1]["median_tps"]
        out(f"| {LABELS[name]} | {best['mote'][1]['n']} | {cells[0]} | {cells[1]} | {ratio:.2f} | {fmt_tps(bound)} ({bound_name}) | "
            f"{best['mote'][1]['median_tps'] / bound:.2f} | {best['torch'][1]['median_tps'] / bound:.2f} |")
    out("")
    out(f"Ceilings (the best of {rounds} rounds): register-only FMA peak {ceil['fma_peak_gflops']:.0f} GFLOP/s "
        f"({ceil['fma_isa']}, all threads); GEMM peak {ceil['gemm_peak_gflops']:.0f} GFLOP/s ({ceil['gemm_peak_by']}; "
        f"the best of mote's kernel, Eigen and torch on mote_bench's shapes); read bandwidth of all threads "
        f"{ceil['c1_weights_read_gbps']:.1f} GB/s on C1's {ceil['c1_weight_bytes'] / 1e6:.0f} MB of weights, "
        f"{ceil['c2_weights_read_gbps']:.1f} GB/s on C2's {ceil['c2_weight_bytes'] / 1e6:.0f} MB, "
        f"{ceil['dram_read_gbps']:.1f} GB/s from DRAM ({ceil['dram_bytes'] / 2**20:.0f} MiB buffer).")
    if ceil["gemm_peak_gflops"] > ceil["fma_peak_gflops"]:
        wrong.append(f"the GEMM peak {ceil['gemm_peak_gflops']:.0f} exceeds the FMA peak {ceil['fma_peak_gflops']:.0f}")
    for w in wrong:
        out(f"- **Wrong ceiling:** {w}.")
    out("")
    out("First and last loss of each training measurement (every process starts from the same "
        "initialization; last = after all its warm-up and timed steps):")
    out("")
    out("| measurement | steps | mote first → last | PyTorch first → last | ln V |")
    out("|---|---|---|---|---|")
    bad = []
    for name, *_ in cases:
        if not results[(name, "mote", policies[0])][0]["losses"]:
            continue
        cells = []
        for side in ("mote", "torch"):
            runs = [r for p in policies for r in results[(name, side, p)]]
            firsts = sorted({round(r["losses"][0], 4) for r in runs})
            lasts = [r["losses"][-1] for r in runs]
            last = f"{min(lasts):.4f}" if round(min(lasts), 4) == round(max(lasts), 4) else \
                f"{min(lasts):.4f}-{max(lasts):.4f}"
            cells.append(f"{'/'.join(f'{x:.4f}' for x in firsts)} → {last}")
            ln_v = runs[0]["ln_vocab"]
            bad += [f"{name} {side}: first loss {r['losses'][0]:.4f}" for r in runs
                    if not abs(r["losses"][0] - ln_v) <= 0.1 * ln_v]
        steps = len(results[(name, "mote", policies[0])][0]["losses"])
        out(f"| {LABELS[name]} | {steps} | {cells[0]} | {cells[1]} | {ln_v:.4f} |")
    out("")
    out("Peak resident memory net of each process's idle footprint (median over rounds; idle: mote_bench "
        "before its model, Python with torch loaded before its model):")
    out("")
    out("| measurement | mote net MiB (idle, peak) | PyTorch net MiB (idle, peak) |")
    out("|---|---|---|")
    for name, *_ in cases:
        cells = []
        for side in ("mote", "torch"):
            st = chosen[name][side][1]
            cells.append(f"{st['net_mib']:,.0f} ({st['idle_mib']:,.0f}, {st['peak_mib']:,.0f})")
        out(f"| {LABELS[name]} | {cells[0]} | {cells[1]} |")
    out("")
    out("Both wait policies, pooled median tok/s:")
    out("")
    out("| measurement | " + " | ".join(f"mote {p}" for p in policies) + " | "
        + " | ".join(f"PyTorch {p}" for p in policies) + " |")
    out("|---|" + "---|" * (2 * len(policies)))
    for name, *_ in cases:
        cells = [fmt_tps(chosen[name][side][2][p]["median_tps"]) for side in ("mote", "torch") for p in policies]
        out(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(raw, ceilings_used=ceil, blas=blas, probes_blas=probes, command=command), f)
    if bad:
        log("compare.py: failed: a first loss is not within 10% of ln V: " + "; ".join(bad))
        return 3
    if wrong:
        log("compare.py: a figure exceeds its ceiling (listed above): fix the ceiling before using the table")
        return 5
    return 0


if __name__ == "__main__":
    sys.exit(main())
