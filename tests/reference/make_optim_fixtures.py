#!/usr/bin/env python3
"""Writes torch.optim reference trajectories for tests/optim/test_optim.cpp.

Each fixture runs one optimizer in float64 for a few steps on two small parameters in two
groups, feeding fixed per-step gradients, and records everything the C++ test needs:

    hyper:<name> <value>            optimizer options
    group:<param>:lr_scale <value>  the group's lr relative to the optimizer's
    group:<param>:weight_decay <v>  the group's weight-decay override
    steps <n>
    shape:<param> <dims...>
    init:<param> <values...>
    grad:<step>:<param> <values...> (no line: that parameter has no gradient at that step)
    param:<step>:<param> <values...> (the parameter after that step)

Values are written with repr(), which round-trips float64 exactly.
Run: python3 tests/reference/make_optim_fixtures.py  (needs torch; /usr/bin/python3 on Debian)
"""
import math
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
STEPS = 5
SHAPES = {"w": (2, 3), "b": (3,)}
# The second group's lr is the optimizer's times this (an exact power of two, so both sides agree).
B_LR_SCALE = 2.0
B_WEIGHT_DECAY = 0.0
# (step, param) pairs that get no gradient: the optimizer must skip them.
NO_GRAD = {(3, "b")}


def initial(name):
    n = math.prod(SHAPES[name])
    offset = 0.0 if name == "w" else 0.5
    return torch.tensor([math.sin(1.7 * i + offset) for i in range(n)], dtype=torch.float64).reshape(SHAPES[name])


def gradient(step, name):
    n = math.prod(SHAPES[name])
    offset = 0.3 if name == "w" else 1.1
    # Magnitudes from about 1e-3 to 1, signs mixed, so eps and the bias corrections both matter.
    vals = [math.cos(0.9 * i + 1.3 * step + offset) * (10.0 ** -(i % 3)) for i in range(n)]
    return torch.tensor(vals, dtype=torch.float64).reshape(SHAPES[name])


def fmt(t):
    return " ".join(repr(float(v)) for v in t.reshape(-1).tolist())


def run(file_name, make_optimizer, hyper):
    params = {name: initial(name).clone().requires_grad_(True) for name in SHAPES}
    lines = [f"hyper:{k} {repr(float(v))}" for k, v in hyper.items()]
    lines.append(f"group:b:lr_scale {repr(B_LR_SCALE)}")
    lines.append(f"group:b:weight_decay {repr(B_WEIGHT_DECAY)}")
    lines.append(f"steps {STEPS}")
    for name in SHAPES:
        lines.append(f"shape:{name} " + " ".join(str(d) for d in SHAPES[name]))
        lines.append(f"init:{name} " + fmt(params[name].detach()))
    groups = [
        {"params": [params["w"]]},
        {"params": [params["b"]], "lr": hyper["lr"] * B_LR_SCALE, "weight_decay": B_WEIGHT_DECAY},
    ]
    opt = make_optimizer(groups)
    for step in range(1, STEPS + 1):
        opt.zero_grad(set_to_none=True)
        for name, p in params.items():
            if (step, name) in NO_GRAD:
                continue
            g = gradient(step, name)
            p.grad = g.clone()
            lines.append(f"grad:{step}:{name} " + fmt(g))
        opt.step()
        for name, p in params.items():
            lines.append(f"param:{step}:{name} " + fmt(p.detach()))
    path = os.path.join(OUT, file_name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"# {file_name}: written by make_optim_fixtures.py with torch {torch.__version__}\n")
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    print("wrote", path)


def main():
    os.makedirs(OUT, exist_ok=True)

    def adamw(hyper):
        return lambda groups: torch.optim.AdamW(groups, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]),
                                                eps=hyper["eps"], weight_decay=hyper["weight_decay"])

    def sgd(hyper):
        return lambda groups: torch.optim.SGD(groups, lr=hyper["lr"], momentum=hyper["momentum"],
                                              dampening=hyper["dampening"], nesterov=bool(hyper["nesterov"]),
                                              weight_decay=hyper["weight_decay"])

    configs = {
        # torch's defaults apart from lr, which is raised so that five steps move the values visibly.
        "optim_adamw_default.txt": ("adamw", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)),
        "optim_adamw_custom.txt": ("adamw", dict(lr=0.05, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.2)),
        "optim_sgd_plain.txt": ("sgd", dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=0, weight_decay=0.05)),
        "optim_sgd_momentum.txt": ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.2, nesterov=0, weight_decay=0.01)),
        "optim_sgd_nesterov.txt": ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=1, weight_decay=0.02)),
    }
    for file_name, (kind, hyper) in configs.items():
        run(file_name, (adamw if kind == "adamw" else sgd)(hyper), hyper)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    main()
