#!/usr/bin/env bash
# moerun-launch computes -np from the plan, prints the mpirun line, runs it,
# and the run gives the one-rank tokens.
#   launch.sh BUILD_DIR FIXTURE_DIR
set -eu
build=$1 fixture=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/mr-launch-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
printf 'parallel:\n  data: 2\n  tensor: 2\ngeneration:\n  max_tokens: 5\n' > "$tmp/plan.yaml"
printf '{"id": 1, "tokens": [5, 6, 7]}\n{"id": 2, "tokens": [9, 10]}\n{"id": 3, "tokens": [11, 12, 13, 14]}\n' > "$tmp/in.jsonl"
common=(--model "$fixture" --input "$tmp/in.jsonl" --ignore-eos --threads 1 --quiet)
line=$("$build/launcher/moerun-launch" "$tmp/plan.yaml" --dry-run --oversubscribe -- generate "${common[@]}" --output "$tmp/x.jsonl")
echo "$line"
case "$line" in "mpirun -np 4 --oversubscribe "*"/moerun generate --plan $tmp/plan.yaml "*) ;; *) echo "FAIL: unexpected line"; echo "0 passed, 1 failed"; exit 1;; esac
timeout 60 "$build/launcher/moerun-launch" "$tmp/plan.yaml" --oversubscribe --bind-to none -- generate "${common[@]}" --output "$tmp/four.jsonl"
"$build/launcher/moerun" generate "${common[@]}" --max-tokens 5 --output "$tmp/one.jsonl"
if cmp "$tmp/one.jsonl" "$tmp/four.jsonl"; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; exit 1; fi
