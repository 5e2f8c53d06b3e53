#!/usr/bin/env bash
# One command for the GPU machine: builds the CUDA backend and the GPU test,
# runs them, measures the GPU's floors, and writes a markdown report.
#
#   tests/gpu/run.sh                  # on the GPU machine, from anywhere
#   tests/gpu/run.sh --check-prefix   # anywhere: only the Debian-prefix steps
#                                     # (unpack, .pc rewrite, cmake configure
#                                     # and build against the prefix, ctest -L unit)
#   tests/gpu/run.sh --build-only     # anywhere with nvcc: both builds, no runs
#
# The GPU machine has the CUDA toolkit, cuBLAS and a C compiler, but none of
# the Debian libraries the project needs (Open MPI, hwloc, libyaml, jansson,
# pcre2, OpenBLAS).  So there are two builds:
#   1. plain: nvcc and cc command lines, no CMake, no pkg-config: the CUDA
#      kernels, the CPU backend as the reference (OpenBLAS if its header is
#      found, else tests/gpu/naive-cblas.c), test-gpu-ops and gpu-floors.
#      This one always runs.
#   2. cmake: the whole project, when MR_DEBS_ROOT (default .gpu-debs, made
#      by scripts/gpu-debs.sh on the Debian machine and carried along) holds
#      the .deb files: they are unpacked into a private prefix (dpkg -x), their
#      .pc files rewritten to point into it, and cmake runs with
#      PKG_CONFIG_LIBDIR set to the prefix only; then `ctest -L gpu`.
# Then compute-sanitizer (memcheck, racecheck) on test-gpu-ops where the
# tool exists, gpu-floors, and the report.
#
# Environment: OUT (report folder; else bench/results), MR_DEBS_ROOT,
# MR_CUDA_ARCH (default 90), MR_GPU_WORK (default /tmp/mr-gpu),
# MR_GPU_CMAKE=0 (skip build 2), MR_GPU_SANITIZE=0, MR_GPU_SUITE=1 (also
# ctest -L unit in build 2), MR_GPU_QUICK=1 (short floors).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=${1:-all}
ARCH=${MR_CUDA_ARCH:-90}
WORK=${MR_GPU_WORK:-/tmp/mr-gpu}
DEBS=${MR_DEBS_ROOT:-$ROOT/.gpu-debs}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ -n "${OUT:-}" ]; then OUTDIR=$OUT; REPORT=$OUT/gpu-report.md; FLOORS=$OUT/gpu-floors.json
else OUTDIR=$ROOT/bench/results; REPORT=$OUTDIR/gpu-report-$STAMP.md; FLOORS=$OUTDIR/gpu-floors-$STAMP.json; fi
mkdir -p "$WORK" "$OUTDIR"
NPROC=$(nproc 2>/dev/null || echo 4)
P=$WORK/prefix            # the unpacked Debian packages
L=$P/usr/lib/x86_64-linux-gnu
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CC=${CC:-$(command -v gcc || command -v cc)}
declare -a SUMMARY=()     # "step | result" lines for the report
note() { SUMMARY+=("$1"); echo "== $1"; }
secs() { echo $(( $(date +%s) - $1 )); }
# Run a program with the prefix's libraries (their own dependencies such as
# libgfortran are found through LD_LIBRARY_PATH only: RUNPATH is not used
# for indirect ones).
in_prefix() {
  if [ -n "$HAVE_PREFIX" ]; then env LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
  else "$@"; fi
}

# ---- the Debian prefix ----------------------------------------------------

deb_x() { # unpack one .deb into $P, with dpkg-deb or with ar + tar
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$P"; return; fi
  local t; t=$(mktemp -d)
  (cd "$t" && ar x "$1" && tar -xf data.tar.* -C "$P"); local rc=$?
  rm -rf "$t"; return $rc
}

deb_sonames() { # the lib*.so.N names a .deb ships
  dpkg-deb -c "$1" 2>/dev/null | awk '{print $6}' | sed -n 's|.*/\(lib[^/]*\.so\.[0-9][0-9]*\)$|\1|p'
}

