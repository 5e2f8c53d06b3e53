#!/usr/bin/env bash
# SIGTERM test (issue 8): a job signalled mid-run stops admitting
# requests, flushes, and exits 75 on every rank within 10 s; the lines on
# disk are whole, valid and equal to an uninterrupted run's; running it
# again completes the rest.  Signals: SIGTERM to a one-rank job, SIGUSR1
# to mpirun (which forwards it), SIGTERM to one tensor rank only, to the
# last pipeline stage only, and two SIGTERMs (stop at once, despite a long
# grace).
#   signal-stop.sh MOERUN FIXTURE_DIR
set -u
source "$(dirname "$0")/common.sh" "$1" "$2"
make_input "$tmp/in.jsonl"
if ! "$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$tmp/ref.jsonl" > "$tmp/log" 2>&1; then
  bad "uninterrupted reference run"; summary; exit 1
fi
export MR_TEST_TICK_US=8000
out=$tmp/out.jsonl

# case NAME NP SIGNAL TARGET [options]: TARGET is mpirun, all, or a rank index
case_() {
  local name=$1 np=$2 sig=$3 target=$4; shift 4
  rm -f "$out" "$out".*
  start_run "$out" "$np" "$@"
  sleep 2
  local pids
  case $target in
    mpirun) pids=$job ;;
    all) pids=$(ranks_of) ;;
    *) pids=$(ranks_of | sort -n | sed -n "$((target + 1))p") ;;
  esac
  local t0; t0=$(now)
  for s in $sig; do kill -"$s" $pids; sleep 0.01; done
  wait "$job"; local rc=$?
  local took; took=$(elapsed "$t0")
  local lines; lines=$(wc -l < "$out")
  if [ "$rc" = 75 ] && awk -v t="$took" 'BEGIN { exit !(t < 10) }'; then
    ok "$name: exit 75 after ${took} s, $lines of 240 lines on disk"
  else
    bad "$name: exit $rc after ${took} s (want 75 within 10 s)"
  fi
  if python3 "$here/check-jsonl.py" "$out" "$tmp/in.jsonl" "$tmp/ref.jsonl" --partial > "$tmp/check" 2>&1 &&
     [ "$lines" -gt 0 ] && [ "$lines" -lt 240 ] && grep -q '"state": "stopped"' "$out.manifest.json"; then
    ok "$name: lines whole, valid, equal to the reference; manifest says stopped"
  else
    bad "$name: the stopped output:"; cat "$tmp/check"
  fi
}

case_ "SIGTERM, one rank" 1 TERM all
case_ "SIGUSR1 to mpirun, data 2" 2 USR1 mpirun
case_ "SIGTERM to tensor rank 1 of 2" 2 TERM 1 --tensor 2 --data 1
case_ "SIGTERM to pipeline stage 1 of 2" 2 TERM 1 --pipeline 2 --data 1
# long requests: still running when the second signal comes 10 ms later
make_long_input "$tmp/long.jsonl"; cp "$tmp/in.jsonl" "$tmp/short.jsonl"; cp "$tmp/long.jsonl" "$tmp/in.jsonl"
env -u MR_TEST_TICK_US "$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$tmp/ref.jsonl" --overwrite \
  > "$tmp/log" 2>&1 ||
  bad "reference of the long requests"
case_ "two SIGTERMs with --stop-grace 600" 2 "TERM TERM" all --stop-grace 600
[ "$(grep -c 'stopping now; running requests are abandoned' "$tmp/log")" = 2 ] &&
  ok "the second SIGTERM abandoned the running requests on both ranks" || bad "no stop-now after the second SIGTERM"

# The last stopped job, resumed with another plan, completes the rest.
unset MR_TEST_TICK_US
start_run "$out" 2
wait "$job"; rc=$?
if [ "$rc" = 0 ] && cmp -s "$out" "$tmp/ref.jsonl"; then
  ok "the resume (data 2) completes; output identical to the uninterrupted run"
else
  bad "the resume: exit $rc"; python3 "$here/check-jsonl.py" "$out" "$tmp/in.jsonl" "$tmp/ref.jsonl"
fi
summary
