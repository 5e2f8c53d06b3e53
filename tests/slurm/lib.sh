# shellcheck shell=bash disable=SC2154  # moerun, fixture, tmp: set by the test that sources this
# Sourced by the tests in tests/slurm/: the fixture job, plain mpirun
# references, and submitting and watching jobs on the local Slurm that
# scripts/slurm-local.sh brought up.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
slurm_local=$root/scripts/slurm-local.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Options of every generation here, as in tests/mpi/plan-matrix.sh.
GEN_ARGS=(--threads 1 --ignore-eos --max-batch 4 --token-budget 16)

sl() { "$slurm_local" run "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

# make_input FILE N MAX_TOKENS: N token-id requests of different lengths,
# every third one sampled with its own seed.
# Inside `slurm-local.sh with`: a scratch folder (kept with MR_TEST_KEEP=1)
# as the working directory, removed on any exit; $t_start.
inside_setup() {
  tmp=$(mktemp -d /tmp/mr-slurm-XXXXXX)
  trap '[[ ${MR_TEST_KEEP:-0} == 1 ]] && echo "kept $tmp" || rm -rf "$tmp"' EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  cd "$tmp" || exit 1
  t_start=$(now)
}

make_input() {
  awk -v n="$2" -v mt="$3" 'BEGIN {
    for (i = 0; i < n; i++) {
      k = 3 + (i * 7) % 23; s = "";
      for (j = 0; j < k; j++) s = s (j ? "," : "") (3 + (i * 131 + j * 17) % 500);
      extra = (i % 3 == 2) ? ", \"temperature\": 0.8, \"top_p\": 0.9, \"seed\": " i : "";
      printf "{\"id\": \"r%d\", \"tokens\": [%s], \"max_tokens\": %d%s}\n", i, s, mt + i % 5, extra;
    } }' >"$1"
}

# make_plan FILE DATA TENSOR PIPELINE
make_plan() {
  printf 'parallel:\n  data: %d\n  tensor: %d\n  pipeline: %d\n' "$2" "$3" "$4" >"$1"
}

# plain_run OUT PLAN NP INPUT: the same generation under a plain mpirun on
# this host, no Slurm: what every job here must reproduce.
plain_run() {
  timeout 300 mpirun -np "$3" --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 \
    "$moerun" generate --plan "$2" --model "$fixture" --input "$4" --output "$1" --quiet "${GEN_ARGS[@]}"
}

# job_field ID KEY: one field of `scontrol show job` (JobState, ExitCode, Restarts, ...)
job_field() { sl scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# job_wait ID SECONDS: until the job has finished (any end state); prints it.
job_wait() {
  local id=$1 limit=$2 t0 st
  t0=$(now)
  while :; do
    st=$(job_field "$id" JobState)
    case $st in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) echo "$st"; return 0 ;;
    esac
    if awk -v a="$(since "$t0")" -v b="$limit" 'BEGIN {exit !(a > b)}'; then echo "TIMEOUT_WAITING($st)"; return 1; fi
    sleep 0.1
  done
}

# job_log ID: the job's log, written by the template (--output=%x-%j.out) in
# the folder it was submitted from.
job_log() { ls "$tmp"/*-"$1".out 2>/dev/null | head -1; }

pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
summary() { echo "$pass passed, $fail failed"; ((fail == 0)); }

# check_job NAME ID REF OUT [LOG_PATTERN]: finished COMPLETED with exit 0,
# output identical to the plain run's, and the log has the pattern.
check_job() {
  local name=$1 id=$2 ref=$3 out=$4 pattern=${5:-} st code log
  st=$(job_wait "$id" 120)
  log=$(job_log "$id")
  code=$(job_field "$id" ExitCode)
  if [[ $st != COMPLETED || $code != 0:0 ]]; then
    bad "$name: job $id $st, exit $code"; tail -20 "$log"; return
  fi
  if ! cmp -s "$ref" "$out"; then
    bad "$name: output differs from the plain mpirun run's"; diff <(head -3 "$ref") <(head -3 "$out"); return
  fi
  if [[ -n $pattern ]] && ! grep -qE "$pattern" "$log"; then
    bad "$name: log has no '$pattern'"; cat "$log"; return
  fi
  ok "$name: job $id, output identical to plain mpirun ($(wc -l <"$out") lines)"
}
