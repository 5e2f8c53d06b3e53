#!/usr/bin/env bash
# Resume refusals (issue 8): against an existing output and its manifest,
# a changed input, model, tokenizer or generation setting is refused with
# exit 2 on every rank and a message naming what changed, and the output is
# left as it was; plan sizes and batching may change.  Also: --resume with
# nothing to resume, an output without manifest, a damaged manifest,
# --overwrite.
#   refuse.sh MOERUN FIXTURE_DIR OTHER_FIXTURE_DIR
set -u
source "$(dirname "$0")/common.sh" "$1" "$2"
other=$3
make_input "$tmp/in.jsonl"
out=$tmp/out.jsonl
# a stopped job to resume from: SIGTERM during a slowed run
MR_TEST_TICK_US=8000 start_run "$out" 1
sleep 1.5; kill -TERM "$job"; wait "$job"; rc=$?
[ "$rc" = 75 ] && ok "a stopped job to resume from ($(wc -l < "$out") lines)" || bad "setup: exit $rc"
cp "$out" "$tmp/before.jsonl"; cp "$out.manifest.json" "$tmp/before.manifest"

# refused NAME WANT-REGEX NP [options]: exit 2 on every rank, message, nothing touched
refused() {
  local name=$1 want=$2 np=$3; shift 3
  if [ "$np" = 1 ]; then
    "$moerun" generate "${common[@]}" --output "$out" "$@" > "$tmp/log" 2>&1
  else
    timeout 60 mpirun -np "$np" --bind-to none "$moerun" generate "${common[@]}" --output "$out" --data "$np" "$@" \
      > "$tmp/log" 2>&1
  fi
  local rc=$?
  if [ "$rc" = 2 ] && grep -Eq "$want" "$tmp/log" && cmp -s "$out" "$tmp/before.jsonl" &&
     cmp -s "$out.manifest.json" "$tmp/before.manifest"; then
    ok "$name: exit 2, \"$(grep -Eo "$want" "$tmp/log" | head -1)\""
  else
    bad "$name: exit $rc, want 2 and /$want/ with the output untouched"
  fi
}

cp "$tmp/in.jsonl" "$tmp/in2.jsonl"; echo '{"id": "new", "tokens": [5, 6]}' >> "$tmp/in2.jsonl"
refused "input with one more line" "input changed: sha256 was [0-9a-f]{64}, now [0-9a-f]{64}" 1 --input "$tmp/in2.jsonl"
grep -q "input changed: requests was 240, now 241" "$tmp/log" && ok "... and names the request count" ||
  bad "no request count in the message"
refused "another model" "model changed: fingerprint was [0-9a-f]{64}, now [0-9a-f]{64}" 1 --input "$tmp/in.jsonl" \
  --model "$other"
refused "temperature 0.7, on 2 ranks" "generation changed: temperature was 0, now 0.7" 2 --input "$tmp/in.jsonl" \
  --temperature 0.7
[ "$(grep -c 'generation changed: temperature' "$tmp/log")" = 1 ] && ok "... rank 0 says it once" ||
  bad "... the message count"
refused "max_tokens and seed" "generation changed: max_tokens was 128, now 64" 1 --input "$tmp/in.jsonl" \
  --max-tokens 64 --seed 3
grep -q "generation changed: seed was 0, now 3" "$tmp/log" && grep -q "2 settings differ" "$tmp/log" &&
  ok "... every differing setting is named" || bad "... not every setting named"
refused "--resume --overwrite" "contradict" 1 --input "$tmp/in.jsonl" --resume --overwrite
cp "$out.manifest.json" "$tmp/keep"; echo '{"format": "moerun-output-manifest", "version": 1, ' > "$out.manifest.json"
cp "$out.manifest.json" "$tmp/before.manifest"
refused "damaged manifest" "damaged manifest; pass --overwrite" 1 --input "$tmp/in.jsonl"
mv "$tmp/keep" "$out.manifest.json"; cp "$out.manifest.json" "$tmp/before.manifest"

# allowed: another data size and batch; the resume completes the job
timeout 60 mpirun -np 2 --bind-to none "$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$out" \
  --data 2 --max-batch 3 > "$tmp/log" 2>&1; rc=$?
[ "$rc" = 0 ] && grep -q "resuming .* with parallel.data = 2 (was 1)" "$tmp/log" &&
  ok "data 2 and max_batch 3 may change: resumed and completed" || bad "resume with data 2: exit $rc"
"$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$out" --resume > "$tmp/log" 2>&1; rc=$?
[ "$rc" = 0 ] && ok "a complete job run again: exit 0, nothing to do" || bad "complete job again: exit $rc"

# without a manifest
rm "$out.manifest.json"; cp "$out" "$tmp/before.jsonl"
"$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$out" > "$tmp/log" 2>&1; rc=$?
[ "$rc" = 2 ] && grep -q "already exists and is not empty" "$tmp/log" && cmp -s "$out" "$tmp/before.jsonl" &&
  ok "an output without manifest is refused and kept" || bad "output without manifest: exit $rc"
"$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$tmp/none.jsonl" --resume > "$tmp/log" 2>&1; rc=$?
[ "$rc" = 2 ] && grep -q "nothing to resume" "$tmp/log" && ok "--resume with nothing to resume: exit 2" ||
  bad "--resume with nothing to resume: exit $rc"
"$moerun" generate "${common[@]}" --input "$tmp/in.jsonl" --output "$out" --overwrite --temperature 0.7 \
  > "$tmp/log" 2>&1; rc=$?
[ "$rc" = 0 ] && grep -q '"generation.temperature": "0.7"' "$out.manifest.json" &&
  ok "--overwrite starts over with the new settings" || bad "--overwrite: exit $rc"
summary