make_prefix() {
  [ -n "$(ls "$DEBS"/*.deb 2>/dev/null)" ] || { note "prefix | no .deb files in $DEBS (run scripts/gpu-debs.sh where apt works, carry the folder)"; return 1; }
  rm -rf "$P"; mkdir -p "$P/bin"
  local n=0 nb=0 d so
  for d in "$DEBS"/*.deb; do deb_x "$d" || return 1; n=$((n + 1)); done
  # base/: libraries most images have; take one only where the machine lacks it.
  for d in "$DEBS"/base/*.deb; do
    [ -e "$d" ] || continue
    for so in $(deb_sonames "$d"); do
      if ! ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$so "; then deb_x "$d"; nb=$((nb + 1)); break; fi
    done
  done
  # .pc files: absolute /usr paths -> the prefix (variables and -I/-L flags).
  find "$P" -name '*.pc' -type f -exec sed -i \
    -e "s|^\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=[[:space:]]*/usr|\1=$P/usr|" \
    -e "s|-I/usr/|-I$P/usr/|g" -e "s|-L/usr/|-L$P/usr/|g" {} +
  # Links that Debian's maintainer scripts would make (alternatives) are not
  # needed: openblas.pc is read from openblas-pthread/pkgconfig directly, and
  # the wrappers below call mpicc.openmpi and pkgconf by their own names.
  PKGDIRS=$L/pkgconfig:$P/usr/share/pkgconfig:$L/openblas-pthread/pkgconfig:$L/openmpi/lib/pkgconfig
  LIBDIRS=$L:$L/openblas-pthread:$L/openmpi/lib
  # Open MPI finds its files through these (it was built for /usr).
  OMPI_ENV="OPAL_PREFIX=$L/openmpi OPAL_LIBDIR=$L/openmpi/lib OPAL_INCLUDEDIR=$L/openmpi/include OPAL_DATADIR=$P/usr/share OPAL_PKGDATADIR=$P/usr/share/openmpi OPAL_BINDIR=$P/usr/bin"
  # Wrappers that set the library path for one program only, so that the
  # machine's own programs (cmake, nvcc) never load the prefix's libraries.
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} %s\nexec %s "$@"\n' \
    "$LIBDIRS" "$OMPI_ENV" "$P/usr/bin/mpicc.openmpi" > "$P/bin/mpicc"
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} %s\nexec %s "$@"\n' \
    "$LIBDIRS" "$OMPI_ENV" "$P/usr/bin/mpirun.openmpi" > "$P/bin/mpirun"
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\nexport PKG_CONFIG_LIBDIR=%s\nexec %s "$@"\n' \
    "$LIBDIRS" "$PKGDIRS" "$P/usr/bin/pkgconf" > "$P/bin/pkg-config"
  chmod +x "$P/bin/mpicc" "$P/bin/mpirun" "$P/bin/pkg-config"
  note "prefix | $n packages unpacked into $P, $nb from base/ (missing here)"
  # Every module the build asks for, from the prefix only.
  local bad=0 m
  for m in jansson yaml-0.1 hwloc libpcre2-8 openblas ucx; do
    if "$P/bin/pkg-config" --cflags --libs "$m" > "$WORK/pc-$m.txt" 2>&1 && grep -q "$P" "$WORK/pc-$m.txt"; then :;
    else bad=1; note "pkg-config $m | FAIL: $(tr '\n' ' ' < "$WORK/pc-$m.txt")"; fi
  done
  "$P/bin/mpicc" -showme > "$WORK/mpicc.txt" 2>&1 && grep -q "$P" "$WORK/mpicc.txt" || { bad=1; note "mpicc -showme | FAIL: $(cat "$WORK/mpicc.txt")"; }
  [ $bad = 0 ] && note "pkg-config, mpicc | every module resolves inside the prefix"
  return $bad
}

# ---- build 1: plain command lines -----------------------------------------

