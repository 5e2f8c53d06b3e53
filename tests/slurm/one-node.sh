#!/usr/bin/env bash
# The sbatch templates on a real local Slurm with one node (this machine:
# 4 CPUs on 2 sockets, 4 GPUs that are stand-ins): the fixture generation
# through slurm/generate.sbatch (srun --mpi=pmix, and LAUNCHER=mpirun) and
# slurm/generate-cpu.sbatch must write exactly what a plain mpirun run of
# the same plan writes; a plan that does not fit the allocation is refused
# before any rank starts. Exit 77 (ctest skip) where no Slurm can run.
#   one-node.sh MOERUN FIXTURE_DIR
set -uo pipefail
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} != --inside ]]; then
  [[ $# == 2 && -x $1 && -d $2 ]] || { echo "usage: one-node.sh MOERUN FIXTURE_DIR" >&2; exit 2; }
  "$slurm_local" check host || exit $?
  # `with` takes the lock, brings Slurm up, runs the checks below and always
  # stops every daemon and job it started (trap on EXIT, also on a signal).
  exec "$slurm_local" with host "${BASH_SOURCE[0]}" --inside "$(readlink -f "$1")" "$(readlink -f "$2")"
fi
moerun=$2 fixture=$3
inside_setup

make_input in.jsonl 24 8
make_plan tp.yaml 1 2 2    # 4 ranks: tensor 2 x pipeline 2
make_plan dp.yaml 2 1 1    # 2 ranks, one replica per socket (the CPU template's layout)
t0=$(now)
plain_run ref-tp.jsonl tp.yaml 4 in.jsonl || { echo "FAIL: plain mpirun run (4 ranks)"; exit 1; }
plain_run ref-dp.jsonl dp.yaml 2 in.jsonl || { echo "FAIL: plain mpirun run (2 ranks)"; exit 1; }
echo "plain mpirun references: $(since "$t0") s"

# The templates as they are, with the sizes of this node on the command line
# (command-line options win over #SBATCH lines). All submitted at once;
# Slurm runs them one after another (--exclusive).
submit() {   # submit OUTPUT PLAN TEMPLATE [sbatch options]; env LAUNCHER
  local out=$1 plan=$2 template=$3; shift 3
  PLAN=$plan MODEL=$fixture INPUT=in.jsonl OUTPUT=$out MOERUN=$moerun MOERUN_HOME=$root \
    sl sbatch --parsable "$@" "$root/slurm/$template" "${GEN_ARGS[@]}"
}
t0=$(now)
node=(--ntasks-per-node=4 --gpus-per-node=4 --cpus-per-task=1)
j_srun=$(LAUNCHER=srun submit out-srun.jsonl tp.yaml generate.sbatch "${node[@]}")
j_mpirun=$(LAUNCHER=mpirun submit out-mpirun.jsonl tp.yaml generate.sbatch "${node[@]}")
j_cpu=$(submit out-cpu.jsonl dp.yaml generate-cpu.sbatch --cpus-per-task=2)
j_bad=$(submit out-bad.jsonl tp.yaml generate.sbatch --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1)

check_job "generate.sbatch, srun --mpi=pmix, 4 ranks" "$j_srun" ref-tp.jsonl out-srun.jsonl '4 ranks; srun --mpi=pmix -n 4'
check_job "generate.sbatch, LAUNCHER=mpirun, 4 ranks" "$j_mpirun" ref-tp.jsonl out-mpirun.jsonl '4 ranks; mpirun -np 4'
check_job "generate-cpu.sbatch (partition cpu, one rank per socket), 2 ranks" "$j_cpu" ref-dp.jsonl out-cpu.jsonl \
  '2 ranks; srun --mpi=pmix -n 2 --cpus-per-task=2'

st=$(job_wait "$j_bad" 120) code=$(job_field "$j_bad" ExitCode)
if [[ $st == FAILED && $code == 2:0 && ! -e out-bad.jsonl ]] &&
   grep -q "needs 4 ranks (data x pipeline x tensor), the allocation has 2 tasks" "$(job_log "$j_bad")"; then
  ok "4-rank plan on a 2-task allocation: refused before any rank started (exit 2)"
else
  bad "4-rank plan on a 2-task allocation: job $j_bad $st, exit $code"; cat "$(job_log "$j_bad")"
fi
echo "jobs: $(since "$t0") s; whole test inside Slurm's bring-up: $(since "$t_start") s"
summary
