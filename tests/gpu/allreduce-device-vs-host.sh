#!/usr/bin/env bash
# The tensor all-reduce on device buffers (runtime/allreduce-cuda.c: its
# kernels on its own stream, over NCCL) against the host engine on staged
# copies over MPI (comm.backend = mpi), in `moerun generate` on the CUDA
# backend: each case must give the same output bytes and the same logits
# bits (the device codecs are the host's byte for byte and the sums the
# same additions in the same order).
#   allreduce-device-vs-host.sh MOERUN FIXTURE_DIR
# Needs a GPU per rank (4 for the hierarchical case; cases that do not fit
# are skipped, none fitting exits 77); on the CUDA emulator (MR_CUDA_EMU=1)
# each rank has its own (MR_EMU_DEVICES=4).
set -u
moerun=$1 fixture=$2
compare=$(dirname "$moerun")/../tests/compare-logits
vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$fixture/config.json")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "${MR_CUDA_EMU:-0}" = 1 ]; then
  export MR_EMU_DEVICES=4; gpus=4
else
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
tmp=$(mktemp -d /tmp/mr-ardev-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$(dirname "${BASH_SOURCE[0]}")/../mpi/plan-requests.sh" > "$tmp/in.jsonl"

# ranks | what | --set options
cases=(
  "2|int8, auto (two-shot)|comm.allreduce.compression=int8"
  "2|int4 block 64, overlap in chunks of 16 tokens|comm.allreduce.compression=int4 comm.allreduce.block=64 comm.allreduce.overlap=true comm.allreduce.chunk_kib=1"
  "2|bf16, ring, chunks of 1 KiB|comm.allreduce.compression=bf16 comm.allreduce.algorithm=ring comm.allreduce.chunk_kib=1"
  "2|none, two-shot|comm.allreduce.algorithm=two_shot"
  "4|fp16, hierarchical, nodes of 2|comm.allreduce.compression=fp16 comm.allreduce.algorithm=hierarchical"
)
pass=0 fail=0 ran=0
for c in "${cases[@]}"; do
  IFS='|' read -r np what sets <<< "$c"
  if [ "$gpus" -lt "$np" ]; then echo "skip $what: $np ranks, $gpus GPU(s)"; continue; fi
  ran=$((ran + 1))
  args=(--set "parallel.tensor=$np")
  for s in $sets; do args+=(--set "$s"); done
  ok=1
  for be in mpi nccl; do
    mkdir -p "$tmp/l-$be"; rm -f "$tmp/l-$be"/*
    if ! timeout 180 mpirun -np "$np" --bind-to none -x MR_DUMP_LOGITS="$tmp/l-$be" -x MR_ALLREDUCE_NODE_SIZE=2 \
         -x MR_DEVICE=cuda -x MR_WEIGHTS=fp32 "$moerun" generate --model "$fixture" --input "$tmp/in.jsonl" \
         --output "$tmp/o-$be.jsonl" --overwrite --max-batch 4 --token-budget 64 --threads 1 --ignore-eos \
         --set "comm.backend=$be" "${args[@]}" > "$tmp/log-$be" 2>&1; then
      echo "FAIL $what: comm.backend=$be run failed"; tail -5 "$tmp/log-$be"; ok=0
    fi
  done
  if [ $ok = 1 ] && ! grep -q "tensor all-reduce on the device" "$tmp/log-nccl"; then
    echo "FAIL $what: the NCCL run did not use the device engine"; grep -E "group:|all-reduce" "$tmp/log-nccl"; ok=0
  fi
  if [ $ok = 1 ] && cmp -s "$tmp/o-mpi.jsonl" "$tmp/o-nccl.jsonl" &&
     "$compare" "$vocab" bits "$tmp/l-mpi" "$tmp/l-nccl" > "$tmp/cmp" 2>&1; then
    echo "ok   $what ($np ranks): same output; $(cat "$tmp/cmp")"; pass=$((pass + 1))
  else
    [ $ok = 1 ] && { echo "FAIL $what ($np ranks)"; cat "$tmp/cmp" 2>/dev/null; }; fail=$((fail + 1))
  fi
done
echo "$pass passed, $fail failed"
[ "$ran" = 0 ] && exit 77
[ "$fail" = 0 ]
