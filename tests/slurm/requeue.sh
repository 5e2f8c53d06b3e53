#!/usr/bin/env bash
# Stop and requeue on a real local Slurm (one node): slurm/generate.sbatch
# runs a 4-rank generation long enough to be stopped twice.
#  1. `scancel --signal=TERM` (SIGTERM to the ranks, as a node drain or a
#     preemption's grace period sends it): within 10 s every rank has exited
#     75, the lines written so far are whole lines of the plain run's output,
#     and the batch script has requeued the job.
#  2. On the second run, `scancel --signal=USR1 --batch` (the warning
#     #SBATCH --signal=B:USR1@300 sends before the time limit): the batch
#     script passes it to the ranks, they stop the same way, requeued again.
#  3. The third run completes the rest: the output equals a plain mpirun
#     run's, every request answered once.
# Slurm holds a requeued job for about two minutes (BeginTime); the test
# moves its start to now (scontrol update StartTime=now).
# Needs resumable output (`moerun generate` resumes a rerun with the same
# output, exit 75 when stopped): exit 77 until then, and where no Slurm can run.
#   requeue.sh MOERUN FIXTURE_DIR
set -uo pipefail
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} != --inside ]]; then
  [[ $# == 2 && -x $1 && -d $2 ]] || { echo "usage: requeue.sh MOERUN FIXTURE_DIR" >&2; exit 2; }
  help=$("$1" generate --help 2>&1)
  if ! grep -qi resum <<<"$help"; then
    echo "requeue: SKIP: needs resumable output (moerun generate --help does not mention resuming)" >&2
    exit 77
  fi
  "$slurm_local" check host || exit $?
  exec "$slurm_local" with host "${BASH_SOURCE[0]}" --inside "$(readlink -f "$1")" "$(readlink -f "$2")"
fi
moerun=$2 fixture=$3
inside_setup
readonly STOP_LIMIT=10   # seconds from the signal to every rank gone and the job requeued

make_input in.jsonl 160 100
make_plan tp.yaml 1 2 2
total=$(wc -l <in.jsonl)
t0=$(now)
plain_run ref.jsonl tp.yaml 4 in.jsonl || { echo "FAIL: plain mpirun run (4 ranks)"; exit 1; }
echo "plain mpirun reference: $(since "$t0") s for $total requests"

lines() { [[ -f out.jsonl ]] && wc -l <out.jsonl || echo 0; }
# Wait until the job runs (restart R) and has answered more than N lines.
wait_progress() {   # wait_progress ID R N
  local t0 st
  t0=$(now)
  while :; do
    st=$(job_field "$1" JobState)
    [[ $st == RUNNING && $(job_field "$1" Restarts) == "$2" && $(lines) -gt $3 ]] && return 0
    case $st in COMPLETED | FAILED | CANCELLED | TIMEOUT) echo "job $1 ended ($st) before it could be stopped"; return 1 ;; esac
    awk -v a="$(since "$t0")" 'BEGIN {exit !(a > 120)}' && { echo "job $1 made no progress in 120 s ($st)"; return 1; }
    sleep 0.1
  done
}
# Signal the job, then wait until it is requeued (pending, restart R+1).
stop_and_requeue() {   # stop_and_requeue NAME ID R SCANCEL_ARGS...
  local name=$1 id=$2 r=$3 t0 st before
  shift 3
  before=$(lines)
  t0=$(now)
  sl scancel "$@" "$id"
  while :; do
    st=$(job_field "$id" JobState)
    [[ $st == PENDING && $(job_field "$id" Restarts) == $((r + 1)) ]] && break
    case $st in COMPLETED | FAILED | CANCELLED | TIMEOUT)
      bad "$name: job $id ended ($st, exit $(job_field "$id" ExitCode)) instead of being requeued"; tail -20 "$(job_log "$id")"; return 1 ;;
    esac
    awk -v a="$(since "$t0")" -v b="$STOP_LIMIT" 'BEGIN {exit !(a > b)}' && break
    sleep 0.1
  done
  local took
  took=$(since "$t0")
  if [[ $st != PENDING ]]; then
    bad "$name: job $id not requeued $STOP_LIMIT s after the signal ($st)"; tail -20 "$(job_log "$id")"; return 1
  fi
  local p
  for p in $(pgrep -x moerun); do
    [[ $(readlink "/proc/$p/cwd" 2>/dev/null) == "$tmp" ]] && { bad "$name: rank $p still runs after the requeue"; return 1; }
  done
  # Whole lines only, each one a line of the plain run (appended in the
  # order requests ended), no request twice.
  local n
  n=$(lines)
  if [[ -s out.jsonl && $(tail -c 1 out.jsonl | od -An -c | tr -d ' ') != '\n' ]]; then
    bad "$name: the output ends in a partial line"; return 1
  fi
  if ! sort out.jsonl | comm -23 - <(sort ref.jsonl) | { ! grep -q .; }; then
    bad "$name: lines that the plain run does not have"; sort out.jsonl | comm -23 - <(sort ref.jsonl) | head -3; return 1
  fi
  if [[ $(sort -u out.jsonl | wc -l) != "$n" ]]; then bad "$name: a line written twice"; return 1; fi
  if ((n >= total)); then bad "$name: every request was answered before the stop (make the input longer)"; return 1; fi
  if ! grep -q "Exited with exit code 75" "$(job_log "$id")" || ! grep -q "requeued job $id" "$(job_log "$id")"; then
    bad "$name: the log shows no exit 75 and requeue"; tail -20 "$(job_log "$id")"; return 1
  fi
  ok "$name: stopped and requeued in $took s (limit $STOP_LIMIT s), $before -> $n of $total lines flushed, all whole and right"
  # Slurm delays a requeued job's start by about two minutes: start it now.
  sl scontrol update JobId="$id" StartTime=now
}

t0=$(now)
id=$(PLAN=tp.yaml MODEL=$fixture INPUT=in.jsonl OUTPUT=out.jsonl MOERUN=$moerun MOERUN_HOME=$root \
  sl sbatch --parsable --ntasks-per-node=4 --gpus-per-node=4 --cpus-per-task=1 "$root/slurm/generate.sbatch" "${GEN_ARGS[@]}")
if wait_progress "$id" 0 0 || { bad "first run: $(wait_progress "$id" 0 0)"; false; }; then
  if stop_and_requeue "SIGTERM to the ranks" "$id" 0 --signal=TERM; then
    n=$(lines)
    if wait_progress "$id" 1 "$n" || { bad "second run: no progress"; false; }; then
      if stop_and_requeue "warning signal (USR1) to the batch script" "$id" 1 --signal=USR1 --batch; then
        check_job "third run completes the rest" "$id" ref.jsonl out.jsonl 'job [0-9]+ \(restart 2\)'
      fi
    fi
  fi
fi
if (( fail )); then
  echo "--- job log"; cat "$(job_log "$id")"
  # Slurm's own account of the job (a run that never started leaves nothing in the job log)
  logdir=$(dirname "${SLURM_CONF:-/run/moerun-slurm/etc/slurm.conf}")/../log
  for f in "$logdir"/slurmctld.log "$logdir"/slurmd-*.log; do
    [[ -f $f ]] && { echo "--- $(basename "$f") (last 25 lines)"; tail -25 "$f"; }
  done
fi
echo "jobs: $(since "$t0") s; whole test inside Slurm's bring-up: $(since "$t_start") s"
summary
