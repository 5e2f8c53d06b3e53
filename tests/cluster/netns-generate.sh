#!/usr/bin/env bash
# A real generation across two network-namespace nodes, 2 ranks each: plan
# tensor=2, pipeline=2 (world 4, stage 0 = ranks 0,1 on n1, stage 1 = ranks
# 2,3 on n2), over ob1/TCP and over UCX. Every run must give exactly the
# tokens of a one-rank run of the same fixture (12 requests: greedy and
# seeded top-p samples), logits within 1e-4, each rank on the node the
# plan puts it on, and fabric0 of n1 must have sent at least half of the
# float32 activations stage 0 hands to stage 1 (so a run that stayed on
# one node cannot pass). Exit 77 (ctest skip) only where namespaces cannot
# be made; a failed run, other tokens or a missing transport fail.
#   netns-generate.sh MOERUN COMPARE_LOGITS FIXTURE_DIR[,KEY=VALUE...]...
# KEY=VALUE are more parallel.* keys for that fixture (expert=2).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nodes=$(cd "$here/../../scripts" && pwd)/netns-nodes.sh
per_node=2 ranks=4 tensor=2 pipeline=2
transports=(tcp ucx)

fail_early() { echo "FAIL: $*"; echo "0 passed, 1 failed"; exit 1; }

# The 12 requests of tests/mpi/plan-matrix.sh: lengths 3..25, every third
# one sampled (temperature 0.8, top_p 0.9) with its own seed.
requests() { "$here/../mpi/plan-requests.sh"; }

config_int() { sed -n "s/.*\"$2\": *\\([0-9]*\\).*/\\1/p" "$1/config.json" | head -1; }

# "id tokens finish_reason" per output line, sorted by id.
tokens_by_id() { jq -r '"\(.id) \(.tokens | tostring) \(.finish_reason)"' "$1" | sort; }

