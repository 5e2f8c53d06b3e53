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
# jq pairs each input line with its result (native or OpenAI batch format).
jq -r -n --slurpfile in "$INPUT" --slurpfile out "$OUTPUT" '
  [$in, $out] | transpose[] | .[0] as $q | .[1] as $r
  | ($q.body // $q) as $b
  | (if $r.custom_id then
       {id: $r.custom_id, err: $r.error, text: $r.response.body.choices[0].text,
        fin: $r.response.body.choices[0].finish_reason}
     else
       {id: $r.id, err: $r.error.message, text: ($r.text // ($r.tokens | tostring)), fin: $r.finish_reason}
     end) as $o
  | "[\($o.id)] \($b.prompt // ($b.tokens | tostring))\n"
    + (if $o.err then "    error: \($o.err)" else "    -> \($o.text | gsub("\n"; " / "))  (\($o.fin))" end)'
