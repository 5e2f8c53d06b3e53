#!/usr/bin/env bash
# Issue 5's "no allocation in the decode loop", on the CUDA emulator: the
# device allocations of a job (MR_EMU_STATS) must not depend on how many
# tokens it decodes, while its launches do (so decode steps ran).
#   decode-no-alloc.sh MOERUN FIXTURE_DIR WEIGHTS
set -u
moerun=$1 fixture=$2 weights=$3
tmp=$(mktemp -d /tmp/mr-noalloc-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$(dirname "${BASH_SOURCE[0]}")/../../mpi/plan-requests.sh" | sed 's/, "max_tokens": [0-9]*//' > "$tmp/in.jsonl"
stats() { # N -> "allocations launches"
  MR_EMU_STATS=1 MR_DEVICE=cuda MR_WEIGHTS=$weights "$moerun" generate --model "$fixture" --input "$tmp/in.jsonl" \
    --output "$tmp/out.jsonl" --max-tokens "$1" --ignore-eos --overwrite --quiet --max-batch 4 --token-budget 16 \
    2>&1 | sed -n 's/^cuda-emu: \([0-9]*\) allocations.* \([0-9]*\) launches.*/\1 \2/p'
}
read -r a2 l2 <<< "$(stats 2)"
read -r a12 l12 <<< "$(stats 12)"
echo "2 tokens: ${a2:-?} allocations, ${l2:-?} launches; 12 tokens: ${a12:-?} allocations, ${l12:-?} launches"
if [ -z "${a2:-}" ] || [ -z "${a12:-}" ]; then echo "FAIL: no emulator statistics (not an emulator build?)"; exit 1; fi
[ "$l12" -gt "$l2" ] || { echo "FAIL: the longer job launched no more kernels"; exit 1; }
[ "$a12" = "$a2" ] || { echo "FAIL: device allocations grow with the decoded tokens"; exit 1; }
echo "ok: allocations independent of the decode length"
