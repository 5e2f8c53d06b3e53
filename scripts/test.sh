#!/usr/bin/env bash
# The whole test suite: set-up and build, then every ctest except the
# labels kept out of CI (slow).  Extra arguments go to ctest, e.g.
#   scripts/test.sh -L reference      only the transformers comparisons
#   MR_TEST_ALL=1 scripts/test.sh      slow checks too
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The fuzz tests (label fuzz) need clang and its libFuzzer runtime; without
# them they are skipped, so install them here (only when missing).
missing=()
for p in clang libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
BUILD=${MR_BUILD_DIR:-build}
exclude=(-LE 'slow')
[ "${MR_TEST_ALL:-0}" = 1 ] && exclude=()
cd "$BUILD"
ctest --output-on-failure -j"$(nproc)" "${exclude[@]}" "$@"
