#!/usr/bin/env bash
# A failing or killed rank ends the whole job within seconds, with the
# failing rank's message and a non-zero status — never a hang.
#   failures.sh MOERUN FIXTURE_DIR
set -u
moerun=$1 fixture=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d /tmp/mr-fail-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); sed 's/^/     /' "$tmp/log" | tail -8; }

awk 'BEGIN { for (i = 0; i < 300; i++) printf "{\"id\": %d, \"tokens\": [%d, %d, %d], \"max_tokens\": 200}\n", i, 5 + i % 400, 7, 9 }' \
  > "$tmp/in.jsonl"
common=(--model "$fixture" --input "$tmp/in.jsonl" --output "$tmp/out.jsonl" --overwrite --ignore-eos --threads 1)

# 1. Rank 1 of 2 cannot read its checkpoint (the others can).
start=$(date +%s)
MR_TEST_FAIL_RANK=1 timeout 60 mpirun -np 2 --bind-to none -x MR_TEST_FAIL_RANK "$moerun" generate "${common[@]}" \
  --tensor 2 > "$tmp/log" 2>&1
rc=$? took=$(( $(date +%s) - start ))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 30 ] && grep -q "r1/2.*missing-on-rank-1" "$tmp/log"; then
  ok "missing checkpoint on rank 1: exit $rc after ${took}s with rank 1's message"
else
  bad "missing checkpoint on rank 1 (exit $rc after ${took}s)"
fi

# 2. Rank 1 of 2 is killed mid-run.
start=$(date +%s)
timeout 60 mpirun -np 2 --bind-to none "$moerun" generate "${common[@]}" --tensor 2 --max-batch 1 > "$tmp/log" 2>&1 &
job=$!
for _ in $(seq 50); do # wait until both ranks run
  [ "$(pgrep -f "moerun generate --model $fixture" | wc -l)" -ge 2 ] && break; sleep 0.1
done
sleep 1.5
victim=$(pgrep -f "moerun generate --model $fixture" | sort -n | tail -1)
kill -KILL "$victim" 2>/dev/null
wait $job
rc=$? took=$(( $(date +%s) - start ))
if [ -n "$victim" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 30 ]; then
  ok "killed rank: job ended with exit $rc after ${took}s"
else
  bad "killed rank (victim ${victim:-none}, exit $rc after ${took}s)"
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
