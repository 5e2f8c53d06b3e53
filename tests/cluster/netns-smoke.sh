#!/usr/bin/env bash
# Two network-namespace nodes, 2 ranks each: mpi-nodes over ob1/TCP and
# over UCX, and fabric0 on each node must have sent at least that node's
# cross-node share of the all-to-all. Exit 77 (ctest skip) where namespaces
# cannot be made.
#   netns-smoke.sh MPI_NODES_BINARY
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nodes=$(cd "$here/../../scripts" && pwd)/netns-nodes.sh

if [[ ${1:-} != --inside ]]; then
  [[ $# == 1 && -x $1 ]] || { echo "usage: netns-smoke.sh MPI_NODES_BINARY" >&2; exit 2; }
  "$nodes" check || exit $?    # 77 with the reason where namespaces are not allowed
  # `with` takes the lock, brings up 2 nodes, runs the checks below and
  # always deletes the nodes (its trap on EXIT, also on failure or signal).
  exec "$nodes" with 2 "${BASH_SOURCE[0]}" --inside "$(readlink -f "$1")"
fi

bin=$2
per_node=2 ranks=4 bytes=$((4 << 20))
# Bytes each node must send over fabric0 in the all-to-all: each of its
# per_node ranks sends one block to every rank of the other node.
cross=$((per_node * (ranks - per_node) * (bytes / ranks)))
failed=0

tx_bytes() { "$nodes" exec "$1" cat /sys/class/net/fabric0/statistics/tx_bytes; }

run() {   # run NAME [--ucx]
  local name=$1; shift
  local before1 before2 after1 after2 start end out
  before1=$(tx_bytes n1) before2=$(tx_bytes n2)
  start=$(date +%s.%N)
  if ! out=$(timeout 60 "$nodes" mpirun "$@" --host n1:$per_node,n2:$per_node -np $ranks \
                   "$bin" $per_node n1,n2 --bytes $bytes 2>&1); then
    echo "$out"; echo "FAIL $name: mpirun failed"; failed=$((failed + 1)); return
  fi
  end=$(date +%s.%N)
  after1=$(tx_bytes n1) after2=$(tx_bytes n2)
  echo "$out"
  local d1=$((after1 - before1)) d2=$((after2 - before2))
  printf '%s: %.2f s; fabric0 tx n1 %d B, n2 %d B (all-to-all cross-node share %d B each)\n' \
    "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')" "$d1" "$d2" "$cross"
  if [[ $out != *"mpi-nodes: ok"* ]]; then echo "FAIL $name: no ok line"; failed=$((failed + 1)); return; fi
  if ((d1 < cross || d2 < cross)); then
    echo "FAIL $name: fabric0 sent less than the cross-node share: traffic did not go between the nodes"
    failed=$((failed + 1)); return
  fi
  echo "PASS $name"
}

run tcp
run ucx --ucx
passed=$((2 - failed))
echo "$passed passed, $failed failed"
((failed == 0))
