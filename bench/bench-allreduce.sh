#!/usr/bin/env bash
# The all-reduce table of issue 6: every algorithm x compression beside
# MPI_Allreduce, 2, 4 and 8 ranks, over shared memory (one node) and over
# TCP between network-namespace nodes (scripts/netns-nodes.sh): 2 nodes
# with 1, 2 and 4 ranks each, and 4 nodes of one rank (every link TCP).
# Writes bench/results/allreduce-<transport>-<ranks>[-4x1].{txt,json}.
#   bench/bench-allreduce.sh [BUILD_DIR]   (root for the TCP part; about 5 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=bench/results
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(--sizes 64K,1M,16M --iters 5 --algos ring,two_shot,hierarchical --compressions none,bf16,fp16,int8,int4)
for np in 2 4 8; do
  name=allreduce-shm-$np
  timeout 900 mpirun -np "$np" --oversubscribe --bind-to none "$build/bench/bench-allreduce" "${args[@]}" \
    --node-size $((np / 2)) --label "shm $np ranks (hierarchical: 2 what-if nodes of $((np / 2)))" \
    --json "$out/$name.json" | tee "$out/$name.txt"
done
if scripts/netns-nodes.sh check; then
  for np in 2 4 8; do
    per=$((np / 2))
    name=allreduce-tcp-$np
    scripts/netns-nodes.sh with 2 scripts/netns-nodes.sh mpirun --host "n1:$per,n2:$per" -np "$np" \
      "$build/bench/bench-allreduce" "${args[@]}" --label "tcp 2 nodes x $per" --json "$out/$name.json" \
      2> >(grep -v setpgid >&2) | tee "$out/$name.txt"
  done
  name=allreduce-tcp-4-4x1
  scripts/netns-nodes.sh with 4 scripts/netns-nodes.sh mpirun --host n1:1,n2:1,n3:1,n4:1 -np 4 \
    "$build/bench/bench-allreduce" "${args[@]}" --label "tcp 4 nodes x 1" --json "$out/$name.json" \
    2> >(grep -v setpgid >&2) | tee "$out/$name.txt"
fi
