#!/usr/bin/env bash
# The main job on the packaged default model: set-up and build, then an
# offline generation of examples/prompts.jsonl (text prompts) with
# SmolLM2-135M-Instruct (GGUF, Q4_1; its tokenizer comes from the file),
# printed prompt by prompt.  MODEL, INPUT, OUTPUT and MR_BUILD_DIR override
# the defaults; further arguments go to `moerun generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${MR_BUILD_DIR:-build}
MODEL=${MODEL:-models/smollm2-135m-instruct-q4_1.gguf}
INPUT=${INPUT:-examples/prompts.jsonl}
OUTPUT=${OUTPUT:-$BUILD/demo-output.jsonl}
"$BUILD"/launcher/moerun generate --model "$MODEL" --input "$INPUT" --output "$OUTPUT" --overwrite \
  --max-tokens 48 "$@"
echo "--- $OUTPUT, prompt by prompt"
python3 - "$INPUT" "$OUTPUT" <<'PY'
import json, sys, textwrap
ins = [l for l in open(sys.argv[1]) if l.strip()]
for line, out in zip(ins, open(sys.argv[2])):
    r = json.loads(out)
    try:
        q = json.loads(line)
    except ValueError:
        q = {}
    body = q.get("body", q)
    prompt = body.get("prompt", body.get("tokens", ""))
    if "custom_id" in r:  # OpenAI batch format
        err, resp = r["error"], (r["response"] or {}).get("body")
        text = resp["choices"][0]["text"] if resp else None
        finish = resp["choices"][0]["finish_reason"] if resp else None
    else:
        err = r.get("error", {}).get("message") if "error" in r else None
        text, finish = r.get("text", r.get("tokens")), r.get("finish_reason")
    print(f"[{r.get('custom_id', r.get('id'))}] {prompt!s}")
    if err:
        print(f"    error: {err}")
    else:
        wrapped = textwrap.fill(str(text).strip().replace("\n", " / "), 96, initial_indent="    -> ",
                                subsequent_indent="       ")
        print(f"{wrapped}  ({finish})")
PY
