#!/usr/bin/env python3
"""Writes PyTorch reference fixtures for LoRA adapters and a MoTE adapter set (PEFT file layout).

The base models are the tiny GPT-2 and Llama of make_model_fixtures.py, regenerated from the same
seeds (the script checks that they match tests/reference/fixtures/model_tiny_*.safetensors byte for
byte) and kept frozen. The forwards below are those of make_model_fixtures.py with every adapted
linear layer routed through a hook; everything runs in plain float64 torch (no peft, no transformers).

LoRA, as PEFT's LoraLayer computes it, for an adapted linear layer with frozen weight W0 (+ bias b):
    y = base(x) + scale * (dropout(x) @ A.T) @ B.T
    A = lora_A.weight [r, in_features], B = lora_B.weight [out_features, r]
    scale = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora; dropout is 0 here.
base(x) is x @ W0.T for nn.Linear (Llama) and x @ W0 + b for GPT-2's Conv1D, whose W0 is stored
[in, out] (PEFT's fan_in_fan_out=true); A and B keep the [r, in] and [out, r] layout either way.
A and B are seeded random draws (std 0.1, B not zero), so the adapted model differs from the base.

MoTE (mixture of thought experts) with a step router, per adapted linear layer and per token t with
route id s_t (unrouted tokens carry s_t = -1 and go to step expert `unrouted_expert`):
    y = base(x) + mix_alpha * E_{s_t}(x) + (1 - mix_alpha) * E_shared(x)
    E(x) = scale * (x @ A.T) @ B.T   (each expert is one LoRA adapter)

Written under tests/reference/fixtures/:
  lora_gpt2/adapter_model.safetensors    PEFT adapter of tiny GPT-2: r 4, alpha 8, targets c_attn c_fc
  lora_gpt2/adapter_config.json            c_proj (attn.c_proj and mlp.c_proj), fan_in_fan_out true
  lora_llama/adapter_model.safetensors   PEFT adapter of tiny Llama: r 4, alpha 8, use_rslora true,
  lora_llama/adapter_config.json           targets q k v o gate up down _proj
  mote_llama/{step_0,step_1,step_2,shared}/adapter_model.safetensors, adapter_config.json
                                         four PEFT adapters of tiny Llama (r 4, alpha 8, no rslora)
  mote_llama/mote_config.json            the MoTE set: step router, 3 steps + shared, mix_alpha 0.5,
                                           question tokens to step expert 1
  lora_gpt2.txt, lora_llama.txt, mote_llama.txt
                                         text fixtures (format of make_op_fixtures.py): attr lines
                                         (r, lora_alpha, scale, ...), tensors ids, targets (-100 is
                                         ignored; next-token targets given, no shifting), step_ids
                                         (mote only), logits, loss (mean cross entropy), and
                                         grad.<safetensors key> for every LoRA tensor (for mote
                                         grad.<expert folder>/<safetensors key>); base weights are
                                         frozen and get no gradient.
Safetensors keys are base_model.model.<module>.lora_{A,B}.weight, <module> the module path in
GPT2LMHeadModel (transformer.h.0.attn.c_attn) or LlamaForCausalLM (model.layers.0.self_attn.q_proj);
tensors are F64. ids and targets are those of model_tiny_<name>.txt.

Checks (asserts): base weights match the committed model safetensors; with every B zeroed the logits
equal those of model_tiny_<name>.txt (to 1e-12); a few gradients match central finite differences.

Run: /usr/bin/python3 tests/reference/make_lora_fixtures.py  (needs Debian's python3-torch)
"""
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_model_fixtures as mm  # noqa: E402

OUT = mm.OUT
f64 = mm.f64

GPT2_TARGETS = ["c_attn", "c_fc", "c_proj"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA = 4, 8

MOTE = {"mote_version": 1, "router": "step", "experts": ["step_0", "step_1", "step_2", "shared"], "steps": 3,
        "shared_expert": True, "mix_alpha": 0.5, "unrouted_policy": "fixed_step", "unrouted_expert": 1}
# Per row: two question tokens, then runs of steps 0, 1, 2 (lengths 2 3 1 and 1 2 3).
STEP_IDS = torch.tensor([[-1, -1, 0, 0, 1, 1, 1, 2],
                         [-1, -1, 0, 1, 1, 2, 2, 2]], dtype=torch.int32)


# ---- base models ----------------------------------------------------------------------------
def base_params(name):
    """The frozen weights of model_tiny_<name>, regenerated and checked against the committed file."""
    if name == "gpt2":
        c, p = mm.GPT2, mm.gpt2_params(mm.GPT2, torch.Generator().manual_seed(101))
    else:
        c, p = mm.LLAMA, mm.llama_params(mm.LLAMA, torch.Generator().manual_seed(102))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "base.safetensors")
        mm.write_safetensors(path, p)
        with open(path, "rb") as f:
            regenerated = f.read()
    with open(os.path.join(OUT, f"model_tiny_{name}.safetensors"), "rb") as f:
        committed = f.read()
    assert regenerated == committed, f"regenerated tiny {name} weights differ from model_tiny_{name}.safetensors"
    return c, {k: v.detach() for k, v in p.items()}


