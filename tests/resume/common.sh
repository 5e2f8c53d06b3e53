# Shared by the resume tests: the input, the reference run, helpers.
#   source common.sh MOERUN FIXTURE_DIR   (sets moerun, fixture, here, tmp, common[])
moerun=$1 fixture=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d /tmp/mr-resume-XXXXXX)
trap 'kill_all 2>/dev/null; rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); [ -f "$tmp/log" ] && sed 's/^/     /' "$tmp/log" | grep -v '^ *[0-9]* *[0-9] ' | tail -8; }
summary() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; }

# 240 requests of 3..11 prompt tokens and 4..40 new ones: greedy, sampled
# with their own seed, sampled with the default seed (its stream comes from
# the request id), and one token outside the vocabulary (an error record).
make_input() {
  awk 'BEGIN {
    for (i = 0; i < 240; i++) {
      n = 3 + i % 9; s = "";
      for (j = 0; j < n; j++) s = s (j ? "," : "") (5 + (i * 37 + j * 11) % 400);
      if (i == 100) s = s ",100000";
      k = i % 4;
      extra = k == 1 ? ", \"temperature\": 0.8, \"top_p\": 0.9, \"seed\": " i : k == 2 ? ", \"temperature\": 1.0, \"top_k\": 40" : "";
      printf "{\"id\": \"q%d\", \"tokens\": [%s], \"max_tokens\": %d%s}\n", i, s, 4 + (i * 7) % 37, extra;
    } }' > "$1"
}

# The same prompts, each asking for 150 new tokens (long enough to be
# running when a signal comes).
make_long_input() { sed 's/"max_tokens": [0-9]*/"max_tokens": 150/' "$tmp/in.jsonl" > "$1"; }

common=(--model "$fixture" --ignore-eos --threads 1 --max-batch 2 --quiet --progress-interval 0)

# A run in the background: plain with data = 1, else under mpirun.
#   start_run OUT DATA [moerun options...]; sets $job (the pid to wait for)
start_run() {
  local out=$1 data=$2; shift 2
  if [ "$data" = 1 ]; then
    "$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$out" "$@" > "$tmp/log" 2>&1 &
  else
    local pass_env=(); [ -n "${MR_TEST_TICK_US:-}" ] && pass_env=(-x MR_TEST_TICK_US)
    mpirun -np "$data" --bind-to none "${pass_env[@]}" "$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" \
      --output "$out" --data "$data" "$@" > "$tmp/log" 2>&1 &
  fi
  job=$!
}
# The moerun processes of $job (itself, or mpirun's children).
ranks_of() {
  if [ "$(cat /proc/"$job"/comm 2>/dev/null)" = mpirun ]; then pgrep -P "$job" -x moerun; else echo "$job"; fi
}
kill_all() { [ -n "${job:-}" ] && kill -KILL $(ranks_of) "$job" 2>/dev/null; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
