#!/usr/bin/env python3
"""Expectations for moerun's bf16 weights, computed with transformers.

moerun with `weights: bf16` stores every weight matrix (attention and MLP
projections, experts, the LM head) as bfloat16 and multiplies it with the
activations rounded to bfloat16, summing the exact products in float32
(kernels/backend.h: matmul_bf16).  Embeddings, norms, biases and the MoE
routers (`*.gate`, qwen2_moe's `shared_expert_gate`) stay float32.

This script runs each fixture's checkpoint in transformers with exactly that
arithmetic: it loads the model in float32 (eager attention), rounds the
weight of every such nn.Linear to bfloat16 and back in place, and rounds its
input to bfloat16 with a forward pre-hook; everything else is unchanged
float32.  A tied LM head gets its own rounded copy (the embedding stays
float32), as in moerun.  It writes next to expected.json:

  expected-bf16.json          the prompts of expected.json, 16 greedy tokens
                              each, their top1-top2 logit margins
  expected-bf16.safetensors   float32 `logits.<i>` [len(prompt_i), vocab]

Same transformers/torch versions as make_fixtures.py; deterministic.

Usage:  python3 tests/reference/make_bf16_expect.py [--only NAME ...] [--fixtures DIR]
"""

import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402  (forward_logits, greedy, the fixture classes)

ROUTER_SUFFIXES = (".gate", ".shared_expert_gate")


def round_bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def to_bf16_matmuls(model):
    """Round the weight matrices and their inputs; returns the Linear names."""
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or name.endswith(ROUTER_SUFFIXES):
            continue
        w = mod.weight
        if name == "lm_head" and w.data_ptr() == model.get_input_embeddings().weight.data_ptr():
            mod.weight = torch.nn.Parameter(w.detach().clone())  # untie: the embedding stays float32
        with torch.no_grad():
            mod.weight.copy_(round_bf16(mod.weight))
        mod.register_forward_pre_hook(lambda m, args: (round_bf16(args[0]),) + tuple(args[1:]))
        names.append(name)
    return names


def build(name, root):
    d = os.path.join(root, name)
    fx = next(f for f in mf.FIXTURES if f["name"] == name)
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
    model = fx["model_cls"].from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    names = to_bf16_matmuls(model)
    assert "lm_head" in names and any(n.endswith("o_proj") for n in names), names
    logits, greedy, margins = {}, [], []
    max_err = 0.0
    from safetensors import safe_open
    with safe_open(os.path.join(d, "expected.safetensors"), "pt") as f32:
        for i, ids in enumerate(exp["prompts"]):
            lg = mf.forward_logits(model, ids)
            logits[f"logits.{i}"] = lg.contiguous()
            ref = f32.get_tensor(f"logits.{i}")
            max_err = max(max_err, ((lg - ref).abs().max() / ref.abs().max()).item())
            gen, mg = mf.greedy(model, ids, mf.N_GREEDY)
            greedy.append(gen)
            margins.append(min(mg))
    same = sum(a == b for g, h in zip(greedy, exp["greedy"]) for a, b in zip(g, h))
    total = sum(len(g) for g in greedy)
    out = {
        "model_type": exp["model_type"],
        "vocab_size": exp["vocab_size"],
        "prompts": exp["prompts"],
        "greedy": greedy,
        "greedy_min_margin": margins,
        "bf16_linears": len(names),
        "max_rel_diff_vs_fp32": max_err,
        "greedy_same_as_fp32": f"{same}/{total}",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "note": ("Made by tests/reference/make_bf16_expect.py: the fixture's checkpoint in transformers, float32, "
                 "eager attention, with every nn.Linear except the MoE routers given bf16-rounded weights and "
                 "bf16-rounded inputs (fp32 sums); embeddings, norms, biases, routers float32; a tied LM head "
                 "rounded as its own copy. logits.<i> = every position of prompts[i] run alone; greedy[i] = 16 "
                 "argmax tokens, full forward each step, no KV cache."),
    }
    save_file(logits, os.path.join(d, "expected-bf16.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(d, "expected-bf16.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"{name:12s} linears {len(names):3d}  max rel diff vs fp32 {max_err:.2e}  greedy same as fp32 "
          f"{same}/{total}  min margin {min(margins):.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                       "fixtures"))
    a = ap.parse_args()
    if transformers.__version__ != mf.EXPECTED_TRANSFORMERS:
        sys.exit(f"needs transformers {mf.EXPECTED_TRANSFORMERS}, found {transformers.__version__}")
    torch.set_num_threads(2)
    for fx in mf.FIXTURES:
        if not a.only or fx["name"] in a.only:
            build(fx["name"], a.fixtures)


if __name__ == "__main__":
    main()
