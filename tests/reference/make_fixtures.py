#!/usr/bin/env python3
"""Make small random reference checkpoints with Hugging Face transformers.

Writes one folder per fixture under tests/fixtures/<name>/ :

  config.json, generation_config.json     written by transformers' save_pretrained
  *.safetensors (+ index for sharded)     written by save_pretrained(safe_serialization=True)
  expected.json                           prompts, greedy continuations, margins, notes
  expected.safetensors                    float32 `logits.<i>` [len(prompt_i), vocab]

All expectations are computed from the checkpoint as saved on disk, reloaded with
from_pretrained(dtype=float32, attn_implementation="eager"), i.e. BF16/F16 weights are
upcast exactly to float32 and the model runs in float32, eval mode, no_grad, batch 1,
no padding, no KV cache.

Deterministic: fixed seeds everywhere (torch.Generator / numpy.random.default_rng).
Built against torch 2.15.0 and transformers 4.57.6 (checked at start-up).

Usage:  python3 tests/reference/make_fixtures.py [--only NAME ...] [--out DIR]
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

EXPECTED_TRANSFORMERS = "4.57.6"
EXPECTED_TORCH = "2.15.0"

VOCAB = 512
BOS, EOS = 1, 2
PROMPT_LENGTHS = [3, 7, 12, 20, 33]
N_GREEDY = 16
MIN_LOGIT_MARGIN = 1e-3      # top1 - top2 logit gap required at every greedy step
MIN_ROUTE_MARGIN = 1e-4      # gap between k-th and (k+1)-th routing score, every token, every MoE layer
MAX_ABS_LOGIT = 30.0
INIT_STD = 0.1               # also written as initializer_range in every config
LM_HEAD_STD = 0.3
MAX_MODEL_ATTEMPTS = 20      # a model whose router leaves an expert unused is redrawn with seed+1
MAX_PROMPT_ATTEMPTS = 200

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures"))

COMMON = dict(
    vocab_size=VOCAB,
    bos_token_id=BOS,
    eos_token_id=EOS,
    initializer_range=INIT_STD,
    hidden_act="silu",
    attention_dropout=0.0,
)

FIXTURES = [
    dict(
        name="llama",
        model_cls=LlamaForCausalLM,
        config_cls=LlamaConfig,
        dtype="F32",
        seed=1001,
        max_shard_size="600KB",
        config=dict(
            hidden_size=128,
            intermediate_size=224,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
        ),
    ),
    dict(
        name="qwen2",
        model_cls=Qwen2ForCausalLM,
        config_cls=Qwen2Config,
        dtype="BF16",
        seed=2002,
        config=dict(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
    ),
    dict(
        name="mixtral",
        model_cls=MixtralForCausalLM,
        config_cls=MixtralConfig,
        dtype="F16",
        seed=3003,
        config=dict(
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=8,
            num_experts_per_tok=2,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            rope_theta=1000000.0,
            sliding_window=None,
            tie_word_embeddings=False,
        ),
    ),
    dict(
        name="qwen2_moe",
        model_cls=Qwen2MoeForCausalLM,
        config_cls=Qwen2MoeConfig,
        dtype="F32",
        seed=4004,
        config=dict(
            hidden_size=64,
            intermediate_size=128,  # dense MLP size; unused since every layer is sparse
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=64,
            shared_expert_intermediate_size=96,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            qkv_bias=True,
            max_position_embeddings=256,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            use_sliding_window=False,
            tie_word_embeddings=False,
        ),
    ),
    dict(
        name="qwen3_moe",
        model_cls=Qwen3MoeForCausalLM,
        config_cls=Qwen3MoeConfig,
        dtype="F32",
        seed=5005,
        config=dict(
            # heads * head_dim (128) != hidden_size (64), as in real Qwen3 checkpoints
            hidden_size=64,
            intermediate_size=128,  # dense MLP size; unused since every layer is sparse
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=48,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            attention_bias=False,
            max_position_embeddings=256,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            use_sliding_window=False,
            tie_word_embeddings=False,
        ),
    ),
    dict(
        name="deepseek_v3",
        model_cls=DeepseekV3ForCausalLM,
        config_cls=DeepseekV3Config,
        dtype="F32",
        seed=6006,
        config=dict(
            hidden_size=64,
            intermediate_size=128,
            moe_intermediate_size=48,
            num_hidden_layers=4,
            first_k_dense_replace=1,
            num_attention_heads=4,
            num_key_value_heads=4,
            n_routed_experts=8,
            num_experts_per_tok=2,
            n_group=4,
            topk_group=2,
            n_shared_experts=1,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            q_lora_rank=48,
            kv_lora_rank=32,
            qk_rope_head_dim=16,
            qk_nope_head_dim=32,
            v_head_dim=32,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            rope_scaling={
                "type": "yarn",
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32,
                "beta_fast": 32,
                "beta_slow": 1,
                "mscale": 1.0,
                "mscale_all_dim": 1.0,
            },
            attention_bias=False,
            tie_word_embeddings=False,
            # rope_interleave: left at the transformers default (True in 4.57.6)
        ),
    ),
]


# --------------------------------------------------------------------------- init


def randomize(model, seed):
    """Deterministic re-initialisation of every parameter (and the e_score_correction_bias buffer).

    lm_head (or the tied embedding): N(0, LM_HEAD_STD) times a per-tensor factor in [0.8, 1.25]
    other 2-D weights: N(0, INIT_STD) times a per-tensor factor in [0.8, 1.25]
    RMSNorm weights (1-D, name contains 'norm'): 1 + 0.1*N(0,1)
    biases: 0.2*N(0,1);  e_score_correction_bias: 0.1*N(0,1)
    """
    g = torch.Generator().manual_seed(seed)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    params = dict(model.named_parameters())  # tied weights appear once
    bufs = {n: b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")}
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if p.dim() == 1 and "norm" in name:
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1 and name.endswith("bias"):
                v = 0.2 * torch.randn(p.shape, generator=g)
            elif p.dim() == 2 and (name == "lm_head.weight" or (tied and name == "model.embed_tokens.weight")):
                # larger output projection: logits spread over ~[-15, 15], wider top1-top2 gaps
                factor = 0.8 + 0.45 * torch.rand((), generator=g).item()
                v = torch.randn(p.shape, generator=g) * (LM_HEAD_STD * factor)
            elif p.dim() == 2:
                factor = 0.8 + 0.45 * torch.rand((), generator=g).item()
                v = torch.randn(p.shape, generator=g) * (INIT_STD * factor)
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v.to(p.dtype))
        for name in sorted(bufs):
            b = bufs[name]
            b.copy_((0.1 * torch.randn(b.shape, generator=g)).to(b.dtype))


# --------------------------------------------------------------------------- routing probes


class RouteProbe:
    """Forward hooks on the MoE routers: chosen experts and the routing decision margins."""

    def __init__(self, model, model_type, cfg):
        self.model_type = model_type
        self.cfg = cfg
        self.handles = []
        self.names = []
        self.reset()
        for name, mod in model.named_modules():
            if model_type == "mixtral" and name.endswith("block_sparse_moe.gate"):
                self._attach_softmax(name, mod, cfg.num_experts_per_tok)
            elif model_type in ("qwen2_moe", "qwen3_moe") and name.endswith("mlp.gate"):
                self._attach_softmax(name, mod, cfg.num_experts_per_tok)
            elif model_type == "deepseek_v3" and type(mod).__name__ == "DeepseekV3TopkRouter":
                self._attach_deepseek(name, mod)
        self.layers = sorted({int(n.split(".")[2]) for n in self.names})

    def reset(self):
        self.records = []  # (layer, chosen[T,k] tensor, margin float, extra dict)

    def _layer_of(self, name):
        return int(name.split(".")[2])

    def _attach_softmax(self, name, mod, k):
        self.names.append(name)
        layer = self._layer_of(name)

        def hook(m, inp, out):
            probs = torch.softmax(out.detach().float(), dim=-1)
            s, idx = torch.sort(probs, dim=-1, descending=True)
            margin = (s[:, k - 1] - s[:, k]).min().item()
            self.records.append((layer, idx[:, :k].clone(), margin, {}))

        self.handles.append(mod.register_forward_hook(hook))

    def _attach_deepseek(self, name, mod):
        self.names.append(name)
        layer = self._layer_of(name)
        cfg = self.cfg
        E, G, TG, K = cfg.n_routed_experts, cfg.n_group, cfg.topk_group, cfg.num_experts_per_tok

        def hook(m, inp, out):
            h = inp[0].detach().reshape(-1, cfg.hidden_size).float()
            scores = torch.sigmoid(h @ m.weight.detach().float().t())
            sfc = scores + m.e_score_correction_bias.detach().float()[None, :]
            grp = sfc.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
            gs, gidx = torch.sort(grp, dim=-1, descending=True)
            gmargin = (gs[:, TG - 1] - gs[:, TG]).min().item()
            mask = torch.zeros_like(grp).scatter_(1, gidx[:, :TG], 1.0)
            mask = mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E).bool()
            masked = sfc.masked_fill(~mask, 0.0)
            es, eidx = torch.sort(masked, dim=-1, descending=True)
            emargin = (es[:, K - 1] - es[:, K]).min().item()
            # the k-th chosen (bias-corrected) score must be > 0, otherwise filling the
            # masked groups with 0.0 (transformers) or -inf (DeepSeek reference) would differ
            kth_min = es[:, K - 1].min().item()
            chosen = out[0].detach()
            assert torch.equal(torch.sort(chosen, -1)[0], torch.sort(eidx[:, :K], -1)[0]), "probe mismatch"
            self.records.append(
                (layer, chosen.clone(), min(gmargin, emargin, kth_min),
                 {"group_margin": gmargin, "expert_margin": emargin, "kth_score_min": kth_min})
            )

        self.handles.append(mod.register_forward_hook(hook))

    def min_margin(self):
        return min((r[2] for r in self.records), default=float("inf"))

    def remove(self):
        for h in self.handles:
            h.remove()


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def forward_logits(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=x, use_cache=False)
    return out.logits[0].float()


@torch.no_grad()
def greedy(model, ids, n):
    seq = list(ids)
    gen, margins = [], []
    for _ in range(n):
        last = forward_logits(model, seq)[-1]
        top2 = torch.topk(last, 2)
        margins.append((top2.values[0] - top2.values[1]).item())
        tok = int(top2.indices[0])
        gen.append(tok)
        seq.append(tok)
    return gen, margins


def draw_prompt(seed, length, forbidden):
    rng = np.random.default_rng(seed)
    ids = []
    while len(ids) < length:
        t = int(rng.integers(0, VOCAB))
        if t not in forbidden:
            ids.append(t)
    return ids


# --------------------------------------------------------------------------- checks


def check_rope(fx, model, cfg, notes):
    name = fx["name"]
    if name == "llama":
        re = model.model.rotary_emb
        assert re.rope_type == "llama3", re.rope_type
        d = cfg.head_dim
        base = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        inv = re.inv_freq.float()
        f = cfg.rope_scaling["factor"]
        same = torch.isclose(inv, base, rtol=1e-6, atol=0).sum().item()
        div = torch.isclose(inv, base / f, rtol=1e-6, atol=0).sum().item()
        smooth = len(inv) - same - div
        assert same > 0 and div > 0 and smooth > 0, (same, div, smooth)
        notes.append(
            f"llama3 rope bands at head_dim {d}: {same} freqs unchanged, {smooth} smoothed, {div} divided by factor"
        )
        print(f"  llama3 rope: {same} unchanged / {smooth} smoothed / {div} divided by {f}")
    if name == "deepseek_v3":
        re = model.model.rotary_emb
        assert re.rope_type == "yarn", re.rope_type
        d = cfg.qk_rope_head_dim
        base = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        inv = re.inv_freq.float()
        f = cfg.rope_scaling["factor"]
        same = torch.isclose(inv, base, rtol=1e-6).sum().item()
        div = torch.isclose(inv, base / f, rtol=1e-6).sum().item()
        ramp = len(inv) - same - div
        assert div > 0 and ramp + same > 0, (same, ramp, div)
        attn = model.model.layers[0].self_attn
        ms = 0.1 * cfg.rope_scaling["mscale_all_dim"] * math.log(f) + 1.0
        want_scale = cfg.qk_head_dim ** -0.5 * ms * ms
        assert abs(attn.scaling - want_scale) < 1e-12, (attn.scaling, want_scale)
        notes.append(
            f"yarn rope over qk_rope_head_dim {d}: {same} freqs unchanged, {ramp} ramped, {div} divided by factor; "
            f"cos/sin attention_factor = {re.attention_scaling!r}; softmax scale = qk_head_dim^-0.5 * mscale^2 = "
            f"{attn.scaling!r} (mscale = 0.1*mscale_all_dim*ln(factor)+1 = {ms!r})"
        )
        print(f"  yarn rope: {same} unchanged / {ramp} ramped / {div} divided; cos/sin factor "
              f"{re.attention_scaling}; softmax scale {attn.scaling} (= {cfg.qk_head_dim}^-0.5 * {ms:.6f}^2)")


def check_names(fx, names):
    n = fx["name"]
    req = []
    if n == "mixtral":
        req = ["model.layers.0.block_sparse_moe.gate.weight"] + [
            f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight" for e in range(8) for w in ("w1", "w2", "w3")
        ]
    elif n in ("qwen2_moe", "qwen3_moe"):
        req = ["model.layers.1.mlp.gate.weight"] + [
            f"model.layers.1.mlp.experts.{e}.{w}.weight" for e in range(8) for w in ("gate_proj", "up_proj", "down_proj")
        ]
        if n == "qwen2_moe":
            req += ["model.layers.1.mlp.shared_expert_gate.weight"] + [
                f"model.layers.1.mlp.shared_expert.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")
            ]
            req += [f"model.layers.0.self_attn.{p}_proj.bias" for p in "qkv"]
        else:
            req += ["model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight"]
    elif n == "deepseek_v3":
        req = ["model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias"] + [
            f"model.layers.1.mlp.experts.{e}.{w}.weight" for e in range(8) for w in ("gate_proj", "up_proj", "down_proj")
        ] + [f"model.layers.1.mlp.shared_experts.{w}.weight" for w in ("gate_proj", "up_proj", "down_proj")]
        req += ["model.layers.0.mlp.gate_proj.weight", "model.layers.0.self_attn.q_a_layernorm.weight",
                "model.layers.0.self_attn.kv_a_layernorm.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]
    elif n == "qwen2":
        req = [f"model.layers.0.self_attn.{p}_proj.bias" for p in "qkv"]
        assert "lm_head.weight" not in names, "tied lm_head should not be saved"
    elif n == "llama":
        req = ["lm_head.weight"]
    missing = [r for r in req if r not in names]
    assert not missing, f"{n}: missing tensors {missing}"
    stacked = [x for x in names if ".experts." in x and not x.split(".experts.")[1].split(".")[0].isdigit()]
    assert not stacked, f"{n}: fused/stacked expert tensors found: {stacked[:4]}"


def read_saved(outdir):
    files = sorted(f for f in os.listdir(outdir) if f.endswith(".safetensors") and f != "expected.safetensors")
    tensors = {}
    for f in files:
        with safe_open(os.path.join(outdir, f), framework="pt") as sf:
            for k in sf.keys():
                tensors[k] = sf.get_tensor(k)
    return files, tensors


# --------------------------------------------------------------------------- one fixture


class UnusedExpert(Exception):
    pass



def build(fx, outroot, seed):
    name = fx["name"]
    outdir = os.path.join(outroot, name)
    print(f"\n=== {name} ===")
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)

    torch.manual_seed(seed)
    cfg = fx["config_cls"](**COMMON, **fx["config"])
    model = fx["model_cls"](cfg).eval()
    randomize(model, seed)

    save_dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[fx["dtype"]]
    model = model.to(save_dtype)
    save_kwargs = dict(safe_serialization=True)
    if fx.get("max_shard_size"):
        save_kwargs["max_shard_size"] = fx["max_shard_size"]
    model.save_pretrained(outdir, **save_kwargs)
    ref_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del model

    # ---- check what was written
    files, saved = read_saved(outdir)
    print(f"  weight files: {files}")
    if fx.get("max_shard_size"):
        shards = [f for f in files if f.startswith("model-")]
        assert len(shards) >= 2, files
        assert os.path.exists(os.path.join(outdir, "model.safetensors.index.json"))
    st_dtype = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    dtypes = {st_dtype[t.dtype] for t in saved.values()}
    assert dtypes == {fx["dtype"]}, (dtypes, fx["dtype"])
    check_names(fx, set(saved))

    # ---- reload from disk in float32; expectations come from this model
    model = fx["model_cls"].from_pretrained(outdir, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    st = model.state_dict()
    for k, v in saved.items():
        assert torch.equal(st[k], v.float()), f"reload mismatch {k}"
        assert torch.equal(ref_state[k].float(), v.float()), f"save mismatch {k}"
    if name == "deepseek_v3":
        b = st["model.layers.1.mlp.gate.e_score_correction_bias"]
        assert b.abs().min() > 0, "e_score_correction_bias not random"
    nparams = sum(p.numel() for p in model.parameters())

    notes = []
    check_rope(fx, model, cfg, notes)

    is_moe = name in ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3")
    probe = RouteProbe(model, name, cfg) if is_moe else None
    n_experts = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None) or getattr(
        cfg, "n_routed_experts", None)

    forbidden = {t for t in (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) if t is not None}
    if isinstance(cfg.eos_token_id, list):
        forbidden |= set(cfg.eos_token_id)

    prompts, greedy_out, min_margins, route_margins, logits, prompt_seeds = [], [], [], [], {}, []
    hist = {} if is_moe else None
    max_abs = 0.0
    for slot, L in enumerate(PROMPT_LENGTHS):
        for attempt in range(MAX_PROMPT_ATTEMPTS):
            pseed = seed * 1000 + slot * 100 + attempt
            ids = draw_prompt(pseed, L, forbidden)
            if probe:
                probe.reset()
            lg = forward_logits(model, ids)
            prompt_records = list(probe.records) if probe else []
            gen, margins = greedy(model, ids, N_GREEDY)
            rmargin = probe.min_margin() if probe else None
            ok = min(margins) >= MIN_LOGIT_MARGIN and (rmargin is None or rmargin >= MIN_ROUTE_MARGIN)
            if ok:
                break
            print(f"  prompt slot {slot} (len {L}) attempt {attempt}: logit margin {min(margins):.2e}"
                  + (f", route margin {rmargin:.2e}" if probe else "") + " -> redraw")
        else:
            raise RuntimeError(f"{name}: no prompt of length {L} with safe margins")
        prompts.append(ids)
        prompt_seeds.append(pseed)
        greedy_out.append(gen)
        min_margins.append(min(margins))
        route_margins.append(rmargin)
        logits[f"logits.{slot}"] = lg.contiguous()
        max_abs = max(max_abs, lg.abs().max().item())
        if probe:
            for layer, chosen, _, _ in prompt_records:
                h = hist.setdefault(layer, [0] * n_experts)
                for e in chosen.flatten().tolist():
                    h[e] += 1
    if probe:
        probe.remove()

    assert max_abs < MAX_ABS_LOGIT, f"{name}: max |logit| {max_abs}"
    if is_moe:
        for layer, h in sorted(hist.items()):
            print(f"  layer {layer} expert histogram (prompt tokens x top-k): {h}")
            if not all(c > 0 for c in h):
                raise UnusedExpert(f"{name}: layer {layer} leaves an expert unused: {h}")

    # ---- determinism / sanity: logits of the prompt prefix equal the greedy first step
    for i, ids in enumerate(prompts):
        assert int(torch.argmax(logits[f"logits.{i}"][-1])) == greedy_out[i][0]

    save_file(logits, os.path.join(outdir, "expected.safetensors"), metadata={"format": "pt"})

    rs = getattr(cfg, "rope_scaling", None)
    note = (
        f"Random {name} checkpoint made by tests/reference/make_fixtures.py with transformers "
        f"{transformers.__version__} / torch {torch.__version__}. Weights saved as {fx['dtype']} by "
        f"save_pretrained; expectations computed from those weights upcast to float32, eager attention, "
        f"fp32, batch 1, no padding, no KV cache. logits.<i> = logits of every position of prompts[i] run alone. "
        f"greedy[i] = 16 argmax tokens, each from a full forward over prompt+generated (EOS ignored). "
        f"greedy_min_margin = smallest top1-top2 logit gap over the 16 steps (>= {MIN_LOGIT_MARGIN})."
    )
    if is_moe:
        note += (f" route_min_margin = smallest gap between the k-th and (k+1)-th routing score over all tokens "
                 f"and MoE layers seen during the greedy runs (>= {MIN_ROUTE_MARGIN}).")
    note += " " + " ".join(notes)
    expected = {
        "model_type": cfg.model_type,
        "dtype": fx["dtype"],
        "vocab_size": cfg.vocab_size,
        "prompts": prompts,
        "greedy": greedy_out,
        "greedy_min_margin": min_margins,
        "note": note,
        "prompt_seeds": prompt_seeds,
        "max_abs_logit": max_abs,
        "attn_implementation": "eager",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "num_parameters": nparams,
        "weight_seed": seed,
    }
    if is_moe:
        expected["route_min_margin"] = route_margins
        expected["expert_histogram"] = {str(k): v for k, v in sorted(hist.items())}
    if rs is not None:
        expected["rope_scaling"] = rs
    with open(os.path.join(outdir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")

    nbytes = sum(os.path.getsize(os.path.join(outdir, f)) for f in os.listdir(outdir))
    print(f"  params {nparams}, bytes {nbytes}, max|logit| {max_abs:.2f}, min logit margin {min(min_margins):.4g}"
          + (f", min route margin {min(route_margins):.3g}" if is_moe else ""))
    return dict(name=name, params=nparams, bytes=nbytes, margin=min(min_margins),
                route=min(route_margins) if is_moe else None, maxlogit=max_abs, dtype=fx["dtype"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output root (default: tests/fixtures)")
    ap.add_argument("--only", nargs="*", help="build only these fixtures")
    ap.add_argument("--any-version", action="store_true", help="do not insist on the pinned versions")
    args = ap.parse_args()

    if not args.any_version:
        tv, pv = transformers.__version__, torch.__version__.split("+")[0]
        if tv != EXPECTED_TRANSFORMERS or pv != EXPECTED_TORCH:
            sys.exit(f"expected transformers {EXPECTED_TRANSFORMERS} / torch {EXPECTED_TORCH}, "
                     f"found {tv} / {pv} (use --any-version to override)")

    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    os.makedirs(args.out, exist_ok=True)

    rows = []
    for fx in FIXTURES:
        if args.only and fx["name"] not in args.only:
            continue
        for attempt in range(MAX_MODEL_ATTEMPTS):
            try:
                rows.append(build(fx, args.out, fx["seed"] + attempt))
                break
            except UnusedExpert as e:
                print(f"  {e} -> redraw weights with seed {fx['seed'] + attempt + 1}")
        else:
            sys.exit(f"{fx['name']}: no weight seed gives a router that uses every expert")

    total = sum(r["bytes"] for r in rows)
    print("\n%-12s %-5s %9s %10s %12s %12s %9s" % ("fixture", "dtype", "params", "bytes", "min margin",
                                                    "route margin", "max|lgt|"))
    for r in rows:
        print("%-12s %-5s %9d %10d %12.4g %12s %9.2f" % (
            r["name"], r["dtype"], r["params"], r["bytes"], r["margin"],
            "-" if r["route"] is None else "%.3g" % r["route"], r["maxlogit"]))
    print("%-12s %-5s %9s %10d" % ("total", "", "", total))


if __name__ == "__main__":
    main()
