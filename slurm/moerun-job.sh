#!/usr/bin/env bash
# The body of every sbatch template in this folder (they set #SBATCH lines
# and defaults, then exec this script, which keeps the batch shell's pid):
# checks the plan against the allocation, starts the ranks with
# `srun --mpi=pmix` (or mpirun), passes the warning signal on to them, and
# requeues the job when they stopped early with their output flushed.
#
# Environment (see README.md):
#   PLAN       plan YAML (required); the task count is data x pipeline x tensor of it
#   MODEL      checkpoint folder or .gguf (empty: the plan's model:)
#   INPUT      prompts JSONL (empty: the plan's input:)
#   OUTPUT     completions JSONL (empty: the plan's output:); a requeued job resumes it
#   MOERUN     the moerun program (default: $MOERUN_HOME/build/launcher/moerun, else moerun on PATH)
#   LAUNCHER   srun (default) or mpirun
#   SRUN_ARGS, MPIRUN_ARGS   extra launcher options (word-split)
#   MAX_REQUEUES             requeues allowed (default 10; 0: never), counted by SLURM_RESTART_COUNT
# Arguments: more `moerun generate` options (--threads, --max-tokens, ...).
#
# Exit status: 0 when done or requeued; 2 when the plan does not fit the
# allocation; else that of the ranks.
set -uo pipefail

log() { echo "moerun-job: $*" >&2; }

readonly STOPPED=75   # ranks stopped by SIGTERM/SIGUSR1, every answered line flushed: resumable
job=${SLURM_JOB_ID:-}
[[ -n $job ]] || { log "run this through sbatch (no SLURM_JOB_ID)"; exit 2; }
[[ -n ${PLAN:-} ]] || { log "set PLAN=path/to/plan.yaml (sbatch passes the environment on)"; exit 2; }
home=${MOERUN_HOME:-${SLURM_SUBMIT_DIR:-.}}
if [[ -z ${MOERUN:-} ]]; then
  MOERUN=$home/build/launcher/moerun
  [[ -x $MOERUN ]] || MOERUN=$(command -v moerun) || { log "no moerun in $home/build/launcher or on PATH (set MOERUN)"; exit 2; }
fi

# --- the task count from the plan, checked against the allocation -----------
model_arg=()
[[ -n ${MODEL:-} ]] && model_arg=(--model "$MODEL")
if ! check=$("$MOERUN" plan check "$PLAN" "${model_arg[@]}" 2>&1); then
  echo "$check" >&2
  exit 2
fi
# It prints "plan PATH fits: N ranks = data D x pipeline P x tensor T".
world=$(sed -n 's/^plan .* fits: \([0-9][0-9]*\) ranks\{0,1\} = .*/\1/p' <<<"$check" | head -1)
[[ -n $world ]] || { log "cannot read the rank count from: $(head -1 <<<"$check")"; exit 1; }

