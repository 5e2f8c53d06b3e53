#!/usr/bin/env bash
# The multi-node sbatch template on a real local Slurm with two
# network-namespace nodes (n1, n2: 2 CPUs and 2 stand-in GPUs each, slurmd
# in each, slurmctld in n1): the fixture generation with 4 ranks (tensor 2
# x pipeline 2, the stages on different nodes) through
# slurm/generate-multinode.sbatch, with srun --mpi=pmix and with
# LAUNCHER=mpirun, must write exactly what a plain mpirun run on this host
# writes. Exit 77 (ctest skip) where no Slurm or no namespaces can run.
#   two-nodes.sh MOERUN FIXTURE_DIR
set -uo pipefail
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} != --inside ]]; then
  [[ $# == 2 && -x $1 && -d $2 ]] || { echo "usage: two-nodes.sh MOERUN FIXTURE_DIR" >&2; exit 2; }
  "$slurm_local" check 2 || exit $?
  # Nodes the size of the job: 2 ranks each, one GPU each.
  export MR_SLURM_CPUS=2 MR_SLURM_GPUS=2
  # `with` takes the Slurm lock, then netns-nodes.sh's (through its `with`),
  # brings up the nodes and Slurm, runs the checks below and always stops
  # Slurm and deletes the nodes, with whatever still runs in them.
  exec "$slurm_local" with 2 "${BASH_SOURCE[0]}" --inside "$(readlink -f "$1")" "$(readlink -f "$2")"
fi
moerun=$2 fixture=$3
inside_setup

make_input in.jsonl 24 8
make_plan tp.yaml 1 2 2    # 4 ranks: tensor 2 inside a node, pipeline 2 across the nodes
t0=$(now)
plain_run ref.jsonl tp.yaml 4 in.jsonl || { echo "FAIL: plain mpirun run (4 ranks)"; exit 1; }
echo "plain mpirun reference: $(since "$t0") s"

submit() {   # submit OUTPUT; env LAUNCHER
  PLAN=tp.yaml MODEL=$fixture INPUT=in.jsonl OUTPUT=$1 MOERUN=$moerun MOERUN_HOME=$root \
    sl sbatch --parsable --nodes=2 --ntasks-per-node=2 --gpus-per-node=2 --cpus-per-task=1 \
    "$root/slurm/generate-multinode.sbatch" "${GEN_ARGS[@]}"
}
t0=$(now)
j_srun=$(LAUNCHER=srun submit out-srun.jsonl)
j_mpirun=$(LAUNCHER=mpirun submit out-mpirun.jsonl)
check_job "generate-multinode.sbatch, srun --mpi=pmix, 2 nodes x 2 ranks" "$j_srun" ref.jsonl out-srun.jsonl \
  'on n\[1-2\]: 4 ranks; srun --mpi=pmix -n 4'
check_job "generate-multinode.sbatch, LAUNCHER=mpirun, 2 nodes x 2 ranks" "$j_mpirun" ref.jsonl out-mpirun.jsonl \
  'on n\[1-2\]: 4 ranks; mpirun -np 4'
# Where the ranks ran: both nodes, two each (Slurm's own record of the step).
for j in "$j_srun" "$j_mpirun"; do
  nodes=$(job_field "$j" NodeList)
  [[ $nodes == "n[1-2]" ]] && ok "job $j ran on $nodes" || bad "job $j ran on '$nodes', not n[1-2]"
done
echo "jobs: $(since "$t0") s; whole test inside Slurm's bring-up: $(since "$t_start") s"
summary