def read_text_fixture(path):
    """tensor name -> torch tensor (float64 or int64) from a make_*_fixtures.py text fixture."""
    out, lines = {}, open(path).read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("tensor "):
            parts = line.split()
            name, dtype, shape = parts[1], parts[2], [int(s) for s in parts[4:]]
            if dtype == "float64":
                vals = torch.tensor([float(v) for v in lines[i + 1].split()], dtype=f64)
            else:
                vals = torch.tensor([int(v) for v in lines[i + 1].split()], dtype=torch.int64)
            out[name] = vals.reshape(shape)
    return out


# ---- forwards with a hook on every linear layer ---------------------------------------------
# linear(module, x, base) returns the layer output: base(x) plus whatever the adapter adds.
# module is the Hugging Face module path (no base_model.model. prefix).

def gpt2_forward(c, p, ids, linear):
    b, t = ids.shape
    d, nh = c["d"], c["heads"]
    dh = d // nh

    def conv1d(module, x, key):  # Conv1D: W0 [in, out], x @ W0 + b
        return linear("transformer." + module, x, lambda z: z @ p[key + ".weight"] + p[key + ".bias"])

    x = p["wte.weight"][ids] + p["wpe.weight"][torch.arange(t)]
    for i in range(c["layers"]):
        h = f"h.{i}."
        a = F.layer_norm(x, (d,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], c["eps"])
        qkv = conv1d(h + "attn.c_attn", a, h + "attn.c_attn")
        q, k, v = qkv.split(d, dim=-1)
        q, k, v = (z.view(b, t, nh, dh).transpose(1, 2) for z in (q, k, v))
        y = mm.causal_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + conv1d(h + "attn.c_proj", y, h + "attn.c_proj")
        m = F.layer_norm(x, (d,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], c["eps"])
        m = F.gelu(conv1d(h + "mlp.c_fc", m, h + "mlp.c_fc"), approximate="tanh")
        x = x + conv1d(h + "mlp.c_proj", m, h + "mlp.c_proj")
    x = F.layer_norm(x, (d,), p["ln_f.weight"], p["ln_f.bias"], c["eps"])
    return x @ p["wte.weight"].t()  # tied lm_head (not adapted)


def llama_forward(c, p, ids, linear):
    b, t = ids.shape
    d, nh, nkv = c["d"], c["heads"], c["kv_heads"]
    dh = d // nh
    pos = torch.arange(t)

    def lin(module, x):  # nn.Linear: W0 [out, in], x @ W0.T
        return linear(module, x, lambda z: z @ p[module + ".weight"].t())

    x = p["model.embed_tokens.weight"][ids]
    for i in range(c["layers"]):
        h = f"model.layers.{i}."
        a = mm.rms_norm(x, p[h + "input_layernorm.weight"], c["eps"])
        q = lin(h + "self_attn.q_proj", a).view(b, t, nh, dh).transpose(1, 2)
        k = lin(h + "self_attn.k_proj", a).view(b, t, nkv, dh).transpose(1, 2)
        v = lin(h + "self_attn.v_proj", a).view(b, t, nkv, dh).transpose(1, 2)
        q, k = mm.apply_rope(q, pos, c["theta"]), mm.apply_rope(k, pos, c["theta"])
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        y = mm.causal_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + lin(h + "self_attn.o_proj", y)
        m = mm.rms_norm(x, p[h + "post_attention_layernorm.weight"], c["eps"])
        m = F.silu(lin(h + "mlp.gate_proj", m)) * lin(h + "mlp.up_proj", m)
        x = x + lin(h + "mlp.down_proj", m)
    x = mm.rms_norm(x, p["model.norm.weight"], c["eps"])
    return x @ p["lm_head.weight"].t()  # lm_head (not adapted)


