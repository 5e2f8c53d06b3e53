#!/usr/bin/env bash
# moerun topo from the command line: from XML files and dumps (no MPI) and
# under mpirun; exit statuses (0 / 2) and messages that name the place.
#   cli.sh MOERUN
set -u
moerun=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dgx=$here/dgx-h100.xml
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d /tmp/mr-topo-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect RC PATTERN -- command...: exit status RC and PATTERN in stdout+stderr
expect() {
  local rc=$1 pat=$2; shift 3
  "$@" >"$tmp/out" 2>&1; local got=$?
  if [[ $got -ne $rc ]]; then bad "exit $got (want $rc): $*"; tail -5 "$tmp/out"; return; fi
  if [[ -n $pat ]] && ! grep -q -- "$pat" "$tmp/out"; then bad "no '$pat' from: $*"; tail -5 "$tmp/out"; return; fi
  ok
}

expect 0 "usage: mpirun" -- "$moerun" topo --help
expect 2 "--map is block or cyclic" -- "$moerun" topo --xml "$dgx" --nodes 2 --map diagonal
expect 2 "describe a topology from --xml" -- "$moerun" topo --nodes 2
expect 2 "dgx-missing.xml: cannot read" -- "$moerun" topo --xml "$here/dgx-missing.xml" --nodes 1
# one DGX, 8 ranks: cuda3 with mlx5_3 on socket 0
expect 0 "cuda3    0    42-55,154-167        1      mlx5_3" -- "$moerun" topo --xml "$dgx" --nodes 1 --ranks-per-node 8
# 2 nodes x 8, dealt round robin, tp8 pp2: renumbered, no tensor group split
expect 0 "tensor groups: 2, 0 spanning nodes" -- "$moerun" topo --xml "$dgx" --nodes 2 --ranks-per-node 8 --map cyclic \
  --set parallel.tensor=8 --set parallel.pipeline=2
grep -q "ranks renumbered" "$tmp/out" && ok || bad "cyclic tp8 pp2 not renumbered"
# tp16 on 2 nodes: warning, then refused under strict with the plan's places
expect 0 "warning: 1 of 1 tensor groups span nodes" -- "$moerun" topo --xml "$dgx" --nodes 2 --ranks-per-node 8 \
  --set parallel.tensor=16
printf 'parallel:\n  tensor: 16\ntopology:\n  strict: true\n' >"$tmp/strict.yaml"
expect 2 "strict.yaml:4:11: topology.strict is set and 1 of 1 tensor groups span nodes" -- \
  "$moerun" topo --xml "$dgx" --nodes 2 --ranks-per-node 8 --plan "$tmp/strict.yaml"
grep -q "parallel.tensor = 16 ($tmp/strict.yaml:2:11)" "$tmp/out" && ok || bad "strict message without the tensor key's place"
# a plan for another world size
expect 2 "= 4 ranks, but the world has 8 ranks" -- "$moerun" topo --xml "$dgx" --nodes 1 --ranks-per-node 8 --set parallel.tensor=4

# the shipped DGX plans place on DGX nodes (strict: every tensor group in a node)
configs=$here/../../configs
expect 0 "tensor groups: 1, 0 spanning nodes" -- "$moerun" topo --xml "$dgx" --nodes 1 --ranks-per-node 8 \
  --plan "$configs/dgx-h100.yaml"
expect 0 "tensor groups: 2, 0 spanning nodes" -- "$moerun" topo --xml "$dgx" --nodes 2 --ranks-per-node 8 --map cyclic \
  --plan "$configs/dgx-h100-x2.yaml"
expect 0 "pipeline groups: 8, 8 spanning nodes" -- "$moerun" topo --xml "$dgx" --nodes 2 --ranks-per-node 8 \
  --plan "$configs/dgx-h100-x2.yaml"
expect 0 "" -- "$moerun" topo --xml "$dgx" --nodes 2 --ranks-per-node 8 --plan "$configs/deepseek-v3-ep.yaml"

# under mpirun: every rank discovers; --dump reloads to the same report
if timeout 60 mpirun -np 2 --bind-to none "$moerun" topo --json --dump "$tmp/t.dump" >"$tmp/mpi.json" 2>"$tmp/mpi.err"; then
  ok
  expect 0 "" -- "$moerun" topo --load "$tmp/t.dump" --json
  cmp -s "$tmp/out" "$tmp/mpi.json" && ok || bad "--load of the dump reports differently from the live job"
  # damaged dump: file and line
  sed '3s/^node 0 host/node 0 hots/' "$tmp/t.dump" >"$tmp/bad.dump"
  expect 2 "bad.dump:3: expected 'node 0 host" -- "$moerun" topo --load "$tmp/bad.dump"
else
  bad "mpirun -np 2 moerun topo"; cat "$tmp/mpi.err"
fi
# --bind under mpirun: the kernel's view of every rank
expect 0 "plan rank 1 (mpi 1): Cpus_allowed_list" -- timeout 60 mpirun -np 2 --bind-to none "$moerun" topo --bind
# a bad plan fails on every rank, mpirun exits non-zero
printf 'parallel:\n  tensor: three\n' >"$tmp/bad.yaml"
expect 2 "bad.yaml:2:11" -- timeout 60 mpirun -np 2 --bind-to none "$moerun" topo --plan "$tmp/bad.yaml"
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
