#!/usr/bin/env bash
# Runs "$@" when a CUDA device is visible, else exits 77 (ctest: skipped).
#   if-gpu.sh CMD...
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "SKIP: no CUDA device visible (nvidia-smi -L)"
  exit 77
fi
exec "$@"
