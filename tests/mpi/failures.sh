#!/usr/bin/env bash
# A failing or killed rank ends the whole job within seconds, with the
# failing rank's message and a non-zero status — never a hang.  Also the
# device choice: runtime.device=cuda with no GPU refused on every rank,
# cpu and auto running as before.
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
# 3. runtime.device = cuda where no CUDA device can be had (this test runs
#    on machines without a GPU; on a GPU machine it is skipped): exit 2, and
#    every rank names where the key was set and why.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "skip runtime.device=cuda refusal (a GPU is present)"
else
  rm -f "$tmp"/out.jsonl*
  start=$(date +%s)
  timeout 60 mpirun -np 2 --bind-to none "$moerun" generate "${common[@]}" --tensor 2 --set runtime.device=cuda \
    > "$tmp/log" 2>&1
  rc=$? took=$(( $(date +%s) - start ))
  if [ $rc -eq 2 ] && [ $took -lt 30 ] &&
     grep -q "r0/2.*command line: runtime.device = cuda, but " "$tmp/log" &&
     grep -q "r1/2.*command line: runtime.device = cuda, but " "$tmp/log" && [ ! -e "$tmp/out.jsonl" ]; then
    ok "runtime.device=cuda without a GPU: exit 2 after ${took}s, both ranks say why"
  else
    bad "runtime.device=cuda without a GPU (exit $rc after ${took}s)"
  fi
  # MR_DEVICE=VALUE on 2 ranks must exit 2 with PATTERN in the log
  device_env_refused() {
    MR_DEVICE=$1 timeout 60 mpirun -np 2 --bind-to none -x MR_DEVICE "$moerun" generate "${common[@]}" --tensor 2 \
      > "$tmp/log" 2>&1
    local rc=$?
    if [ $rc -eq 2 ] && grep -q "$2" "$tmp/log"; then ok "MR_DEVICE=$1: exit 2, $3"; else bad "MR_DEVICE=$1 (exit $rc)"; fi
  }
  device_env_refused cuda "r1/2.*environment MR_DEVICE: runtime.device = cuda, but " "the message names the variable"
  device_env_refused gpu "environment MR_DEVICE=gpu: runtime.device must be one of auto, cpu, cuda" \
    "naming the variable and the choices"
fi

# 4. runtime.device = cpu and auto run as before (auto is cpu here, or on a
#    GPU machine whatever it resolves to) and give the same tokens.
head -4 "$tmp/in.jsonl" | sed 's/"max_tokens": 200/"max_tokens": 6/' > "$tmp/small.jsonl"
small=(--model "$fixture" --input "$tmp/small.jsonl" --overwrite --threads 1 --tensor 2)
timeout 60 mpirun -np 2 --bind-to none "$moerun" generate "${small[@]}" --output "$tmp/cpu.jsonl" \
  --set runtime.device=cpu > "$tmp/log" 2>&1
rc_cpu=$?
timeout 60 mpirun -np 2 --bind-to none "$moerun" generate "${small[@]}" --output "$tmp/auto.jsonl" \
  > "$tmp/log.auto" 2>&1
rc_auto=$?
if [ $rc_cpu -eq 0 ] && [ $rc_auto -eq 0 ] && grep -q "device: cpu (runtime.device = cpu" "$tmp/log" &&
   grep -q "device: " "$tmp/log.auto" && [ "$(wc -l < "$tmp/cpu.jsonl")" = 4 ] &&
   cmp -s <(grep -o '"tokens": *\[[^]]*\]' "$tmp/cpu.jsonl") <(grep -o '"tokens": *\[[^]]*\]' "$tmp/auto.jsonl"); then
  ok "runtime.device=cpu and auto: exit 0, same tokens ($(grep -o 'device: [a-z]*' "$tmp/log.auto"))"
else
  cat "$tmp/log.auto" >> "$tmp/log"
  bad "runtime.device=cpu / auto (exit $rc_cpu / $rc_auto)"
fi

# 5. comm.deterministic with a compressed tensor all-reduce: refused before
#    anything is written, exit 2 from both ranks, the message says why.
rm -f "$tmp"/det.jsonl*
timeout 60 mpirun -np 2 --bind-to none "$moerun" generate "${small[@]}" --output "$tmp/det.jsonl" \
  --set comm.deterministic=true --set comm.allreduce.compression=int8 > "$tmp/log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "comm.deterministic is on and the tensor all-reduce compresses (int8)" "$tmp/log" &&
   [ ! -e "$tmp/det.jsonl" ]; then
  ok "comm.deterministic with int8 compression: exit 2, nothing written"
else
  bad "comm.deterministic with int8 compression (exit $rc)"
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
