#!/bin/sh
# One short fuzzing run for ctest (label `fuzz`): build TARGET into
# BUILD_DIR/fuzz with tests/fuzz/build.sh, copy its seeds to a scratch folder
# in BUILD_DIR (libFuzzer writes new inputs there; the source tree is left
# alone) and fuzz for SECONDS.  Exit 77 (skip) when clang or its libFuzzer
# runtime is missing; non-zero with the crashing input's path on a finding.
#
#   tests/fuzz/ctest-fuzz.sh TARGET BUILD_DIR SECONDS MAX_LEN
set -eu
T=$1 BUILD=$2 SECS=$3 MAXLEN=$4
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$BUILD/fuzz
CC=${CC:-clang}
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "$T: skipped: $CC not found (apt-get install clang libclang-rt-14-dev; scripts/test.sh does)"
  exit 77
fi
mkdir -p "$OUT"
probe=$(mktemp -d "$OUT/probe.XXXXXX")
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
  > "$probe/p.c"
if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
  cat "$probe/err"
  rm -rf "$probe"
  echo "$T: skipped: $CC cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)"
  exit 77
fi
rm -rf "$probe"
"$ROOT/tests/fuzz/build.sh" "$OUT" "$T"
work=$(mktemp -d "$OUT/work-$T.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$ROOT/tests/fuzz/corpus/$T/"* "$work/"
art=$OUT/artifacts/$T-$(date +%Y%m%d-%H%M%S)-$$/
mkdir -p "$art"
echo "$T: fuzzing for $SECS s over $(ls "$work" | wc -l) seeds"
set +e
"$OUT/$T" -max_total_time="$SECS" -max_len="$MAXLEN" -print_final_stats=1 -artifact_prefix="$art" \
  "$work" >"$work.log" 2>&1
rc=$?
set -e
grep -v -E '^#[0-9]+.*(NEW|REDUCE|pulse)' "$work.log" | tail -n 40
rm -f "$work.log"
if [ $rc -ne 0 ] || [ -n "$(ls -A "$art")" ]; then
  echo "$T: FAILED (exit $rc): crashing inputs in $art (replay: $OUT/$T FILE)"
  exit 1
fi
rmdir "$art"
echo "$T: no findings"