# ---------------------------------------------------------------------------
# Outside the namespaces: check, one-rank references, then `with 2` runs the
# rest of this script (--inside) and always deletes the nodes.
if [[ ${1:-} != --inside ]]; then
  [[ $# -ge 3 && -x $1 && -x $2 ]] ||
    { echo "usage: netns-generate.sh MOERUN COMPARE_LOGITS FIXTURE_DIR[,KEY=VALUE...]..." >&2; exit 2; }
  "$nodes" check || exit $?    # 77 with the reason where namespaces are not allowed
  command -v jq >/dev/null || fail_early "jq is not installed (scripts/setup.sh installs it)"
  moerun=$(readlink -f "$1") compare=$(readlink -f "$2"); shift 2
  # Under /tmp: the nodes have their own mount namespaces, but these are
  # copies of the host's, so files the ranks write here are seen here.
  tmp=$(mktemp -d /tmp/mr-netns-gen-XXXXXX)
  child=
  trap '[[ -n $child ]] && kill -TERM "$child" 2>/dev/null && wait "$child"; rm -rf "$tmp"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  requests >"$tmp/in.jsonl"
  i=0
  for spec in "$@"; do
    dir=$(readlink -f "${spec%%,*}")
    [[ -f $dir/config.json ]] || fail_early "no fixture at ${spec%%,*}"
    mkdir -p "$tmp/f$i/l1"
    start=$(date +%s.%N)
    if ! MR_DUMP_LOGITS="$tmp/f$i/l1" timeout -k 10 60 "$moerun" generate --model "$dir" --input "$tmp/in.jsonl" \
         --output "$tmp/f$i/one.jsonl" --max-batch 4 --token-budget 16 --threads 1 --ignore-eos --quiet \
         --overwrite >"$tmp/f$i/one.log" 2>&1; then
      tail -5 "$tmp/f$i/one.log"; fail_early "one-rank run of $(basename "$dir")"
    fi
    printf 'reference %s (1 rank, host): %.2f s\n' "$(basename "$dir")" \
      "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
    i=$((i + 1))
  done
  "$nodes" with 2 "${BASH_SOURCE[0]}" --inside "$moerun" "$compare" "$tmp" "$@" &
  child=$!
  rc=0; wait "$child" || rc=$?
  child=
  exit "$rc"
fi

# ---------------------------------------------------------------------------
# Inside `with 2`: nodes n1, n2 are up and the lock is held.
moerun=$2 compare=$3 tmp=$4; shift 4
nreq=$(wc -l <"$tmp/in.jsonl")
passed=0 failed=0

tx_bytes() { "$nodes" exec "$1" cat /sys/class/net/fabric0/statistics/tx_bytes; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

run() {   # run TRANSPORT INDEX FIXTURE_SPEC
  local transport=$1 i=$2 spec=$3
  local dir name d=$tmp/f$2 out log plan=(--set "parallel.tensor=$tensor" --set "parallel.pipeline=$pipeline") extra kv
  dir=$(readlink -f "${spec%%,*}") name=$(basename "${spec%%,*}")
  IFS=, read -ra extra <<<"${spec#"${spec%%,*}"}"
  for kv in "${extra[@]}"; do [[ -n $kv ]] && plan+=(--set "parallel.$kv"); done
  out=$d/$transport.jsonl log=$d/$transport.log
  rm -rf "$d/ln" "$d/host".* "$out" && mkdir -p "$d/ln"

  # Stage 0 (ranks 0, 1 on n1) sends each stage-1 peer the hidden state of
  # every position it runs: prompt + completion - 1 per request.
  local hidden positions completion need1 need2
  hidden=$(config_int "$dir" hidden_size)
  positions=$(jq -s '[.[].usage.total_tokens - 1] | add' "$d/one.jsonl")
  completion=$(jq -s '[.[].usage.completion_tokens] | add' "$d/one.jsonl")
  need1=$((tensor * positions * hidden * 4 / 2))   # half: bf16 activations would pass too
  need2=$((completion * 4))                        # sampled tokens back to stage 0

  local b1 b2 a1 a2 start end rc=0
  b1=$(tx_bytes n1) b2=$(tx_bytes n2)
  start=$(date +%s.%N)
  # Each rank writes its host name (its node's UTS namespace) before exec.
  # shellcheck disable=SC2016
  MR_DUMP_LOGITS=$d/ln timeout -k 10 120 "$nodes" mpirun "--$transport" --host n1:$per_node,n2:$per_node -np $ranks \
    sh -c 'hostname >"$0/host.$OMPI_COMM_WORLD_RANK" && exec "$@"' "$d" \
    "$moerun" generate --model "$dir" --input "$tmp/in.jsonl" --output "$out" --max-batch 4 --token-budget 16 \
    --threads 1 --ignore-eos --quiet --overwrite "${plan[@]}" >"$log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  a1=$(tx_bytes n1) a2=$(tx_bytes n2)
  local t d1=$((a1 - b1)) d2=$((a2 - b2)) why=() cmp=""
  t=$(secs "$start" "$end")

  if ((rc != 0)); then
    why+=("mpirun exited $rc$( ((rc == 124 || rc == 137)) && echo ' (timeout 120 s)')")
    grep -q 'PML ucx cannot be selected\|pml_ucx' "$log" && why+=("UCX transport missing: Open MPI's pml ucx did not load")
  elif [[ ! -s $out ]]; then
    why+=("no output")
  else
    local nout
    nout=$(wc -l <"$out")
    ((nout == nreq)) || why+=("$nout output lines, want $nreq")
    if ! diff <(tokens_by_id "$d/one.jsonl") <(tokens_by_id "$out") >"$d/$transport.diff"; then
      why+=("tokens differ from one rank ($(grep -c '^>' "$d/$transport.diff") of $nreq requests)")
    fi
    if ! cmp=$("$compare" "$(config_int "$dir" vocab_size)" 1e-4 "$d/l1" "$d/ln" 2>&1); then
      why+=("logits: $cmp")
    fi
  fi
  local r want placed=""
  for ((r = 0; r < ranks; r++)); do
    want=n$((r / per_node + 1))
    placed+="$r:$(cat "$d/host.$r" 2>/dev/null || echo '?') "
    ((rc == 0)) && [[ $(cat "$d/host.$r" 2>/dev/null) != "$want" ]] && why+=("rank $r not on $want")
  done
  ((rc == 0 && d1 < need1)) && why+=("fabric0 of n1 sent $d1 B < $need1 B: the activations did not cross to n2")
  ((rc == 0 && d2 < need2)) && why+=("fabric0 of n2 sent $d2 B < $need2 B: no tokens came back over it")

  local status=PASS
  ((${#why[@]})) && status=FAIL
  printf '%s %s %s (tensor=%d pipeline=%d%s, %d ranks on n1,n2): %s s; %s; ranks %s; fabric0 tx n1 %d B (>= %d), n2 %d B (>= %d)\n' \
    "$status" "$transport" "$name" $tensor $pipeline "${spec#"${spec%%,*}"}" $ranks "$t" \
    "$( ((${#why[@]})) && printf '%s; ' "${why[@]}" | sed 's/; $//' || echo "same tokens for $nreq requests, ${cmp:-no logit check}")" \
    "${placed% }" "$d1" "$need1" "$d2" "$need2"
  if [[ $status == PASS ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    tail -15 "$log"
    [[ -s $d/$transport.diff ]] && head -6 "$d/$transport.diff"
  fi
}

for transport in "${transports[@]}"; do
  tstart=$(date +%s.%N) f0=$failed
  i=0
  for spec in "$@"; do run "$transport" $i "$spec"; i=$((i + 1)); done
  printf '%s: %d fixture(s), %s s, %s\n' "$transport" $# "$(secs "$tstart" "$(date +%s.%N)")" \
    "$( ((failed == f0)) && echo ok || echo "$((failed - f0)) failed")"
done
echo "$passed passed, $failed failed"
((failed == 0))
