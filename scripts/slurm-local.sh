#!/usr/bin/env bash
# A real Slurm on one machine (slurmctld, slurmd and munged from the Debian
# packages), for testing the sbatch templates in slurm/ (see tests/slurm/
# and ../shared/CLUSTER-TESTING.md).
#
#   slurm-local.sh check [host|N]        exit 0 if it can run here, else 77 (ctest skip) and why
#   slurm-local.sh up host               this machine is one node, controller on 127.0.0.1
#   slurm-local.sh up N                  N network-namespace nodes n1..nN (scripts/netns-nodes.sh),
#                                        controller in n1, one slurmd in each node
#   slurm-local.sh down                  stop every daemon, job and step of this cluster, delete its state
#   slurm-local.sh run CMD...            a client command (sbatch, srun, squeue, scontrol, ...) where the
#                                        controller is reachable (in n1 for namespace nodes)
#   slurm-local.sh with host|N CMD...    lock, up, run CMD (on this host, not in a node), always down;
#                                        exit status of CMD
#
# Each node has MR_SLURM_CPUS CPUs (default 4; two sockets when even;
# accepted on fewer real cores thanks to SlurmdParameters=config_overrides)
# and MR_SLURM_GPUS GPUs (default 4; a `gpu` GRES whose device files are
# stand-ins, so that templates asking for GPUs run on a CPU machine).
# Partitions `debug` (the default) and `cpu` hold every node, without a time
# limit. munged runs with its own key and socket, the daemons with their own
# files, all under /run/moerun-slurm, and in host mode on the first free
# ports from MR_SLURM_PORT (default 16817): a system Slurm or munge is never
# touched. `with` holds /run/moerun-slurm.lock from up to down (namespace
# nodes: netns-nodes.sh's lock too, through its own `with`); `up` and `down`
# hold it only while they run. MR_SLURM_KEEP=1 keeps what a failed `up` made.
set -euo pipefail

readonly STATE=/run/moerun-slurm
readonly LOCK=/run/moerun-slurm.lock
readonly CONF=$STATE/etc/slurm.conf
SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF
NETNS=$(dirname "$SELF")/netns-nodes.sh
readonly NETNS
readonly TOOLS=(slurmctld slurmd sbatch srun squeue sinfo scontrol scancel munged runuser flock ss mknod)

die() { echo "slurm-local: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit "${1:-2}"; }
say() { echo "slurm-local: $*" >&2; }

# --- locking ---------------------------------------------------------------
# flock on fd 8 for the life of this process, skipped under an outer `with`.
take_lock() {
  [[ ${MR_SLURM_LOCK_HELD:-0} == 1 ]] && return 0
  exec 8>"$LOCK"
  flock -w "${MR_SLURM_LOCK_WAIT:-600}" 8 || die "another local Slurm held $LOCK for ${MR_SLURM_LOCK_WAIT:-600} s"
  export MR_SLURM_LOCK_HELD=1
}

# --- check -----------------------------------------------------------------
cmd_check() {
  local spec=${1:-host} t
  for t in "${TOOLS[@]}"; do
    command -v "$t" >/dev/null || {
      echo "slurm-local: SKIP: '$t' is not installed (scripts/setup.sh installs slurmctld slurmd slurm-client munge)" >&2
      exit 77
    }
  done
  [[ $(id -u) == 0 ]] || { echo "slurm-local: SKIP: the local Slurm runs its daemons as root (running as uid $(id -u))" >&2; exit 77; }
  id munge >/dev/null 2>&1 || { echo "slurm-local: SKIP: no 'munge' user (the munge package makes it)" >&2; exit 77; }
  # What up does as root: start munged as the munge user, make the GPUs'
  # stand-in device nodes (both refused inside a user namespace).
  local probe err
  probe=$(mktemp -d)
  if ! err=$(runuser -u munge -- true 2>&1 && mknod "$probe/gpu" c 1 3 2>&1); then
    rm -rf "$probe"
    echo "slurm-local: SKIP: cannot switch to the munge user or make device nodes here: $err" >&2
    exit 77
  fi
  rm -rf "$probe"
  if [[ $spec != host ]]; then
    [[ $spec =~ ^[1-9][0-9]*$ ]] || die "check: host or a number of nodes (got '$spec')"
    "$NETNS" check >/dev/null || exit $?
  fi
  echo "slurm-local: a local Slurm ($spec) can run here"
}

# --- down ------------------------------------------------------------------
# Every process of this cluster carries SLURM_CONF=$CONF in its environment:
# the daemons (we start them so), slurmstepd (slurmd's child), and the jobs
# and clients (`run` sets it, sbatch and srun pass it on). Our own ancestors
# are spared (they never have it, but a caller might).
cluster_pids() {
  local p anc=" $$ " q=$$
  while q=$(awk '{print $4}' "/proc/$q/stat" 2>/dev/null) && [[ $q -gt 1 ]]; do anc+="$q "; done
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $anc == *" $p "* ]] && continue
    tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "SLURM_CONF=$CONF" && echo "$p"
  done
  return 0
}