# ---- adapters -------------------------------------------------------------------------------
def adapted_modules(name, c):
    """[(module path, in_features, out_features)] in model order, for every targeted linear layer."""
    d, ff = c["d"], c["ff"]
    mods = []
    for i in range(c["layers"]):
        if name == "gpt2":
            h = f"transformer.h.{i}."
            mods += [(h + "attn.c_attn", d, 3 * d), (h + "attn.c_proj", d, d),
                     (h + "mlp.c_fc", d, ff), (h + "mlp.c_proj", ff, d)]
        else:
            h, kv = f"model.layers.{i}.", c["kv_heads"] * (d // c["heads"])
            mods += [(h + "self_attn.q_proj", d, d), (h + "self_attn.k_proj", d, kv), (h + "self_attn.v_proj", d, kv),
                     (h + "self_attn.o_proj", d, d), (h + "mlp.gate_proj", d, ff), (h + "mlp.up_proj", d, ff),
                     (h + "mlp.down_proj", ff, d)]
    return mods


def key(module, which):
    return f"base_model.model.{module}.lora_{which}.weight"


def draw_adapter(mods, seed):
    """safetensors key -> leaf tensor; lora_A [r, in] then lora_B [out, r] per module, std 0.1."""
    gen = torch.Generator().manual_seed(seed)
    ad = {}
    for module, fin, fout in mods:
        ad[key(module, "A")] = mm.draw(gen, (R, fin))
        ad[key(module, "B")] = mm.draw(gen, (fout, R))
    return ad


def lora_scale(use_rslora):
    return ALPHA / math.sqrt(R) if use_rslora else ALPHA / R


def lora_delta(ad, module, x, scale):
    return scale * ((x @ ad[key(module, "A")].t()) @ ad[key(module, "B")].t())


def single_hook(ad, scale):
    def linear(module, x, base):
        return base(x) + lora_delta(ad, module, x, scale)
    return linear


def mote_hook(experts, scale, step_ids):
    """experts: folder -> adapter. Per-token coefficient of each expert, from the step router."""
    mix, nsteps = MOTE["mix_alpha"], MOTE["steps"]
    route = torch.where(step_ids < 0, torch.full_like(step_ids, MOTE["unrouted_expert"]), step_ids).to(torch.int64)
    coef = {f"step_{s}": (route == s).to(f64) * mix for s in range(nsteps)}
    coef["shared"] = torch.full(step_ids.shape, 1.0 - mix, dtype=f64)

    def linear(module, x, base):
        y = base(x)
        for folder in MOTE["experts"]:
            y = y + coef[folder][..., None] * lora_delta(experts[folder], module, x, scale)
        return y
    return linear


def adapter_config(base_name, targets, fan_in_fan_out, use_rslora):
    return {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_name, "bias": "none",
            "fan_in_fan_out": fan_in_fan_out, "inference_mode": True, "init_lora_weights": True,
            "layers_pattern": None, "layers_to_transform": None, "lora_alpha": ALPHA, "lora_dropout": 0.0,
            "modules_to_save": None, "peft_type": "LORA", "r": R, "rank_pattern": {}, "revision": None,
            "target_modules": list(targets), "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": use_rslora}


def write_json(path, obj, sort_keys):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=sort_keys)
        f.write("\n")


def write_adapter(folder, ad, config):
    os.makedirs(folder, exist_ok=True)
    mm.write_safetensors(os.path.join(folder, "adapter_model.safetensors"), ad)
    write_json(os.path.join(folder, "adapter_config.json"), config, sort_keys=True)


# ---- checks ---------------------------------------------------------------------------------
def loss_of(c, logits, targets):
    return F.cross_entropy(logits.reshape(-1, c["vocab"]), targets.reshape(-1), ignore_index=-100)


def check_zero_b(run, adapters, base_logits):
    """With every lora_B zeroed, the adapted model is the base model: the logits of model_tiny_<name>.txt.
    Not bit for bit: the additions here group differently (x + (y @ W0 + b) versus (x + y @ W0) + b), and
    make_model_fixtures.py's own forward, rerun, is already off by about 2e-15 from its committed logits."""
    zeroed = [{k: (torch.zeros_like(v) if k.endswith("lora_B.weight") else v.detach()) for k, v in ad.items()}
              for ad in adapters]
    with torch.no_grad():
        logits = run(zeroed)
    diff = (logits - base_logits).abs().max().item()
    assert diff <= 1e-12, f"B = 0 logits differ from the base model's by {diff}"


def check_finite_differences(run, adapters, grads, picks, c, targets, h=1e-6):
    """Central differences of the loss for a few (adapter index, key, flat index) entries."""
    base = [{k: v.detach().clone() for k, v in ad.items()} for ad in adapters]
    for ai, k, idx in picks:
        vals = []
        for sign in (1.0, -1.0):
            moved = [{kk: vv.clone() for kk, vv in ad.items()} for ad in base]
            moved[ai][k].view(-1)[idx] += sign * h
            with torch.no_grad():
                vals.append(loss_of(c, run(moved), targets).item())
        numeric = (vals[0] - vals[1]) / (2 * h)
        analytic = grads[ai][k].reshape(-1)[idx].item()
        assert abs(numeric - analytic) <= 1e-8 + 1e-6 * abs(analytic), \
            f"finite difference of {k}[{idx}]: {numeric} vs autograd {analytic}"


