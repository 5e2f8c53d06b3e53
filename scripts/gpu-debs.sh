#!/usr/bin/env bash
# Downloads, on this Debian 12 machine, the .deb files of every Debian
# library moerun needs to build and run (the packages scripts/setup.sh
# installs, and the shared libraries they load), so that a session can carry
# them to a machine that has none of them, the lent GPU machine, where
# tests/gpu/run.sh unpacks them into a private prefix (dpkg -x, no root).
#
#   scripts/gpu-debs.sh [DIR]        # default .gpu-debs (git-ignored)
#
# DIR/*.deb       what the build and the programs need;
# DIR/base/*.deb  libraries most Linux images already have (zlib, zstd,
#                 OpenSSL, ...): run.sh unpacks one only if the machine
#                 lacks a library it holds, so the machine's newer copies win;
# DIR/MANIFEST    package, version and why, one a line.
# libc6, libgcc-s1 and libstdc++6 are never taken: a machine that runs nvcc
# has them, and older copies would break its programs.
#
# The run-time set is found, not guessed: every ELF file of the packages
# (programs, libraries and Open MPI's plugins) goes through ldd, and the
# package that owns each library it loads is added, until nothing new comes.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu-debs}

# Build-time packages: headers, .pc files, .so links, mpicc and mpirun,
# pkg-config itself (the GPU image may lack it).
DEV=(libopenmpi-dev openmpi-bin openmpi-common libhwloc-dev libyaml-dev libucx-dev
     libopenblas-dev libopenblas-pthread-dev libpcre2-dev libjansson-dev
     pkgconf pkgconf-bin libpkgconf3)
# Their run-time libraries (the -dev packages hold only links to them).
RUN=(libopenmpi3 libhwloc15 libyaml-0-2 libucx0 libopenblas0 libopenblas0-pthread libpcre2-8-0 libgomp1
     libjansson4)
# Present on any machine with a C++ compiler; never carried.
NEVER=(libc6 libc-bin libgcc-s1 libstdc++6 gcc-12-base)
# Usually present; carried into base/ and unpacked only where missing.
BASE=(zlib1g libzstd1 liblzma5 libbz2-1.0 libselinux1 libcrypt1 libtinfo6 libssl3 libudev1
      libcap2 libgmp10 libidn2-0 libunistring2 libffi8 libexpat1 libmd0 libbsd0 libsystemd0
      liblz4-1 libgcrypt20 libgpg-error0 libxml2 libicu72 libuuid1 libatomic1 libgomp1)

in_list() { local x=$1; shift; for y in "$@"; do [ "$x" = "$y" ] && return 0; done; return 1; }

missing=()
for p in "${DEV[@]}" "${RUN[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu-debs: ${missing[*]} not installed here: run scripts/setup.sh first" >&2
  exit 2
fi

# ELF files (programs, libraries, Open MPI's plugins) of the packages named.
elf_files() {
  dpkg -L "$@" | while IFS= read -r f; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    case "$f" in *.so|*.so.*|*/bin/*|*/lib/openmpi3/*) ;; *) continue ;; esac
    [ "$(head -c 4 "$f" 2>/dev/null | tr -d '\0')" = $'\x7fELF' ] && echo "$f"
  done
}

# The closure, a round at a time: ldd every ELF file of the packages added
# last round, then one dpkg -S for all the libraries they load.
declare -A why=()
new=("${DEV[@]}" "${RUN[@]}")
for p in "${DEV[@]}"; do why[$p]="build"; done
for p in "${RUN[@]}"; do why[$p]="run"; done
while [ ${#new[@]} -gt 0 ]; do
  mapfile -t libs < <(elf_files "${new[@]}" | xargs -r ldd 2>/dev/null |
                      awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
  new=()
  [ ${#libs[@]} -gt 0 ] || break
  # Merged /usr: a library found as /lib/x is owned as /usr/lib/x or the reverse.
  mapfile -t paths < <(printf '%s\n' "${libs[@]}" | awk '{print; if (sub(/^\/usr/, "")) print; else print "/usr" $0}')
  while IFS=: read -r owner path; do
    owner=${owner%%,*}
    in_list "$owner" "${NEVER[@]}" && continue
    [ -n "${why[$owner]:-}" ] && continue
    why[$owner]="loads as ${path##*/}"
    new+=("$owner")
  done < <(dpkg -S "${paths[@]}" 2>/dev/null | sed 's/: /:/')
done

mkdir -p "$DEST/base"
rm -f "$DEST"/*.deb "$DEST"/base/*.deb
: > "$DEST/MANIFEST"
for p in $(printf '%s\n' "${!why[@]}" | sort); do
  ver=$(dpkg-query -W -f='${Version}' "$p")
  sub=.; in_list "$p" "${BASE[@]}" && sub=base
  # The installed version, so that the .deb matches what was tested here;
  # the archive's version when that one is gone from it.
  if ! (cd "$DEST/$sub" && apt-get download -q -o APT::Sandbox::User=root "$p=$ver" >/dev/null 2>&1); then
    (cd "$DEST/$sub" && apt-get download -q -o APT::Sandbox::User=root "$p" >/dev/null)
    ver="$(cd "$DEST/$sub" && ls "${p}"_*.deb | head -1 | cut -d_ -f2) (installed: $ver)"
  fi
  printf '%-28s %-28s %-5s %s\n' "$p" "$ver" "$sub" "${why[$p]}" >> "$DEST/MANIFEST"
done
n=$(ls "$DEST"/*.deb | wc -l); nb=$(ls "$DEST"/base/*.deb 2>/dev/null | wc -l)
echo "gpu-debs: $n packages in $DEST, $nb in $DEST/base ($(du -sh "$DEST" | cut -f1)); see $DEST/MANIFEST"