kill_all() {   # kill_all PID... : TERM, up to 2 s, then KILL
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i p alive
  for ((i = 0; i < 20; i++)); do
    alive=0
    for p in "$@"; do [[ -e /proc/$p && $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) != Z ]] && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
}

# munged by its pid file, only if that pid is still a munged on our socket.
stop_munged() {
  local pid
  pid=$(cat "$STATE/munge/munged.pid" 2>/dev/null) || return 0
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--socket=$STATE/munge/munge.socket" &&
    kill_all "$pid"
  return 0
}

teardown() {
  [[ -d $STATE ]] || return 0
  # shellcheck disable=SC2046
  kill_all $(cluster_pids)
  stop_munged
  rm -rf --one-file-system "$STATE"
}
cmd_down() {
  take_lock
  local mode
  mode=$(cat "$STATE/mode" 2>/dev/null || true)
  teardown
  [[ -n $mode && $mode != host ]] && "$NETNS" down
  return 0
}

# --- up --------------------------------------------------------------------
free_port_pair() {   # first P >= 16817 with P and P+1 free for TCP listening
  local p
  for ((p = ${MR_SLURM_PORT:-16817}; p < ${MR_SLURM_PORT:-16817} + 200; p += 2)); do
    [[ -z $(ss -Hltn "( sport = :$p or sport = :$((p + 1)) )" 2>/dev/null) ]] && { echo "$p"; return; }
  done
  die "no free pair of TCP ports from ${MR_SLURM_PORT:-16817}"
}

