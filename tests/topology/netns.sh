#!/usr/bin/env bash
# The topology of a real 2-node job: two network-namespace nodes n1, n2
# (scripts/netns-nodes.sh) with 2 ranks each, dealt round robin by mpirun
# (--map-by node: MPI ranks 0,2 on n1, 1,3 on n2).
#  - moerun topo sees 2 nodes named n1, n2 and renumbers plan ranks so that
#    each tensor group (tensor=2) is one node: plan 0,1 = MPI 0,2 on n1
#  - tensor=4 is refused under topology.strict (exit 2, every rank)
#  - a generation with tensor=2, pipeline=2 dealt the same way (so the
#    renumbered world carries the whole job) gives one rank's tokens, over
#    ob1/TCP and over UCX
# Exit 77 where namespaces cannot be made.
#   netns.sh MOERUN FIXTURE_DIR
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nodes=$(cd "$here/../../scripts" && pwd)/netns-nodes.sh
if [[ ${1:-} != --inside ]]; then
  "$nodes" check || exit $?
  moerun=$(readlink -f "$1") fixture=$(readlink -f "$2")
  tmp=$(mktemp -d /tmp/mr-topo-netns-XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  printf '{"id": "a", "tokens": [3, 17, 42, 5], "max_tokens": 8}\n{"id": "b", "tokens": [9, 8, 7], "max_tokens": 6, "temperature": 0.8, "seed": 5}\n' >"$tmp/in.jsonl"
  common=(--model "$fixture" --input "$tmp/in.jsonl" --threads 1 --ignore-eos --quiet --overwrite)
  timeout 60 "$moerun" generate "${common[@]}" --output "$tmp/one.jsonl" || { echo "FAIL: one-rank run"; exit 1; }
  "$nodes" with 2 "${BASH_SOURCE[0]}" --inside "$moerun" "$tmp" "${common[@]}"
  exit $?
fi
moerun=$2 tmp=$3; shift 3
common=("$@")
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
run() { timeout -k 10 120 "$nodes" mpirun "$@"; }

if run --host n1:2,n2:2 -np 4 --map-by node "$moerun" topo --json --set parallel.tensor=2 --set parallel.data=2 \
     >"$tmp/topo.json" 2>"$tmp/topo.err"; then
  got=$(jq -c '[[.nodes[].host], [.ranks[] | [.plan_rank, .mpi_rank, .node]], .groups.tensor.spanning_nodes, .reordered]' "$tmp/topo.json")
  want='[["n1","n2"],[[0,0,0],[1,2,0],[2,1,1],[3,3,1]],0,true]'
  [[ $got == "$want" ]] && ok || bad "topology $got, want $want"
else
  bad "moerun topo on 2 nodes"; cat "$tmp/topo.err"
fi
printf 'parallel:\n  tensor: 4\ntopology:\n  strict: true\n' >"$tmp/strict.yaml"
run --host n1:2,n2:2 -np 4 "$moerun" topo --plan "$tmp/strict.yaml" >"$tmp/strict.out" 2>&1
rc=$?
[[ $rc -ne 0 ]] && grep -q "strict.yaml:4:11: topology.strict is set and 1 of 1 tensor groups span nodes (plan ranks 0-3 on n1, n2)" \
  "$tmp/strict.out" && ok || { bad "strict tensor=4 on 2 nodes: exit $rc"; tail -5 "$tmp/strict.out"; }

for transport in tcp ucx; do
  out=$tmp/out-$transport.jsonl
  if run "--$transport" --host n1:2,n2:2 -np 4 --map-by node "$moerun" generate "${common[@]}" --output "$out" \
       --set parallel.tensor=2 --set parallel.pipeline=2 >"$tmp/gen-$transport.log" 2>&1; then
    a=$(jq -c '[.id, .tokens]' "$tmp/one.jsonl" | sort) b=$(jq -c '[.id, .tokens]' "$out" | sort)
    [[ -n $a && $a == "$b" ]] && ok || bad "$transport: tokens differ from one rank: $b vs $a"
  else
    bad "$transport: generate on 2 nodes"; tail -5 "$tmp/gen-$transport.log"
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
