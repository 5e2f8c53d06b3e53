#!/usr/bin/env bash
# One command for the GPU machine: builds the CUDA backend and the GPU test,
# runs them, measures the GPU's floors, and writes a markdown report.
#
#   tests/gpu/run.sh                  # on the GPU machine, from anywhere
#   tests/gpu/run.sh --check-prefix   # anywhere: only the Debian-prefix steps
#                                     # (unpack, .pc rewrite, cmake configure
#                                     # and build against the prefix, ctest -L unit)
#   tests/gpu/run.sh --build-only     # anywhere with nvcc: both builds, no runs
#   tests/gpu/run.sh --bench          # on the GPU machine: prefix, CMake build
#                                     # (kept from an earlier run when there is
#                                     # one), the benchmarks and the report only
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
# tool exists, gpu-floors, the benchmarks (build 2's bench-engine on the GPU
# beside the floors it measures, and bench/hf-generate.py where torch sees
# the GPU) and the report.
#
# Environment: OUT (report folder; else bench/results), MR_DEBS_ROOT,
# MR_CUDA_ARCH (default 90), MR_GPU_WORK (default /tmp/mr-gpu),
# MR_GPU_CMAKE=0 (skip build 2), MR_GPU_SANITIZE=0, MR_GPU_SUITE=1 (also
# ctest -L unit in build 2), MR_GPU_QUICK=1 (short floors), MR_GPU_BENCH=0
# (no benchmarks), MR_GPU_BENCH_ROWS (default "llama-8b:bf16
# deepseek-v2-lite:bf16 llama-8b:fp32": bench/models folder : weights),
# MR_GPU_BENCH_STEPS (decode steps, default 8), MR_GPU_BENCH_TIMEOUT (s per
# program, default 900), MR_GPU_HF=0 (no transformers rows).  To check the
# benchmark step on a machine without a GPU: MR_GPU_BENCH_DEVICE=cpu (both
# programs on the CPU) with rows naming small model folders by path
# (MR_GPU_BENCH_ROWS="tests/fixtures/llama:fp32", MR_GPU_BENCH_PROMPT=32).
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
BENCH_DIR=$OUTDIR         # the benchmarks' .json / .txt / table
[ "$MODE" = "--bench" ] && REPORT=${REPORT%.md}-bench.md
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
  # --bench keeps an earlier build (configure again, build what changed)
  if [ "$MODE" != "--bench" ] || [ ! -f "$B/CMakeCache.txt" ]; then rm -rf "$B"; fi
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

# ---- benchmarks: bench-engine on the GPU, transformers beside it -----------

# "NVIDIA H100 80GB HBM3" -> h100-80gb-hbm3
device_slug() {
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z' |
    sed 's/^nvidia //; s/[^a-z0-9][^a-z0-9]*/-/g; s/^-//; s/-$//'
}

