#!/usr/bin/env bash
# Kill test (issue 8): a job over 240 requests (greedy, seeded and
# default-seeded sampling, one error record) is killed with SIGKILL at
# random moments -- all ranks, or one rank (mpirun then ends the others) --
# and run again each time with data = 1, 2 or 3; once a torn line is
# appended by hand.  The end: every input id answered exactly once, every
# line valid JSON, the file identical to an uninterrupted run.
#   kill-resume.sh MOERUN FIXTURE_DIR [ROUNDS]     (MR_TEST_SEED=N repeats the moments)
set -u
source "$(dirname "$0")/common.sh" "$1" "$2"
rounds=${3:-10}
seed=${MR_TEST_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
echo "kill moments from seed $seed (MR_TEST_SEED=$seed repeats them)"
make_input "$tmp/in.jsonl"
if ! "$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$tmp/ref.jsonl" > "$tmp/log" 2>&1; then
  bad "uninterrupted reference run"; summary; exit 1
fi
# Each tick of a first-stage rank sleeps 20 ms (per 10 rounds): the tiny
# model's job then takes ~60 s of ticks on one replica, so every kill lands
# before the end.
export MR_TEST_TICK_US=$((2000 * rounds))
out=$tmp/out.jsonl killed=0
for k in $(seq "$rounds"); do
  data=$(( k % 3 + 1 ))
  how=all; [ "$data" -gt 1 ] && [ $((RANDOM % 2)) = 0 ] && how=one
  delay=$(awk -v r=$((RANDOM % 1500)) 'BEGIN { printf "%.3f", 0.3 + r / 1000 }')
  start_run "$out" "$data"
  sleep "$delay"
  if [ "$how" = one ]; then
    victims=$(ranks_of | shuf -n 1 --random-source=<(yes "$seed$k"))
  else
    victims=$(ranks_of)
  fi
  kill -KILL $victims 2>/dev/null
  wait "$job"; rc=$?
  lines=$(wc -l < "$out" 2>/dev/null || echo 0)
  printf "round %2d: data %d, SIGKILL %s after %s s: exit %d, %d lines on disk\n" "$k" "$data" "$how" "$delay" "$rc" "$lines"
  [ "$rc" != 0 ] && killed=$((killed + 1))
done
[ "$killed" -ge $((rounds * 7 / 10)) ] && ok "$killed of $rounds runs were killed before their end" ||
  bad "only $killed of $rounds runs were killed before their end"
unset MR_TEST_TICK_US
grep -q '"state": "running"' "$out.manifest.json" && ok "the job was still unfinished after the last kill" ||
  bad "the job finished before the last kill"
# a torn write, as a crash in the middle of a line (or a full disk) leaves it
printf '{"id": "q7", "tokens": [1, 2' >> "$out"
start_run "$out" 2
wait "$job"; rc=$?
[ "$rc" = 0 ] && ok "the last resume (data 2) completes" || bad "the last resume exits $rc"
cut=$(sed -n 's/.*cutting \([0-9]*\) bytes after the last whole recorded line.*/\1/p' "$tmp/log")
[ "${cut:-0}" -ge 28 ] && ok "the torn line was cut off ($cut bytes)" || bad "no message about the torn line"
if python3 "$here/check-jsonl.py" "$out" "$tmp/in.jsonl" "$tmp/ref.jsonl" > "$tmp/check" 2>&1; then
  ok "$(cat "$tmp/check")"
else
  bad "ids, JSON or results:"; cat "$tmp/check"
fi
cmp -s "$out" "$tmp/ref.jsonl" && ok "the output is byte-identical to the uninterrupted run (input order)" ||
  bad "the output differs from the uninterrupted run"
grep -q '"state": "complete"' "$out.manifest.json" && [ ! -e "$out.journal" ] && ok "manifest complete, journal gone" ||
  bad "manifest state / journal after completion"
summary