# write_conf MODE NAME:ADDR...   the first node also runs slurmctld
write_conf() {
  local mode=$1; shift
  local cpus=${MR_SLURM_CPUS:-4} gpus=${MR_SLURM_GPUS:-4} first=${1%%:*} first_addr=${1#*:} n names=()
  [[ $cpus =~ ^[1-9][0-9]*$ && $gpus =~ ^[0-9]+$ ]] || die "MR_SLURM_CPUS must be >= 1 and MR_SLURM_GPUS >= 0"
  mkdir -p "$STATE/etc" "$STATE/log" "$STATE/state" "$STATE/run"
  {
    cat <<EOF
# Written by scripts/slurm-local.sh ($mode); wiped at every up.
ClusterName=moerun
SlurmctldHost=$first($first_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmdSpoolDir=$STATE/spool/%n
TmpFS=$STATE/tmp/%n
StateSaveLocation=$STATE/state
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
EOF
    if [[ $mode == host ]]; then
      local port
      port=$(free_port_pair)
      printf 'SlurmctldPort=%d\nSlurmdPort=%d\n' "$port" $((port + 1))
    fi
    # Two sockets where the CPUs split evenly (the CPU template asks for
    # one task per socket).
    local sockets=$((cpus % 2 ? 1 : 2))
    for n in "$@"; do
      printf 'NodeName=%s NodeAddr=%s CPUs=%d Sockets=%d CoresPerSocket=%d ThreadsPerCore=1 RealMemory=4000%s\n' \
        "${n%%:*}" "${n#*:}" "$cpus" "$sockets" $((cpus / sockets)) "$( ((gpus)) && echo " Gres=gpu:$gpus")"
      names+=("${n%%:*}")
    done
    local all
    all=$(IFS=,; echo "${names[*]}")
    echo "PartitionName=debug Nodes=$all Default=YES MaxTime=INFINITE State=UP"
    echo "PartitionName=cpu Nodes=$all MaxTime=INFINITE State=UP"
  } >"$CONF"
  # slurmd drops GPUs without a device file and refuses regular files:
  # character devices 1:3 (what /dev/null is) stand in for them.
  local i
  touch "$STATE/etc/gres.conf"
  if ((gpus)); then
    mkdir -p "$STATE/dev"
    for ((i = 0; i < gpus; i++)); do mknod "$STATE/dev/gpu$i" c 1 3; done
    for n in "${names[@]}"; do echo "NodeName=$n Name=gpu File=$STATE/dev/gpu[0-$((gpus - 1))]"; done >"$STATE/etc/gres.conf"
  fi
  for n in "${names[@]}"; do mkdir -p "$STATE/spool/$n" "$STATE/tmp/$n"; done
  echo "$first" >"$STATE/controller"
}

start_munged() {
  local m=$STATE/munge
  install -d -m 0755 -o munge -g munge "$m"
  dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$m/munge.key"
  chmod 0400 "$m/munge.key"
  runuser -u munge -- /usr/sbin/munged --socket="$m/munge.socket" --key-file="$m/munge.key" \
    --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed" 8>&- ||
    { cat "$m/munged.log" >&2 2>/dev/null; die "munged did not start"; }
}

# Runs CMD in NODE (its namespaces), or here in host mode, with a clean
# environment holding SLURM_CONF (the mark teardown looks for). The daemons
# fork into the background and write their pid files.
in_node() {   # in_node NODE CMD...
  local node=$1; shift
  local envs=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SLURM_CONF="$CONF")
  if [[ $(cat "$STATE/mode") == host ]]; then "${envs[@]}" "$@"; else "$NETNS" exec "$node" "${envs[@]}" "$@"; fi
}

start_daemons() {   # start_daemons NODE...   (slurmctld on the first)
  local n
  in_node "$1" slurmctld 8>&- || { tail -20 "$STATE/log/slurmctld.log" >&2 2>/dev/null; die "slurmctld did not start"; }
  for n in "$@"; do
    in_node "$n" slurmd -N "$n" 8>&- || { tail -20 "$STATE/log/slurmd-$n.log" >&2 2>/dev/null; die "slurmd on $n did not start"; }
  done
  # Every node idle (registered) within 30 s.
  local i states
  for ((i = 0; i < 300; i++)); do
    states=$(cmd_run sinfo -h -N -o '%N %T' 2>/dev/null | sort -u || true)
    [[ -n $states && $(grep -cv ' idle$' <<<"$states") == 0 && $(wc -l <<<"$states") -ge $# ]] && return 0
    sleep 0.1
  done
  say "nodes not idle after 30 s: ${states:-no answer from slurmctld}"
  tail -n 5 "$STATE"/log/*.log >&2 || true
  die "up failed"
}

setup() {   # setup host|N   (namespace nodes already up for N)
  local spec=$1 nodes=() i
  teardown
  mkdir -p "$STATE"
  chmod 0755 "$STATE"
  echo "$spec" >"$STATE/mode"
  if [[ $spec == host ]]; then
    nodes=("$(hostname -s):127.0.0.1")
  else
    for ((i = 1; i <= spec; i++)); do nodes+=("n$i:198.18.0.$((10 + i))"); done
  fi
  write_conf "$spec" "${nodes[@]}"
  start_munged
  start_daemons "${nodes[@]%%:*}"
  say "up ($spec): nodes ${nodes[*]%%:*}, $(cmd_run sinfo -h -o '%P %D %C' | tr '\n' ';' | sed 's/;$//') (partition nodes CPUs A/I/O/T); SLURM_CONF=$CONF"
}

cmd_up() {
  [[ $# == 1 ]] || usage
  local spec=$1
  [[ $spec == host || $spec =~ ^[1-9][0-9]*$ ]] || die "up: host or a number of nodes (got '$spec')"
  take_lock
  trap "[[ \$? == 0 || \${MR_SLURM_KEEP:-0} == 1 ]] || teardown" EXIT
  [[ $spec == host ]] || "$NETNS" up "$spec" >&2
  setup "$spec"
}

# --- run -------------------------------------------------------------------
# Open MPI needs root permission, and yielding: the nodes declare more CPUs
# than there are cores, so ranks that busy-poll would wait for scheduler
# ticks; between namespace nodes also fabric0 (tests/cluster/README.md).
# These reach the jobs through sbatch's default --export=ALL, as a site's
# own settings would on a real cluster.
cmd_run() {
  [[ $# -ge 1 ]] || usage
  [[ -f $STATE/mode ]] || die "no local Slurm is up (run: $SELF up host|N)"
  export SLURM_CONF=$CONF OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
  if [[ $(cat "$STATE/mode") == host ]]; then
    exec "$@"
  fi
  export OMPI_MCA_btl_tcp_if_include=fabric0 OMPI_MCA_oob_tcp_if_include=fabric0
  exec "$NETNS" exec n1 "$@"
}

# --- with ------------------------------------------------------------------
# CMD runs in its own process group (setsid), so that ending it also ends
# whatever it started (subshells polling the cluster, clients).
WITH_CHILD=
end_child() {
  [[ -n $WITH_CHILD ]] || return 0
  local pgid
  pgid=$(awk '{print $5}' "/proc/$WITH_CHILD/stat" 2>/dev/null) || pgid=
  if [[ -n $pgid && $pgid != "$(awk '{print $5}' /proc/$$/stat)" ]]; then
    kill -TERM -- "-$pgid" 2>/dev/null
  else
    kill -TERM "$WITH_CHILD" 2>/dev/null
  fi
  return 0
}
with_body() {   # with_body SPEC CMD...: up (nodes already there for N), CMD, always teardown
  local spec=$1; shift
  trap 'rc=$?; end_child; teardown; exit $rc' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  setup "$spec"
  setsid "$@" 8>&- &
  WITH_CHILD=$!
  local rc=0
  wait "$WITH_CHILD" || rc=$?
  WITH_CHILD=
  return "$rc"
}

cmd_with() {
  [[ $# -ge 2 ]] || usage
  local spec=$1; shift
  [[ $spec == host || $spec =~ ^[1-9][0-9]*$ ]] || die "with: host or a number of nodes (got '$spec')"
  take_lock
  if [[ $spec == host ]]; then
    with_body host "$@"
  else
    # netns-nodes.sh `with` holds its own lock and deletes the nodes (and
    # whatever still runs in them) after our session has stopped Slurm.
    exec "$NETNS" with "$spec" "$SELF" _with-body "$spec" "$@"
  fi
}

[[ $# -ge 1 ]] || usage
sub=$1; shift
case $sub in
  check) cmd_check "$@" ;;
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  run) cmd_run "$@" ;;
  with) cmd_with "$@" ;;
  _with-body) with_body "$@" ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
