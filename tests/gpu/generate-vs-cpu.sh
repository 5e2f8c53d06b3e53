#!/usr/bin/env bash
# moerun generate with text prompts on the CUDA backend against the CPU
# backend, both with fp32 weights: the same output file, byte for byte
# (greedy requests only: a sampled one would hang on the same near-ties).
#   generate-vs-cpu.sh MOERUN MODEL PROMPTS.jsonl [N_PROMPTS] [MAX_TOKENS]
# Exits 77 when MODEL is missing (scripts/setup.sh fetches the default one).
set -u
moerun=$1 model=$2 prompts=$3 np=${4:-3} n=${5:-10}
if [ ! -e "$model" ]; then
  echo "SKIP: $model not found (scripts/setup.sh fetches it)"
  exit 77
fi
tmp=$(mktemp -d /tmp/mr-gvc-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
grep -v '"temperature"' "$prompts" | head -n "$np" > "$tmp/in.jsonl"
common=(generate --model "$model" --input "$tmp/in.jsonl" --max-tokens "$n" --overwrite --quiet)
for dev in cpu cuda; do
  if ! MR_DEVICE=$dev MR_WEIGHTS=fp32 "$moerun" "${common[@]}" --output "$tmp/$dev.jsonl" 2> "$tmp/$dev.log"; then
    echo "FAIL: the $dev run"; tail -5 "$tmp/$dev.log"; exit 1
  fi
done
if ! cmp -s "$tmp/cpu.jsonl" "$tmp/cuda.jsonl"; then
  echo "FAIL: cuda output differs from cpu"; diff "$tmp/cpu.jsonl" "$tmp/cuda.jsonl"; exit 1
fi
echo "ok: $(wc -l < "$tmp/in.jsonl") prompts, $n tokens each: cuda output = cpu output"
cat "$tmp/cuda.jsonl"
