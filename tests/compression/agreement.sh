#!/usr/bin/env bash
# SmolLM2-135M (9 heads, 3 KV heads) with tensor=3 over mpirun: 32 prompts x
# 64 greedy tokens with each all-reduce compression against compression none.
#   forced  the compressed run is teacher-forced along the exact run's tokens
#           (MR_TEACHER_TOKENS), so every position shares the context: the
#           per-token (top-1) agreement; bf16 must reach 99%, int8 95%
#   free    the compressed run generates on its own: position-wise agreement
#           of the two continuations (one early flip changes the rest), and
#           |dlogit| up to each request's first difference -- reported only
#   agreement.sh MOERUN AGREEMENT_BIN MODEL.gguf [MODES...]   (default bf16 int8)
set -euo pipefail
moerun=$1 agree=$2 model=$3
shift 3
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(bf16 int8)
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$model" ]; then echo "SKIP: $model missing (scripts/setup.sh installs it)"; exit 77; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d /tmp/mr-agree-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
run() { # name compression [teacher file]
  mkdir -p "$tmp/$1"
  MR_DUMP_LOGITS="$tmp/$1" MR_ALLREDUCE_COMPRESSION=$2 MR_TEACHER_TOKENS=${3:-} timeout 600 \
    mpirun -np 3 --oversubscribe --bind-to none \
    "$moerun" generate --model "$model" --input "$here/prompts.jsonl" --output "$tmp/$1.jsonl" \
    --set parallel.tensor=3 --max-tokens 64 --temperature 0 --ignore-eos --quiet
}
run none none
"$agree" teacher 49152 "$tmp/none" "$tmp/teacher.bin"
status=0
for m in "${modes[@]}"; do
  min=0
  case $m in bf16) min=0.99 ;; int8) min=0.95 ;; esac
  run "$m-forced" "$m" "$tmp/teacher.bin"
  printf '%-5s forced  ' "$m"
  "$agree" score --forced 49152 "$min" "$tmp/none" "$tmp/$m-forced" || status=1
  run "$m-free" "$m"
  printf '%-5s free    ' "$m"
  "$agree" score 49152 0 "$tmp/none" "$tmp/$m-free"
done
if [ $status -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
exit $status
