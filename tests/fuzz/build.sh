#!/bin/sh
# Build the libFuzzer targets of tests/fuzz/ with clang, AddressSanitizer and
# UBSan, compiling the runtime sources they need directly (no CMake).
#
#   tests/fuzz/build.sh [OUT_DIR]        (default: build/fuzz/ in the repo, git-ignored)
#
# Needs clang and its libFuzzer runtime (Debian 12: apt-get install -y clang
# libclang-rt-14-dev) and jansson (pkg-config jansson).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/fuzz}
CC=${CC:-clang}
mkdir -p "$OUT"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
-fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter -I$ROOT $(pkg-config --cflags jansson)"
LIBS="$(pkg-config --libs jansson) -lm"
R=$ROOT/runtime

# shellcheck disable=SC2086
$CC $CFLAGS "$ROOT/tests/fuzz/fuzz-gguf.c" "$R/gguf.c" "$R/gguf-quant.c" "$R/safetensors.c" \
    "$R/config.c" "$R/status.c" -o "$OUT/fuzz-gguf" $LIBS
# shellcheck disable=SC2086
$CC $CFLAGS "$ROOT/tests/fuzz/fuzz-safetensors.c" "$R/safetensors.c" "$R/status.c" \
    -o "$OUT/fuzz-safetensors" $LIBS
echo "built $OUT/fuzz-gguf $OUT/fuzz-safetensors"