plain_build() {
  local B=$WORK/plain t0; t0=$(date +%s)
  rm -rf "$B"; mkdir -p "$B"
  local NVFLAGS=(-std=c++17 -O2 -arch=sm_$ARCH -I"$ROOT" --Werror all-warnings
                 -Xcompiler -Wall,-Wextra,-Wno-unused-parameter)
  local CFLAGS=(-std=c11 -O2 -fno-math-errno -fno-trapping-math -I"$ROOT" -I"$ROOT/tests/unit")
  local LIBS=(-lcublas -lm) extra=() f pids=() rc=0
  # OpenMP if the compiler has it (the CPU backend also builds without).
  echo 'int main(void){return 0;}' > "$B/omp.c"
  if "$CC" -fopenmp "$B/omp.c" -o "$B/omp" 2>/dev/null; then CFLAGS+=(-fopenmp); LIBS+=(-Xcompiler -fopenmp); fi
  # The reference BLAS: the prefix's OpenBLAS, the machine's, or the naive one.
  # rpath-link: where ld finds the prefix libraries' own dependencies.
  [ -n "$HAVE_PREFIX" ] && LIBS+=(-Xlinker -rpath="$LIBDIRS" -Xlinker -rpath-link="$LIBDIRS")
  if [ -n "$HAVE_PREFIX" ] && [ -f "$L/openblas-pthread/libopenblas.so" ]; then
    CFLAGS+=(-I"$P/usr/include/x86_64-linux-gnu/openblas-pthread")
    LIBS+=(-L"$L/openblas-pthread" -lopenblas)
    BLAS="OpenBLAS from the Debian prefix"
  elif printf '#include <cblas.h>\nint main(void){openblas_set_num_threads(1);return 0;}\n' |
       "$CC" -Werror -x c - -lopenblas -o "$B/blas" 2>/dev/null; then
    LIBS+=(-lopenblas); BLAS="the machine's OpenBLAS"
  else
    CFLAGS+=(-I"$ROOT/tests/gpu/naive-cblas" -DMR_NO_OPENBLAS); extra+=("$ROOT/tests/gpu/naive-cblas.c")
    BLAS="naive reference GEMM (tests/gpu/naive-cblas.c)"
  fi
  # The CPU codec: runtime/compress.c with safetensors.c's half-float
  # conversions, which need jansson's header to compile; else the copies
  # in tests/gpu/half-float.c.
  local codec=("$ROOT/runtime/compress.c")
  if [ -n "$HAVE_PREFIX" ] || printf '#include <jansson.h>\nint main(void){return json_object() != 0;}\n' |
       "$CC" -Werror -x c - -ljansson -o "$B/jansson" 2>/dev/null; then
    [ -n "$HAVE_PREFIX" ] && { CFLAGS+=(-I"$P/usr/include"); LIBS+=(-L"$L"); }
    codec+=("$ROOT/runtime/safetensors.c" "$ROOT/runtime/status.c"); LIBS+=(-ljansson)
    CODEC="runtime/compress.c + runtime/safetensors.c"
  else
    codec+=("$ROOT/tests/gpu/half-float.c"); CODEC="runtime/compress.c + tests/gpu/half-float.c (no jansson)"
  fi
  for f in "$ROOT"/kernels/cuda/*.cu; do
    "$NVCC" "${NVFLAGS[@]}" -c "$f" -o "$B/$(basename "$f" .cu).o" > "$B/$(basename "$f").log" 2>&1 &
    pids+=($!)
  done
  "$NVCC" "${NVFLAGS[@]}" -o "$B/gpu-floors" "$ROOT/tests/gpu/gpu-floors.cu" "$ROOT/bench/gpu-floors-lib.cu" \
    -lcublas > "$B/gpu-floors.log" 2>&1 &
  pids+=($!)
  for f in "$ROOT"/kernels/cpu/*.c "$ROOT/tests/gpu/test-gpu-ops.c" "$ROOT/tests/unit/harness.c" "${codec[@]}" "${extra[@]}"; do
    "$CC" "${CFLAGS[@]}" -c "$f" -o "$B/c-$(basename "$f" .c).o" > "$B/$(basename "$f").log" 2>&1 || rc=1
  done
  for f in "${pids[@]}"; do wait "$f" || rc=1; done
  if [ $rc = 0 ]; then
    "$NVCC" -arch=sm_$ARCH -o "$B/test-gpu-ops" "$B"/*.o "${LIBS[@]}" > "$B/link.log" 2>&1 || rc=1
  fi
  if [ $rc != 0 ]; then
    cat "$B"/*.log
    note "plain build | FAIL after $(secs "$t0") s (logs above)"
    return 1
  fi
  note "plain build | ok in $(secs "$t0") s on $NPROC cores (sm_$ARCH; reference BLAS: $BLAS; codec: $CODEC)"
}

# ---- build 2: cmake against the prefix --------------------------------------

cmake_build() {
  local B=$WORK/build t0; t0=$(date +%s)
  command -v cmake >/dev/null || { note "cmake build | skipped: no cmake"; return 1; }
  rm -rf "$B"
  local configure=(cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo
                   -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DPKG_CONFIG_EXECUTABLE="$P/bin/pkg-config"
                   -DMPI_C_COMPILER="$P/bin/mpicc" -DMPIEXEC_EXECUTABLE="$P/bin/mpirun"
                   -DCMAKE_PREFIX_PATH="$P/usr" -DCMAKE_BUILD_RPATH="$LIBDIRS"
                   -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$LIBDIRS"
                   -DCMAKE_C_FLAGS="-isystem $P/usr/include/x86_64-linux-gnu")
  # (-isystem: Debian's multiarch header folder, which gcc searches in /usr
  # but not in the prefix; hwloc's generated config.h lives there.)
  if ! PKG_CONFIG_LIBDIR=$PKGDIRS PKG_CONFIG_PATH= "${configure[@]}" > "$WORK/cmake-configure.log" 2>&1; then
    tail -30 "$WORK/cmake-configure.log"; note "cmake configure | FAIL (log above)"; return 1
  fi
  # Where the cache found each library: all must be inside the prefix.
  local outside
  outside=$(grep -E '^(JANSSON|YAML|HWLOC|PCRE2|OPENBLAS)_LINK_LIBRARIES:|^MPI_mpi_LIBRARY:|^MPI_C_HEADER_DIR:' "$B/CMakeCache.txt" | grep -v "$P" || true)
  [ -z "$outside" ] && note "cmake configure | ok in $(secs "$t0") s; every library from the prefix" \
                    || note "cmake configure | libraries outside the prefix: $outside"
  [ "$MODE" = "--check-prefix" ] && [ "${MR_CHECK_BUILD:-1}" = 0 ] && return 0
  t0=$(date +%s)
  if ! cmake --build "$B" -j"$NPROC" > "$WORK/cmake-build.log" 2>&1; then
    grep -B2 -A10 -m3 -E 'error|Error' "$WORK/cmake-build.log"; note "cmake build | FAIL (log above)"; return 1
  fi
  note "cmake build | ok in $(secs "$t0") s on $NPROC cores"
}

run_ctest() { # label...
  local B=$WORK/build args=("$@") t0; t0=$(date +%s)
  # PATH: the prefix's mpirun wrapper for the MPI tests (nccl-comm-np1/np2)
  (cd "$B" && env PATH="$P/bin:$PATH" LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" $OMPI_ENV \
     ctest --output-on-failure -j"$NPROC" "${args[@]}") > "$WORK/ctest-$1$2.log" 2>&1
  local rc=$?
  cat "$WORK/ctest-$1$2.log" | tail -40
  note "ctest ${args[*]} | $(grep -E 'tests passed|tests failed' "$WORK/ctest-$1$2.log" | tail -1) (rc $rc, $(secs "$t0") s)"
  return $rc
}

# ---- main -------------------------------------------------------------------

HAVE_PREFIX=
if [ "$MODE" = "--build-only" ]; then # both builds, nothing run (any machine with nvcc)
  if [ -n "$(ls "$DEBS"/*.deb 2>/dev/null)" ] && make_prefix; then HAVE_PREFIX=1; fi
  plain_build; rc=$?
  if [ -n "$HAVE_PREFIX" ]; then cmake_build || rc=1; fi
  printf '%s\n' "${SUMMARY[@]}"
  exit $rc
fi
if [ "$MODE" = "--check-prefix" ]; then
  make_prefix && cmake_build
  rc=$?
  if [ $rc = 0 ] && [ "${MR_CHECK_BUILD:-1}" != 0 ]; then run_ctest -L unit; rc=$?; fi
  printf '%s\n' "${SUMMARY[@]}"
  exit $rc
fi

START=$(date +%s)
DEVICE=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4)
echo "device: $DEVICE"
if [ "${MR_GPU_CMAKE:-1}" != 0 ] && make_prefix; then HAVE_PREFIX=1; fi
plain_build; PLAIN=$?
TEST_RC=-1; FLOORS_RC=-1
if [ $PLAIN = 0 ]; then
  in_prefix "$WORK/plain/test-gpu-ops" > "$WORK/test-gpu-ops.log" 2>&1; TEST_RC=$?
  cat "$WORK/test-gpu-ops.log"
  note "test-gpu-ops (plain build) | exit $TEST_RC ($(tail -1 "$WORK/test-gpu-ops.log"))"
  if [ "${MR_GPU_SANITIZE:-1}" != 0 ] && command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
      in_prefix timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 "$WORK/plain/test-gpu-ops" \
        > "$WORK/sanitizer-$tool.log" 2>&1
      note "compute-sanitizer $tool | exit $? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$WORK/sanitizer-$tool.log" | tail -1))"
    done
  fi
  quick=(); [ "${MR_GPU_QUICK:-0}" = 1 ] && quick=(--quick)
  "$WORK/plain/gpu-floors" --json "$FLOORS" "${quick[@]}" > "$WORK/gpu-floors.log" 2>&1; FLOORS_RC=$?
  cat "$WORK/gpu-floors.log"
  note "gpu-floors | exit $FLOORS_RC (JSON: $FLOORS)"
fi
CTEST_RC=-1
if [ -n "$HAVE_PREFIX" ] && cmake_build; then
  run_ctest -L gpu; CTEST_RC=$?
  [ "${MR_GPU_SUITE:-0}" = 1 ] && run_ctest -L unit
fi

{
  echo "# GPU run, $STAMP"
  echo
  echo "Device (nvidia-smi name, memory, driver): $DEVICE"
  echo
  echo "Host: $(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $NPROC cores"
  echo "Toolchain: $("$NVCC" --version | tail -1); $("$CC" --version | head -1); $(cmake --version 2>/dev/null | head -1)"
  echo "Commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) $(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')"
  echo "Total time: $(secs "$START") s"
  echo
  echo "| step | result |"
  echo "| --- | --- |"
  printf '%s\n' "${SUMMARY[@]}" | sed 's/^/| /; s/$/ |/'
  echo
  echo "## test-gpu-ops (CUDA backend against the CPU backend)"
  echo
  echo '```'
  cat "$WORK/test-gpu-ops.log" 2>/dev/null
  echo '```'
  echo
  echo "## gpu-floors"
  echo
  echo '```'
  cat "$WORK/gpu-floors.log" 2>/dev/null
  echo '```'
  for tool in memcheck racecheck; do
    [ -f "$WORK/sanitizer-$tool.log" ] || continue
    echo; echo "## compute-sanitizer $tool (last lines)"; echo; echo '```'
    tail -15 "$WORK/sanitizer-$tool.log"; echo '```'
  done
  if [ -f "$WORK/ctest--Lgpu.log" ]; then
    echo; echo "## ctest -L gpu (cmake build against the Debian prefix)"; echo; echo '```'
    tail -25 "$WORK/ctest--Lgpu.log"; echo '```'
  fi
} > "$REPORT"
echo "report: $REPORT"
[ $TEST_RC = 0 ] && [ $FLOORS_RC = 0 ] && [ $CTEST_RC -le 0 ]
