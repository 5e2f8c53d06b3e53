#!/usr/bin/env python3
"""transformers' generate on a bench/models shape with random weights: the
baseline beside bench-engine's rows (same field names in the JSON).

  prefill: one forward of --prefill-batch x --prompt tokens (logits of the
           last position only, as generate's prefill and bench-engine do),
           best and mean of --reps after a warm-up; tokens/s.
  decode:  at each batch B, generate(B prompts of --prompt tokens,
           min_new_tokens = max_new_tokens = --steps + 1, greedy) after a
           warm-up generate; a logits processor reads the clock each time
           generate has logits (after the prefill, then after every decode
           forward), so the step time is the mean of the --steps intervals
           after the prefill: forward, sampling and generate's own work per
           token, no prefill.  The least of --reps runs.
The clock is always read after torch.cuda.synchronize() on cuda.

The model is AutoModelForCausalLM.from_config(AutoConfig of DIR/config.json)
(LlamaForCausalLM, DeepseekV3ForCausalLM, ...), built on the device in the
dtype asked (bf16 by default on cuda, fp32 on cpu), transformers' own random
initialisation, eval mode, inference_mode.

Exits 77 (skipped) with one line when torch or transformers does not import,
or --device cuda finds no CUDA device.

  bench/hf-generate.py --model bench/models/llama-8b --device cuda \\
      --batches 1,64 --prompt 512 --steps 16 --json hf.json
"""
import argparse
import json
import os
import platform
import sys
import time

SKIP = 77


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="folder with config.json")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--weights", choices=["bf16", "fp32"], default=None,
                    help="parameter dtype (default bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--prefill-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16, help="decode steps timed per batch size")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--attn", default=None, help="attn_implementation (default: transformers' choice)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    try:
        a.batches = [int(x) for x in a.batches.split(",") if x]
    except ValueError:
        ap.error(f"--batches {a.batches!r}: expected integers separated by commas")
    for name in ("prompt", "prefill_batch", "steps", "reps"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if not a.batches or min(a.batches) < 1:
        ap.error("--batches: sizes must be at least 1")
    if a.weights is None:
        a.weights = "bf16" if a.device == "cuda" else "fp32"
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        ap.error(f"{a.model}/config.json: no such file")
    return a


def main():
    a = parse_args()
    try:
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList
    except Exception as e:  # ImportError, or a broken install
        print(f"hf-generate: torch/transformers not importable ({type(e).__name__}: {e}): skipped")
        return SKIP
    if a.device == "cuda" and not torch.cuda.is_available():
        print("hf-generate: --device cuda: torch sees no CUDA device "
              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}): skipped")
        return SKIP
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.weights == "bf16" else torch.float32
    cuda = a.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        device_name = (f"{torch.cuda.get_device_name(0)}, "
                       f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB")
    else:
        device_name = f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} threads"

    cfg = AutoConfig.from_pretrained(a.model)
    kw = {"dtype": dtype}
    if a.attn:
        kw["attn_implementation"] = a.attn
    t0 = time.perf_counter()
    with dev:
        model = AutoModelForCausalLM.from_config(cfg, **kw)
    model.eval()
    sync()
    t_build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    attn_impl = getattr(model.config, "_attn_implementation", None)
    vocab = cfg.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(1)

    def ids(b, t):
        return torch.randint(0, vocab, (b, t), generator=gen).to(dev)

    print(f"# hf-generate: {a.model} ({cfg.model_type}, {type(model).__name__}), "
          f"{n_params / 1e6:.0f}M parameters, {a.weights}; built in {t_build:.1f} s")
    print(f"# transformers {transformers.__version__}, torch {torch.__version__}, "
          f"attn {attn_impl}; device {a.device}: {device_name}")
    print(f"{'phase':<10} {'batch':>6} {'tokens':>8} {'time_ms':>12} {'tok/s':>10}")
    base = {"engine": "transformers", "model": a.model, "backend": a.device, "device": device_name,
            "weights": a.weights, "transformers": transformers.__version__, "torch": torch.__version__,
            "attn_implementation": attn_impl}
    rows = []

    class StepClock(LogitsProcessor):
        """Times each call: generate calls it once per new token."""

        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores):
            sync()
            self.t.append(time.perf_counter())
            return scores

    def timed(fn):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    with torch.inference_mode():
        x = ids(a.prefill_batch, a.prompt)
        prefill = lambda: model(input_ids=x, use_cache=True, logits_to_keep=1)
        prefill()  # warm-up
        ts = [timed(prefill) for _ in range(a.reps)]
        tp = sum(ts) / len(ts)
        n = a.prefill_batch * a.prompt
        print(f"{'prefill':<10} {a.prefill_batch:>6} {n:>8} {tp * 1e3:>12.2f} {n / tp:>10.1f}")
        rows.append(dict(base, phase="prefill", batch=a.prefill_batch, prompt=a.prompt, tokens=n,
                         samples=len(ts), seconds=round(tp, 6), best_seconds=round(min(ts), 6),
                         tokens_per_s=round(n / tp, 2)))
        del x
        for b in a.batches:
            x = ids(b, a.prompt)
            mask = torch.ones_like(x)

            def generate(new):
                clock = StepClock()
                out = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=new,
                                     min_new_tokens=new, do_sample=False, pad_token_id=0,
                                     logits_processor=LogitsProcessorList([clock]))
                assert out.shape[1] == a.prompt + new, f"generate gave {out.shape[1] - a.prompt} new tokens"
                assert len(clock.t) == new, f"the clock ran {len(clock.t)} times for {new} tokens"
                return (clock.t[-1] - clock.t[0]) / (new - 1)

            generate(2)  # warm-up
            steps, total = [], []
            for _ in range(a.reps):
                total.append(timed(lambda: steps.append(generate(a.steps + 1))))
            td = min(steps)
            print(f"{'decode':<10} {b:>6} {b:>8} {td * 1e3:>12.3f} {b / td:>10.1f}")
            rows.append(dict(base, phase="decode", batch=b, context=a.prompt, steps=a.steps,
                             step_ms=round(td * 1e3, 4), tokens_per_s=round(b / td, 2),
                             step_ms_reps=[round(t * 1e3, 4) for t in steps],
                             generate_seconds=round(min(total), 6)))
            del x, mask
            if cuda:
                torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
