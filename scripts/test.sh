#!/usr/bin/env bash
# The whole test suite: set-up and build, then every ctest except the
# labels kept out of CI (slow).  Extra arguments go to ctest, e.g.
#   scripts/test.sh -L reference      only the transformers comparisons
#   MR_TEST_ALL=1 scripts/test.sh      slow checks too
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD=${MR_BUILD_DIR:-build}
exclude=(-LE 'slow')
[ "${MR_TEST_ALL:-0}" = 1 ] && exclude=()
cd "$BUILD"
ctest --output-on-failure -j"$(nproc)" "${exclude[@]}" "$@"