# One bench-engine run per row of MR_GPU_BENCH_ROWS (synthetic weights,
# batches 1 and 64, prompt 512), each skipped when its memory estimate
# (bench-engine --config-only: weights + KV cache + 4 GB of workspace and
# slack) exceeds the device's; then hf-generate.py on the same rows when
# torch imports and sees the GPU; then the table (bench/engine-table.py).
# Files: $BENCH_DIR/gpu-engine-<model>[-fp32]-<slug>.{json,txt} and
# gpu-hf-<model>[-fp32]-<slug>.{json,txt}.
bench_step() {
  local BE=$WORK/build/bench/bench-engine slug mem row model wt name est need t0 rc bad=0 hf=1
  local steps=${MR_GPU_BENCH_STEPS:-8} limit=${MR_GPU_BENCH_TIMEOUT:-900} dev=${MR_GPU_BENCH_DEVICE:-cuda} dir
  local prompt=${MR_GPU_BENCH_PROMPT:-512}
  rm -f "$WORK/bench-table.md"
  [ -x "$BE" ] || { note "benchmarks | skipped: no bench-engine in the CMake build"; return 1; }
  slug=$(device_slug); [ -n "$slug" ] || slug=gpu
  # MiB the runs may take: the GPU's memory, or the host's available memory on the CPU
  if [ "$dev" = cpu ]; then mem=$(awk '/^MemAvailable:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
  else mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1); fi
  BENCH_JSON=()
  if [ "${MR_GPU_HF:-1}" = 0 ]; then hf=0; note "transformers rows | skipped (MR_GPU_HF=0)"
  elif ! python3 -c 'import sys, torch, transformers
if sys.argv[1] == "cuda" and not torch.cuda.is_available(): sys.exit("torch %s sees no CUDA device" % torch.__version__)' \
       "$dev" > "$WORK/hf-import.log" 2>&1; then
    hf=0; note "transformers rows | skipped: torch/transformers do not import or see no GPU ($(tail -1 "$WORK/hf-import.log" | cut -c1-120))"
  fi
  for row in ${MR_GPU_BENCH_ROWS:-llama-8b:bf16 deepseek-v2-lite:bf16 llama-8b:fp32}; do
    model=${row%%:*}; wt=${row#*:}
    # a bench/models folder by name, or (checks of this step) a path
    case $model in */*) dir=$model; model=$(basename "$model") ;; *) dir=$ROOT/bench/models/$model ;; esac
    name=$model-$slug; [ "$wt" = bf16 ] || name=$model-$wt-$slug
    local args=(--model "$dir" --synthetic --weights "$wt" --batches 1,64 --prompt "$prompt")
    est=$(in_prefix "$BE" "${args[@]}" --steps "$steps" --config-only 2>&1 |
          sed -n 's/^weights ~\([0-9.]*\) GB fp32, ~\([0-9.]*\) GB bf16; KV cache \([0-9.]*\) GB.*/\1 \2 \3/p')
    # (on the CPU the fp32 size: its backend may hold bf16 weights as fp32)
    need=$(echo "$est" | awk -v wt="$wt" -v dev="$dev" '{ printf "%.0f", (wt == "fp32" || dev == "cpu" ? $1 : $2) + $3 + 4 }')
    if [ -z "$est" ]; then note "bench-engine $model $wt | FAIL: --config-only gave no estimate"; bad=1; continue; fi
    if [ -n "$mem" ] && [ "$need" -gt $((mem * 1048576 / 1000000000)) ]; then
      note "bench-engine $model $wt | skipped: needs ~$need GB, the $dev has $((mem * 1048576 / 1000000000)) GB"; continue
    fi
    t0=$(date +%s)
    in_prefix timeout "$limit" "$BE" "${args[@]}" --steps "$steps" --backend "$dev" \
      --json "$BENCH_DIR/gpu-engine-$name.json" > "$BENCH_DIR/gpu-engine-$name.txt" 2>&1; rc=$?
    cat "$BENCH_DIR/gpu-engine-$name.txt"
    if [ $rc = 0 ]; then BENCH_JSON+=("$BENCH_DIR/gpu-engine-$name.json")
      note "bench-engine $model $wt | ok in $(secs "$t0") s (~$need GB): gpu-engine-$name.{json,txt}"
    elif [ $rc = 77 ]; then note "bench-engine $model $wt | skipped: $(tail -1 "$BENCH_DIR/gpu-engine-$name.txt" | cut -c1-160)"
      rm -f "$BENCH_DIR/gpu-engine-$name.txt" "$BENCH_DIR/gpu-engine-$name.json"; continue
    else bad=1; note "bench-engine $model $wt | FAIL exit $rc after $(secs "$t0") s ($(tail -1 "$BENCH_DIR/gpu-engine-$name.txt" | cut -c1-160))"; fi
    [ $hf = 1 ] || continue
    t0=$(date +%s)
    timeout "$limit" python3 "$ROOT/bench/hf-generate.py" --model "$dir" --device "$dev" \
      --weights "$wt" --batches 1,64 --prompt "$prompt" --steps 16 --json "$BENCH_DIR/gpu-hf-$name.json" \
      > "$BENCH_DIR/gpu-hf-$name.txt" 2>&1; rc=$?
    tail -8 "$BENCH_DIR/gpu-hf-$name.txt"
    if [ $rc = 0 ]; then BENCH_JSON+=("$BENCH_DIR/gpu-hf-$name.json")
      note "hf-generate $model $wt | ok in $(secs "$t0") s: gpu-hf-$name.{json,txt}"
    else bad=1; note "hf-generate $model $wt | FAIL exit $rc after $(secs "$t0") s ($(tail -1 "$BENCH_DIR/gpu-hf-$name.txt" | cut -c1-160))"; fi
  done
  allreduce_bench || bad=1
  if [ ${#BENCH_JSON[@]} -gt 0 ]; then
    if python3 "$ROOT/bench/engine-table.py" "${BENCH_JSON[@]}" > "$WORK/bench-table.md" 2> "$WORK/bench-table.log"; then
      cp "$WORK/bench-table.md" "$BENCH_DIR/gpu-engine-table-$slug.md"
      cat "$WORK/bench-table.md"
    else note "benchmark table | FAIL: $(tail -1 "$WORK/bench-table.log")"; fi
  fi
  return $bad
}

# bench-allreduce-gpu (issue 6's GPU rows: the device engine beside
# ncclAllReduce and MPI_Allreduce) on 2 GPUs and on all of them (up to 8),
# bench-overlap-gpu and bench-moe-overlap-gpu on 2; they need two GPUs,
# skipped with one.
allreduce_bench() {
  local BA=$WORK/build/bench/bench-allreduce-gpu n np t0 rc bad=0 slug
  n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ -x "$BA" ] || { note "bench-allreduce-gpu | skipped: not built (no NCCL?)"; return 0; }
  [ "${n:-0}" -ge 2 ] || { note "bench-allreduce-gpu | skipped: ${n:-0} GPU(s), it needs 2"; return 0; }
  slug=$(device_slug); [ -n "$slug" ] || slug=gpu
  for np in 2 $((n > 8 ? 8 : n)); do
    t0=$(date +%s)
    env PATH="$P/bin:$PATH" LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" $OMPI_ENV \
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 900 mpirun --oversubscribe --bind-to none -np "$np" "$BA" --sizes 64K,1M,16M,64M \
      --algos ring,two_shot --label "$slug np$np" --json "$BENCH_DIR/gpu-allreduce-$slug-np$np.json" \
      > "$BENCH_DIR/gpu-allreduce-$slug-np$np.txt" 2>&1; rc=$?
    tail -12 "$BENCH_DIR/gpu-allreduce-$slug-np$np.txt"
    if [ $rc = 0 ]; then note "bench-allreduce-gpu np $np | ok in $(secs "$t0") s: gpu-allreduce-$slug-np$np.{json,txt}"
    else bad=1; note "bench-allreduce-gpu np $np | FAIL exit $rc"; fi
    [ "$np" = 2 ] && [ "$n" = 2 ] && break
  done
  # bench-overlap-gpu: a tensor-parallel layer with and without overlap, 2 GPUs
  for c in none int8; do
    t0=$(date +%s)
    env PATH="$P/bin:$PATH" LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" $OMPI_ENV \
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 900 mpirun --bind-to none -np 2 \
      "$WORK/build/bench/bench-overlap-gpu" --tokens 256,1024,4096 --compression $c --label "$slug np2 $c" \
      --json "$BENCH_DIR/gpu-overlap-$slug-np2-$c.json" > "$BENCH_DIR/gpu-overlap-$slug-np2-$c.txt" 2>&1; rc=$?
    tail -14 "$BENCH_DIR/gpu-overlap-$slug-np2-$c.txt"
    if [ $rc = 0 ]; then note "bench-overlap-gpu np 2 $c | ok in $(secs "$t0") s: gpu-overlap-$slug-np2-$c.{json,txt}"
    else bad=1; note "bench-overlap-gpu np 2 $c | FAIL exit $rc"; fi
  done
  # bench-moe-overlap-gpu: the MoE combine (NCCL all-to-all) with and without the shared experts beside it, 2 GPUs
  t0=$(date +%s)
  env PATH="$P/bin:$PATH" LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" $OMPI_ENV \
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 900 mpirun --bind-to none -np 2 \
    "$WORK/build/bench/bench-moe-overlap-gpu" --tokens 64,256,1024 --label "$slug np2" \
    --json "$BENCH_DIR/gpu-moe-overlap-$slug-np2.json" > "$BENCH_DIR/gpu-moe-overlap-$slug-np2.txt" 2>&1; rc=$?
  tail -12 "$BENCH_DIR/gpu-moe-overlap-$slug-np2.txt"
  if [ $rc = 0 ]; then note "bench-moe-overlap-gpu np 2 | ok in $(secs "$t0") s: gpu-moe-overlap-$slug-np2.{json,txt}"
  else bad=1; note "bench-moe-overlap-gpu np 2 | FAIL exit $rc"; fi
  return $bad
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
BENCH_JSON=(); rm -f "$WORK/bench-table.md"
DEVICE=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4)
echo "device: $DEVICE"
if [ "${MR_GPU_CMAKE:-1}" != 0 ] && make_prefix; then HAVE_PREFIX=1; fi
TEST_RC=-1; FLOORS_RC=-1; PLAIN=-1
[ "$MODE" = "--bench" ] || { plain_build; PLAIN=$?; }
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
CTEST_RC=-1; BENCH_RC=-1
if [ -n "$HAVE_PREFIX" ] && cmake_build; then
  if [ "$MODE" != "--bench" ]; then
    run_ctest -L gpu; CTEST_RC=$?
    [ "${MR_GPU_SUITE:-0}" = 1 ] && run_ctest -L unit
  fi
  if [ "$MODE" = "--bench" ] || [ "${MR_GPU_BENCH:-1}" != 0 ]; then bench_step; BENCH_RC=$?; fi
elif [ "$MODE" = "--bench" ]; then
  note "benchmarks | not run: they need the CMake build against the Debian prefix (.gpu-debs)"
fi

(
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
  if [ -f "$WORK/bench-table.md" ]; then
    echo; echo "## Benchmarks (bench-engine --backend ${MR_GPU_BENCH_DEVICE:-cuda}, synthetic weights; transformers beside)"; echo
    cat "$WORK/bench-table.md"
    for f in "${BENCH_JSON[@]}"; do
      echo; echo "### $(basename "${f%.json}").txt"; echo; echo '```'; cat "${f%.json}.txt"; echo '```'
    done
  fi
  [ "$MODE" = "--bench" ] && exit 0 # (the subshell: what follows is the tests' part)
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
) > "$REPORT"
echo "report: $REPORT"
[ "$MODE" = "--bench" ] && exit $BENCH_RC
[ $TEST_RC = 0 ] && [ $FLOORS_RC = 0 ] && [ $CTEST_RC -le 0 ] && [ $BENCH_RC -le 0 ]