# ---- fixtures -------------------------------------------------------------------------------
def write_case(stem, c, forward, mods, adapters, folders, scale, attrs, step_ids=None):
    """adapters: list of leaf dicts; folders: their expert folder names (None for a single adapter)."""
    p = BASE[c["kind"]]
    ref = read_text_fixture(os.path.join(OUT, f"model_tiny_{c['kind']}.txt"))
    ids, targets = ref["ids"], ref["targets"]

    def run(ads):
        if step_ids is None:
            return forward(c, p, ids, single_hook(ads[0], scale))
        return forward(c, p, ids, mote_hook(dict(zip(folders, ads)), scale, step_ids))

    check_zero_b(run, adapters, ref["logits"])
    logits = run(adapters)
    loss = loss_of(c, logits, targets)
    loss.backward()
    assert (logits - ref["logits"]).abs().max().item() > 1e-2, "the adapter barely changes the logits"
    grads = [{k: v.grad for k, v in ad.items()} for ad in adapters]
    for g in grads:
        for k, v in g.items():
            assert v is not None and v.abs().max().item() > 0.0, f"no gradient reaches {k}"

    first, last = mods[0][0], mods[-1][0]
    picks = [(0, key(first, "A"), 5), (len(adapters) - 1, key(last, "B"), 3), (0, key(mods[1][0], "B"), 7)]
    if len(adapters) > 1:
        picks.append((1, key(mods[4][0], "A"), 11))
    check_finite_differences(run, adapters, grads, picks, c, targets)

    lines = [f"# {stem}: written by tests/reference/make_lora_fixtures.py with torch {torch.__version__}, float64",
             f"op {stem}"]
    lines += [f"attr {k} {repr(float(v))}" for k, v in attrs.items()]
    lines += mm.tensor_lines("ids", ids.to(torch.int32)) + mm.tensor_lines("targets", targets.to(torch.int32))
    if step_ids is not None:
        lines += mm.tensor_lines("step_ids", step_ids)
    lines += mm.tensor_lines("logits", logits) + mm.tensor_lines("loss", loss.reshape(1))
    for folder, g in zip(folders, grads):
        for k, v in g.items():
            lines += mm.tensor_lines("grad." + (k if folder is None else f"{folder}/{k}"), v)
    with open(os.path.join(OUT, stem + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


BASE = {}


def single_case(stem, family, c, forward, seed, targets, fan_in_fan_out, use_rslora):
    """One PEFT single-LoRA adapter folder and its fixture; returns the adapted modules."""
    mods = adapted_modules(family, c)
    ad = draw_adapter(mods, seed)
    scale = lora_scale(use_rslora)
    write_adapter(os.path.join(OUT, stem), ad,
                  adapter_config("model_tiny_" + family, targets, fan_in_fan_out, use_rslora))
    write_case(stem, c, forward, mods, [ad], [None], scale,
               dict(r=R, lora_alpha=ALPHA, scale=scale, use_rslora=int(use_rslora)))
    return mods


def main():
    torch.set_num_threads(1)  # keep the float64 sums in one fixed order
    os.makedirs(OUT, exist_ok=True)
    gpt2_c, BASE["gpt2"] = base_params("gpt2")
    llama_c, BASE["llama"] = base_params("llama")
    gpt2_c, llama_c = dict(gpt2_c, kind="gpt2"), dict(llama_c, kind="llama")

    # 1. lora_gpt2: Conv1D layers, fan_in_fan_out, alpha / r.
    single_case("lora_gpt2", "gpt2", gpt2_c, gpt2_forward, 301, GPT2_TARGETS, fan_in_fan_out=True, use_rslora=False)
    # 2. lora_llama: rsLoRA, alpha / sqrt(r).
    mods = single_case("lora_llama", "llama", llama_c, llama_forward, 302, LLAMA_TARGETS, fan_in_fan_out=False,
                       use_rslora=True)

    # 3. mote_llama: step_0, step_1, step_2 and shared, mixed per token by the step router.
    folders = MOTE["experts"]
    experts = [draw_adapter(mods, 310 + i) for i in range(len(folders))]
    scale = lora_scale(False)
    root = os.path.join(OUT, "mote_llama")
    for folder, ad in zip(folders, experts):
        write_adapter(os.path.join(root, folder), ad, adapter_config("model_tiny_llama", LLAMA_TARGETS, False, False))
    write_json(os.path.join(root, "mote_config.json"), MOTE, sort_keys=False)
    write_case("mote_llama", llama_c, llama_forward, mods, experts, folders, scale,
               dict(r=R, lora_alpha=ALPHA, scale=scale, use_rslora=0, steps=MOTE["steps"],
                    mix_alpha=MOTE["mix_alpha"], unrouted_expert=MOTE["unrouted_expert"]), step_ids=STEP_IDS)


if __name__ == "__main__":
    main()
