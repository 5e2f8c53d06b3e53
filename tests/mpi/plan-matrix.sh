#!/usr/bin/env bash
# Plan invariance over real MPI: every plan gives the same greedy tokens
# (and the same seeded samples) as one rank, for one fixture.
#   plan-matrix.sh MOERUN FIXTURE_DIR PLAN...    (a plan: "tensor=2,pipeline=2")
# Each plan runs under `mpirun -np N --oversubscribe` with a timeout.
# MR_PLANS_LOGIT_TOL: the logits' tolerance (default 1e-4; "bits": the same
# bits); MR_PLANS_ARGS: more options for the plan runs only (another batch
# size, thread count); MR_PLANS_LOG_EXPECT: extended regexes, separated by
# " && ", that every plan run's log must each match (the plan runs then log
# at the default level, or MR_LOG_LEVEL's).
set -u
moerun=$1 fixture=$2
compare=$(dirname "$moerun")/../tests/compare-logits
vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$fixture/config.json")
shift 2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d /tmp/mr-plans-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# 12 requests of different lengths: greedy, and sampled with their own seeds.
"$(dirname "${BASH_SOURCE[0]}")/plan-requests.sh" > "$tmp/in.jsonl"

common=(--model "$fixture" --input "$tmp/in.jsonl" --max-batch 4 --token-budget 16 --threads 1 --ignore-eos --overwrite)
quiet=--quiet expect=${MR_PLANS_LOG_EXPECT:-}
[ -n "$expect" ] && quiet=
# log_has: every pattern of $expect is in the plan run's log (else says which in $tmp/cmp)
log_has() {
  local rest=$expect pat
  while [ -n "$rest" ]; do
    pat=${rest%% && *}
    if [ "$pat" = "$rest" ]; then rest=; else rest=${rest#* && }; fi
    grep -Eq "$pat" "$tmp/log" || { echo "log lacks /$pat/" > "$tmp/cmp"; return 1; }
  done
}
mkdir -p "$tmp/l1"
if ! MR_DUMP_LOGITS="$tmp/l1" timeout 60 "$moerun" generate "${common[@]}" --quiet --output "$tmp/one.jsonl"; then
  echo "FAIL: one-rank run"; echo "0 passed, 1 failed"; exit 1
fi
pass=0 fail=0
for plan in "$@"; do
  args=() np=1
  IFS=, read -ra kv <<< "$plan"
  for p in "${kv[@]}"; do
    k=${p%%=*} v=${p#*=} v=${v//:/,}  # lists are written a:b
    args+=(--set "parallel.$k=$v")
    case $k in data|tensor|pipeline) np=$((np * v));; esac
  done
  out="$tmp/out-$np.jsonl"
  rm -rf "$tmp/ln" && mkdir -p "$tmp/ln"
  if timeout 120 mpirun -np "$np" --bind-to none -x MR_DUMP_LOGITS="$tmp/ln" "$moerun" generate "${common[@]}" \
       $quiet "${args[@]}" ${MR_PLANS_ARGS:-} --output "$out" > "$tmp/log" 2>&1 && cmp -s "$tmp/one.jsonl" "$out" &&
     "$compare" "$vocab" "${MR_PLANS_LOGIT_TOL:-1e-4}" "$tmp/l1" "$tmp/ln" > "$tmp/cmp" 2>&1 &&
     log_has; then
    echo "ok   $plan ($np ranks): same tokens; $(cat "$tmp/cmp")"; pass=$((pass + 1))
  else
    echo "FAIL $plan ($np ranks)"; fail=$((fail + 1))
    tail -5 "$tmp/log"; cat "$tmp/cmp" 2>/dev/null; [ -f "$out" ] && diff <(head -3 "$tmp/one.jsonl") <(head -3 "$out")
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
