#!/usr/bin/env bash
# The whole test suite: set-up and build, then every ctest except the
# labels kept out of CI (slow); then, in a second tree (build-emu), the CUDA
# backend built on the CPU emulator of tests/gpu/emu and the GPU suite
# (label gpu) run on it.  Extra arguments go to ctest, e.g.
#   scripts/test.sh -L reference      only the transformers comparisons
#   MR_TEST_ALL=1 scripts/test.sh      slow checks too
#   MR_TEST_EMU=0 scripts/test.sh      without the emulator tree
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
(cd "$BUILD" && ctest --output-on-failure -j"$(nproc)" "${exclude[@]}" "$@")

# Without a GPU the gpu tests above are skipped (77); here they run the
# CUDA backend's own code on the emulator (not a GPU: tests/gpu/emu/README.md).
if [ "${MR_TEST_EMU:-1}" = 1 ] && [ $# -eq 0 ]; then
  EMU=${MR_EMU_BUILD_DIR:-build-emu}
  echo "test: the CUDA backend on the CPU emulator ($EMU)"
  cmake -S . -B "$EMU" -DMR_CUDA_EMU=ON -DCMAKE_BUILD_TYPE=${MR_BUILD_TYPE:-RelWithDebInfo} >/dev/null
  cmake --build "$EMU" -j"$(nproc)" --target test-emu test-emu-nccl test-gpu-ops test-nccl-comm check-reference \
    moerun compare-logits bench-allreduce-gpu bench-overlap-gpu bench-moe-overlap-gpu gpu-floors bench-engine
  (cd "$EMU" && ctest --output-on-failure -j"$(nproc)" -L gpu)
fi
