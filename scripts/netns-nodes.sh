#!/usr/bin/env bash
# Several "nodes" on one machine with Linux network namespaces, for
# multi-node MPI tests and benchmarks (see tests/cluster/README.md and
# ../shared/CLUSTER-TESTING.md for why it is done this way).
#
#   netns-nodes.sh check                 exit 0 if namespaces work here, else 77 (ctest skip) and why
#   netns-nodes.sh up N                  nodes n1..nN (namespaces moerun-n1..moerun-nN, bridge in moerun-sw)
#   netns-nodes.sh down                  delete every moerun-* namespace and the state (safe twice)
#   netns-nodes.sh exec NODE CMD...      run CMD inside NODE (own hostname, sysfs, cgroups, /etc/hosts)
#   netns-nodes.sh mpirun ARGS...        Open MPI's mpirun inside n1, remote starts through the rsh agent;
#                                        ob1 (btl tcp,vader,self); --ucx as the first argument (or
#                                        MR_NETNS_TRANSPORT=ucx) picks pml ucx over fabric0
#   netns-nodes.sh with N CMD...         lock, up N, run CMD, always down; exit status of CMD
#
# Node nI has hostname nI and one interface fabric0 = 198.18.0.(10+I)/24
# (198.18.0.0/15 is set aside for benchmark networks; addresses live only
# on the veth ends, so no traffic leaves the namespaces). up/down/with hold
# the lock /run/moerun-netns.lock so that two users never share or delete
# each other's nodes; commands run under `with` see MR_NETNS_LOCK_HELD=1 and
# may call up/down themselves without deadlocking.
set -euo pipefail

readonly PREFIX=moerun-
readonly SWITCH=${PREFIX}sw
readonly STATE=/run/moerun-netns
readonly LOCK=/run/moerun-netns.lock
readonly SUBNET=198.18.0
readonly MAX_NODES=200
SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF

die() { echo "netns-nodes: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit "${1:-2}"; }

# --- locking ---------------------------------------------------------------
# flock on fd 9 for the life of this process; skipped when an outer `with`
# (our parent) already holds it.
take_lock() {
  [[ ${MR_NETNS_LOCK_HELD:-0} == 1 ]] && return 0
  exec 9>"$LOCK"
  flock -w "${MR_NETNS_LOCK_WAIT:-600}" 9 || die "another netns session held $LOCK for ${MR_NETNS_LOCK_WAIT:-600} s"
  export MR_NETNS_LOCK_HELD=1
}

# --- check -----------------------------------------------------------------
# Probes what `up` and `exec` do in an anonymous namespace (unshare --net),
# which needs no lock and never collides with a running session, then one
# named `ip netns add`.
cmd_check() {
  local c
  for c in ip nsenter unshare flock mount hostname timeout; do
    command -v "$c" >/dev/null || { echo "netns-nodes: SKIP: '$c' is not installed" >&2; exit 77; }
  done
  [[ $(id -u) == 0 ]] || { echo "netns-nodes: SKIP: network namespaces need root (running as uid $(id -u))" >&2; exit 77; }
  local err
  if ! err=$(unshare --net --uts --mount --propagation private sh -c '
        ip link add p0 type veth peer name p1 && ip link add br0 type bridge &&
        ip link set p1 master br0 && ip addr add 198.19.255.1/24 dev p0 &&
        mount -t sysfs sysfs /sys && test -d /sys/class/net/p0 && hostname moerun-probe' 2>&1); then
    echo "netns-nodes: SKIP: cannot create network namespaces with veth, bridge, sysfs and hostname here: ${err:-unknown error}" >&2
    exit 77
  fi
  # A named one too (needs mounts on /run/netns, refused in a user namespace).
  # A concurrent `down` may delete it first: only the add has to work.
  local probe=${PREFIX}probe-$$
  if ! err=$(ip netns add "$probe" 2>&1); then
    echo "netns-nodes: SKIP: ip netns add fails here: $err" >&2
    exit 77
  fi
  ip netns del "$probe" 2>/dev/null || true
  echo "netns-nodes: network namespaces work here"
}

# --- down ------------------------------------------------------------------
our_namespaces() { ip netns list 2>/dev/null | awk -v p="$PREFIX" 'index($1, p) == 1 {print $1}'; }

# Ends what still runs inside our namespaces (orted, ranks left by a killed
# job), by pid, then deletes the namespaces and the state.
teardown() {
  local ns pids
  pids=$(for ns in $(our_namespaces); do ip netns pids "$ns" 2>/dev/null || true; done | grep -vx "$$" | sort -u || true)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    sleep 0.3
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  for ns in $(our_namespaces); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf --one-file-system "$STATE"
}
cmd_down() { take_lock; teardown; }

# --- up --------------------------------------------------------------------
node_addr() { echo "$SUBNET.$((10 + $1))"; }

setup_nodes() {
  local n=$1 i ns
  [[ $n =~ ^[1-9][0-9]*$ && $n -le $MAX_NODES ]] || die "up: N must be 1..$MAX_NODES (got '$n')"
  teardown   # whatever a crashed session left
  mkdir -p "$STATE/cgroup-hold"
  {
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    for ((i = 1; i <= n; i++)); do printf '%s\tn%d\n' "$(node_addr "$i")" "$i"; done
  } >"$STATE/hosts"
  echo "$n" >"$STATE/nodes"
  # The rsh agent Open MPI runs instead of ssh: `agent HOST CMD...`.
  printf '#!/bin/sh\nexec %q agent "$@"\n' "$SELF" >"$STATE/rsh-agent"
  chmod 755 "$STATE/rsh-agent"

  ip netns add "$SWITCH"
  ip -n "$SWITCH" link set lo up
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  for ((i = 1; i <= n; i++)); do
    ns=$PREFIX"n$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both ends are made in the node, then the switch end moves to the switch.
    ip -n "$ns" link add fabric0 type veth peer name "port$i"
    ip -n "$ns" link set "port$i" netns "$SWITCH"
    ip -n "$SWITCH" link set "port$i" master br0
    ip -n "$SWITCH" link set "port$i" up
    # IPv4 only: no IPv6 link-local chatter (DAD, MLD) on fabric0.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.fabric0.disable_ipv6=1
    ip -n "$ns" addr add "$(node_addr "$i")/24" dev fabric0
    ip -n "$ns" link set fabric0 up
  done
  # Wait for operstate "up" (IFF_RUNNING): the kernel's linkwatch sets it
  # up to a second after the link comes up, and UCX ignores a device
  # without it ("network device 'fabric0' is not available").
  local tries
  for ((i = 1; i <= n; i++)); do
    for ((tries = 0; ; tries++)); do
      [[ $(ip -n "$PREFIX"n"$i" -o link show fabric0) == *"state UP"* ]] && break
      ((tries < 50)) || { teardown; die "up: fabric0 of n$i is not up after 5 s"; }
      sleep 0.1
    done
  done
  # Every node reaches the last one: a TCP connect to a closed port is
  # refused by the peer only if the packets got there (no ping needed).
  local out
  for ((i = 1; i < n; i++)); do
    out=$(ip netns exec "$PREFIX"n"$i" timeout 3 bash -c "echo >/dev/tcp/$(node_addr "$n")/9" 2>&1 || true)
    [[ $out == *refused* ]] || { teardown; die "up: n$i cannot reach n$n over fabric0: ${out:-timeout}"; }
  done
}
cmd_up() {
  [[ $# == 1 ]] || usage
  take_lock
  trap '[[ $? == 0 ]] || teardown' EXIT   # no half-made nodes
  setup_nodes "$1"
  echo "netns-nodes: up $1 node(s): n1..n$1 on $SUBNET.0/24"
}

# --- exec ------------------------------------------------------------------
# Network namespace by nsenter; own UTS and mount namespace by unshare. In
# the mount namespace: a sysfs of this network namespace (else
# /sys/class/net shows the host's interfaces and UCX misses fabric0), the
# host's cgroup tree moved back under it, our hosts file over /etc/hosts.
# shellcheck disable=SC2016
readonly ENTER_SCRIPT='
set -e
node=$1; hold=$2; hosts=$3; shift 3
mount --rbind /sys/fs/cgroup "$hold"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount --move "$hold" /sys/fs/cgroup
mount --bind "$hosts" /etc/hosts
hostname "$node"
exec "$@"'

node_of() {   # a host name or fabric0 address -> node name (nI), or fail
  local h=${1#*@}
  [[ -f $STATE/hosts ]] || die "no nodes are up (run: $SELF up N)"
  awk -v h="$h" '$2 ~ /^n[0-9]+$/ && ($1 == h || $2 == h) {print $2; found = 1; exit} END {exit !found}' "$STATE/hosts" ||
    die "unknown node '$1' (nodes: $(awk '$2 ~ /^n[0-9]+$/ {printf "%s ", $2}' "$STATE/hosts"))"
}

exec_in() {
  local node
  node=$(node_of "$1"); shift
  [[ $# -gt 0 ]] || die "exec: no command"
  [[ -e /run/netns/$PREFIX$node ]] || die "namespace $PREFIX$node is gone"
  exec nsenter --net="/run/netns/$PREFIX$node" \
    unshare --uts --mount --propagation private \
    sh -c "$ENTER_SCRIPT" moerun-enter "$node" "$STATE/cgroup-hold" "$STATE/hosts" "$@"
}
cmd_exec() { [[ $# -ge 2 ]] || usage; exec_in "$@"; }

# Open MPI calls `agent HOST WORDS...`; like ssh, the words are one shell
# command line for the remote side.
cmd_agent() { [[ $# -ge 2 ]] || die "agent: usage: agent HOST CMD..."; local host=$1; shift; exec_in "$host" sh -c "$*"; }

# --- mpirun ----------------------------------------------------------------
cmd_mpirun() {
  local transport=${MR_NETNS_TRANSPORT:-tcp}
  if [[ ${1:-} == --ucx ]]; then transport=ucx; shift; elif [[ ${1:-} == --tcp ]]; then transport=tcp; shift; fi
  local args=(--mca plm_rsh_agent "$STATE/rsh-agent" --mca plm_rsh_no_tree_spawn 1
    --mca oob_tcp_if_include fabric0 --mca btl_tcp_if_include fabric0
    --mca mpi_yield_when_idle 1 --oversubscribe --bind-to none)
  case $transport in
    tcp) args+=(--mca pml ob1 --mca btl "${MR_NETNS_BTL:-tcp,vader,self}") ;;
    ucx) export UCX_NET_DEVICES=fabric0
         args+=(--mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any -x UCX_NET_DEVICES) ;;
    *) die "MR_NETNS_TRANSPORT must be tcp or ucx (got '$transport')" ;;
  esac
  # Remote ranks inherit the agent's environment already; -x makes it
  # explicit for the variables that matter (and survives tree spawns).
  local v
  for v in PATH LD_LIBRARY_PATH $(compgen -v | grep '^MR_' || true); do
    [[ -n ${!v+x} ]] && args+=(-x "$v")
  done
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  exec_in n1 mpirun "${args[@]}" "$@"
}

# --- with ------------------------------------------------------------------
WITH_CHILD=
cmd_with() {
  [[ $# -ge 2 ]] || usage
  local n=$1; shift
  take_lock
  trap 'rc=$?; [[ -n $WITH_CHILD ]] && kill -TERM "$WITH_CHILD" 2>/dev/null; teardown; exit $rc' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  setup_nodes "$n"
  # In the background, so that a signal to us ends the wait at once; fd 9
  # (the lock) closed, so that nothing CMD leaves behind keeps holding it.
  "$@" 9>&- &
  WITH_CHILD=$!
  local rc=0
  wait "$WITH_CHILD" || rc=$?
  WITH_CHILD=
  return "$rc"
}

[[ $# -ge 1 ]] || usage
sub=$1; shift
case $sub in
  check) cmd_check ;;
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  exec) cmd_exec "$@" ;;
  mpirun) cmd_mpirun "$@" ;;
  with) cmd_with "$@" ;;
  agent) cmd_agent "$@" ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
