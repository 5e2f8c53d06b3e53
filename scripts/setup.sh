#!/usr/bin/env bash
# Installs what moerun needs on Debian 12 (only packages that are missing),
# then configures and builds into ./build.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhwloc-dev hwloc
      libyaml-dev libucx-dev libopenblas-dev libpcre2-dev libjansson-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

BUILD=${MR_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=${MR_BUILD_TYPE:-RelWithDebInfo} ${MR_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
echo "setup: built $BUILD/launcher/moerun"
