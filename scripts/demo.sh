#!/usr/bin/env bash
# The main job on the packaged default model: set-up and build, then an
# offline generation of examples/prompts.jsonl, printed as it lands.
# Until real tokenizers and GGUF models arrive, the default model is the
# committed llama test checkpoint (random weights made by transformers),
# so completions are token ids.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${MR_BUILD_DIR:-build}
MODEL=${MODEL:-tests/fixtures/llama}
INPUT=${INPUT:-examples/prompts.jsonl}
OUTPUT=${OUTPUT:-build/demo-output.jsonl}
"$BUILD"/launcher/moerun generate --model "$MODEL" --input "$INPUT" --output "$OUTPUT" --overwrite \
  --max-tokens 24 "$@"
echo "--- $OUTPUT"
cat "$OUTPUT"
