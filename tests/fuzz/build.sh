#!/bin/sh
# Build the libFuzzer targets of tests/fuzz/ with clang, AddressSanitizer and
# UBSan, compiling the runtime sources they need directly (no CMake).
#
#   tests/fuzz/build.sh [OUT_DIR [TARGET...]]
#       OUT_DIR default: build/fuzz/ in the repo (git-ignored);
#       TARGET: fuzz-gguf, fuzz-safetensors, fuzz-tokenizer (default: all)
#
# Needs clang and its libFuzzer runtime (Debian 12: apt-get install -y clang
# libclang-rt-14-dev), jansson and PCRE2 (pkg-config jansson libpcre2-8).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/fuzz}
[ $# -gt 0 ] && shift
TARGETS=${*:-fuzz-gguf fuzz-safetensors fuzz-tokenizer}
CC=${CC:-clang}
mkdir -p "$OUT"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
-fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter -I$ROOT $(pkg-config --cflags jansson libpcre2-8)"
LIBS="$(pkg-config --libs jansson libpcre2-8) -lm"
R=$ROOT/runtime

for t in $TARGETS; do
  case $t in
    fuzz-gguf) SRC="$R/gguf.c $R/gguf-config.c $R/gguf-quant.c $R/safetensors.c $R/config.c $R/status.c" ;;
    fuzz-safetensors) SRC="$R/safetensors.c $R/status.c" ;;
    fuzz-tokenizer) SRC="$R/tokenizer.c $R/tokenizer-json.c $R/tokenizer-encode.c $R/tokenizer-decode.c \
$R/tokenizer-nfc.c $R/tokenizer-nfc-table.c $R/status.c" ;;
    *) echo "build.sh: unknown target $t" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  $CC $CFLAGS "$ROOT/tests/fuzz/$t.c" $SRC -o "$OUT/$t.tmp" $LIBS
  mv "$OUT/$t.tmp" "$OUT/$t"   # a parallel reader never sees half a binary
  echo "built $OUT/$t"
done