# SLURM_TASKS_PER_NODE is always set, e.g. "8(x2)" or "4,2": sum it.
tasks=0
IFS=, read -ra groups <<<"${SLURM_TASKS_PER_NODE:-0}"
for g in "${groups[@]}"; do
  if [[ $g =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then tasks=$((tasks + BASH_REMATCH[1] * BASH_REMATCH[2])); else tasks=$((tasks + g)); fi
done
per_node=${groups[0]%%(*}
if ((tasks != world)); then
  log "the plan $PLAN needs $world ranks (data x pipeline x tensor), the allocation has $tasks tasks" \
      "(${SLURM_JOB_NUM_NODES:-?} nodes, tasks per node ${SLURM_TASKS_PER_NODE:-?});" \
      "submit with --nodes/--ntasks-per-node that multiply to $world, or change the plan"
  exit 2
fi
# Where GPUs were asked for, one rank per GPU is the layout the plans expect.
gpus=${SLURM_GPUS_ON_NODE:-0}
[[ -n ${SLURM_GPUS_PER_NODE:-}${SLURM_GPUS_PER_TASK:-}${SLURM_GPUS:-} ]] && ((gpus != per_node)) &&
  log "warning: $per_node ranks on this node but $gpus GPUs allocated to it (one rank per GPU expected)"

# --- the launch --------------------------------------------------------------
gen=("$MOERUN" generate --plan "$PLAN" "${model_arg[@]}")
[[ -n ${INPUT:-} ]] && gen+=(--input "$INPUT")
[[ -n ${OUTPUT:-} ]] && gen+=(--output "$OUTPUT")
# Since Slurm 22.05 srun no longer takes --cpus-per-task from the job: pass
# it on, and let each rank use as many threads (options after it win).
[[ -n ${SLURM_CPUS_PER_TASK:-} ]] && gen+=(--threads "$SLURM_CPUS_PER_TASK")
gen+=("$@")

case ${LAUNCHER:-srun} in
  srun)
    launch=(srun --mpi=pmix -n "$world")
    [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && launch+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
    # shellcheck disable=SC2206
    launch+=(${SRUN_ARGS:-}) ;;
  mpirun)
    # Open MPI reads the hosts and slots from the allocation (filled node by
    # node, as srun does); moerun binds each rank itself (topology.bind).
    # shellcheck disable=SC2206
    launch=(mpirun -np "$world" ${MPIRUN_ARGS:---bind-to none}) ;;
  *) log "LAUNCHER must be srun or mpirun (got '$LAUNCHER')"; exit 2 ;;
esac

log "job $job (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}: $world ranks; ${launch[*]} ${gen[*]}"

# --- signals -----------------------------------------------------------------
# USR1, the warning (#SBATCH --signal=B:USR1@T), comes to this shell only:
# pass it on to the launcher, which passes it to every rank; they flush and
# exit 75, and the job requeues itself.
# SIGTERM to this shell means the job is ending: scancel, preemption, or the
# time limit reached without a warning. slurmd sends it to every process of
# the job, the ranks included, which flush within KillWait: not passed on
# (a second signal makes moerun abandon its running requests at once).
# Requeued then only at the time limit: a cancelled job stays cancelled, and
# a preempted one is requeued by Slurm itself (PreemptMode=REQUEUE).
warned=0 ended=0 interrupted=0
# The end of the time limit, read now: once the job ends (a cancel too),
# Slurm sets EndTime to that moment.
limit_end=$(scontrol show job -o "$job" 2>/dev/null | grep -o 'EndTime=[0-9T:-]*' || true)
limit_end=$(date -d "${limit_end#EndTime=}" +%s 2>/dev/null || echo 0)
# shellcheck disable=SC2317  # called from the traps
end_of_time() { ((limit_end > 0 && $(date +%s) + 5 >= limit_end)); }
# shellcheck disable=SC2317
on_signal() {
  interrupted=1
  if [[ $1 == USR1 ]]; then
    ((warned)) && return   # once is enough
    warned=1
    log "got the warning signal (USR1) at $(date +%T): stopping the ranks (they flush and exit $STOPPED)"
    [[ -n ${child:-} ]] && kill -USR1 "$child" 2>/dev/null
  else
    log "got SIGTERM at $(date +%T): the job is ending; the ranks have it too (they flush and exit $STOPPED)"
    ((warned)) || end_of_time || ended=1
  fi
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

"${launch[@]}" "${gen[@]}" &
child=$!
# `wait` returns early (> 128) when a trapped signal arrives: wait again for
# the launcher's own status (127: already collected, keep what came before).
rc=
while :; do
  interrupted=0
  wait "$child"
  r=$?
  ((r == 127)) && [[ -n $rc ]] && break
  rc=$r
  ((interrupted && r > 128)) || break
done
child=

if ((rc == 0)); then
  log "done: every request answered"
  exit 0
fi
if ((rc != STOPPED && !warned)); then
  log "the ranks failed (status $rc): not requeued"
  exit "$rc"
fi

# --- requeue -----------------------------------------------------------------
# Stopped early with every answered line flushed: the next run of the same
# command resumes the output.
if ((ended)); then
  log "stopped (status $rc) by SIGTERM before the time limit (scancel or preemption): not requeued by" \
      "this script; to go on, resubmit the same command or run: scontrol requeue $job"
  exit "$rc"
fi
restarts=${SLURM_RESTART_COUNT:-0}
if ((restarts >= ${MAX_REQUEUES:-10})); then
  log "stopped (status $rc) after $restarts requeues (MAX_REQUEUES=${MAX_REQUEUES:-10}): not requeued again"
  exit "$rc"
fi
if scontrol requeue "$job"; then
  log "stopped (status $rc): requeued job $job; its next run resumes ${OUTPUT:-the output of the plan}"
  exit 0
fi
log "stopped (status $rc), and scontrol requeue $job failed: resubmit the same command to resume"
exit "$rc"
