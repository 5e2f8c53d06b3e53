#!/usr/bin/env bash
# Generation throughput of one job under several parallel plans, beside the
# one-rank figure measured in the same run, on a synthetic-weights model.
#
#   bench/bench-plans.sh [--model bench/models/moe-ds-small] [--requests 32] [--prompt 32]
#                        [--new 16] [--cores N] [--json FILE] [PLAN ...]
#
# A PLAN is a comma list of parallel sizes (data=2,expert=2); the default list
# covers every kind of parallelism.  Each plan runs `mpirun -np N moerun
# generate --synthetic-weights` on the same requests (token ids, greedy,
# --ignore-eos so every request makes exactly --new tokens) with
# max(1, cores / N) threads per rank; the figure is moerun's own count:
# generated tokens of all replicas over the slowest replica's generation time
# (weights set-up excluded).  Ranks beyond the cores are oversubscribed, and
# the table says so: on a 2-core machine a 4- or 8-rank plan measures the
# cost of the exchanges, not a speed-up.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MOERUN=${MOERUN:-$ROOT/build/launcher/moerun}
model=$ROOT/bench/models/moe-ds-small requests=32 prompt=32 new=16 cores=$(nproc) json=""
plans=()
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2;;
    --requests) requests=$2; shift 2;;
    --prompt) prompt=$2; shift 2;;
    --new) new=$2; shift 2;;
    --cores) cores=$2; shift 2;;
    --json) json=$2; shift 2;;
    -h|--help) sed -n 2,16p "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) plans+=("$1"); shift;;
  esac
done
[ ${#plans[@]} -eq 0 ] && plans=(data=2 tensor=2 pipeline=2 data=2,expert=2 tensor=2,expert=2 data=4,expert=4
                                data=2,tensor=2,expert=2 data=2,pipeline=2,expert=2 data=8,expert=8)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d /tmp/mr-bench-plans-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$model/config.json")
awk -v n="$requests" -v p="$prompt" -v v="$vocab" 'BEGIN {
  for (i = 0; i < n; i++) { s = "";
    for (k = 0; k < p; k++) s = s (k ? "," : "") (2 + (i * 7919 + k * 104729) % (v - 2));
    printf "{\"id\": \"r%d\", \"tokens\": [%s]}\n", i, s } }' > "$tmp/in.jsonl"

run() { # plan -> prints "tokens/s ranks threads"
  local plan=$1 np=1 args=()
  IFS=, read -ra kv <<< "$plan"
  for p in "${kv[@]}"; do
    [ -z "$p" ] && continue
    args+=(--set "parallel.${p%%=*}=${p#*=}")
    case ${p%%=*} in data|tensor|pipeline) np=$((np * ${p#*=}));; esac
  done
  local threads=$((cores / np)); [ "$threads" -lt 1 ] && threads=1
  local log=$tmp/log
  if ! mpirun -np "$np" --bind-to none "$MOERUN" generate --model "$model" --synthetic-weights \
      --input "$tmp/in.jsonl" --output "$tmp/out.jsonl" --overwrite --max-tokens "$new" --ignore-eos \
      --max-batch "$requests" --token-budget 512 --threads "$threads" "${args[@]}" > "$log" 2>&1; then
    echo "bench-plans: $plan failed:" >&2; tail -5 "$log" >&2; exit 1
  fi
  local tps
  tps=$(sed -n 's/.*job: .*(\([0-9.]*\) generated tokens\/s).*/\1/p' "$log")
  [ -z "$tps" ] && tps=$(sed -n 's/.*done: .*(\([0-9.]*\) generated tokens\/s.*/\1/p' "$log")
  echo "$tps $np $threads"
}

echo "# bench-plans: $(basename "$model") synthetic fp32, $requests requests x ($prompt prompt + $new new tokens), greedy"
echo "# machine: $(hostname) $(uname -m), $cores cores; baseline: the same job on one rank with $cores threads"
read -r base _ _ <<< "$(run "")"
printf "%-30s %6s %8s %12s %10s %s\n" plan ranks threads "gen tok/s" "vs 1 rank" note
printf "%-30s %6d %8d %12.1f %9.2fx\n" "one rank" 1 "$cores" "$base" 1
[ -n "$json" ] && : > "$json"
for plan in "${plans[@]}"; do
  read -r tps np threads <<< "$(run "$plan")"
  note=""; [ "$np" -gt "$cores" ] && note="oversubscribed ${np} ranks on $cores cores"
  ratio=$(awk -v a="$tps" -v b="$base" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  printf "%-30s %6d %8d %12.1f %9sx %s\n" "$plan" "$np" "$threads" "$tps" "$ratio" "$note"
  [ -n "$json" ] && printf '{"bench": "plans", "model": "%s", "plan": "%s", "ranks": %d, "threads": %d, "gen_tokens_per_s": %s, "baseline": "one rank, %d threads", "baseline_tokens_per_s": %s}\n' \
    "$(basename "$model")" "$plan" "$np" "$threads" "$tps" "$cores" "$base" >> "$json"
done
