#!/usr/bin/env bash
# Runs "$@" when a CUDA device is visible, else exits 77 (ctest: skipped).
#   if-gpu.sh CMD...
# In a build on the CUDA emulator (MR_CUDA_EMU=1, tests/gpu/emu) it runs.
[ "${MR_CUDA_EMU:-0}" = 1 ] && exec "$@"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "SKIP: no CUDA device visible (nvidia-smi -L)"
  exit 77
fi
exec "$@"
