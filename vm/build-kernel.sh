#!/usr/bin/env bash
# Builds the test VM's kernel (iommufd + VFIO + emulated VT-d, see
# vm/kernel.fragment) from Debian's linux-source-6.12 and installs it as
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vfio-engine/bzImage-<version>-vfio
# Debian's own kernels ship without CONFIG_IOMMUFD, hence the build.
#
# Prints one line per phase (packages, source, config, compile, install); the
# compiler's and apt's output go to the log file it names (on failure its tail
# is printed). The compile takes about 20 min on 2 cores.
#
# Idempotent: a stamp (hash of the fragment, this script and the source
# tarball) skips the build when the cached image is current; the build tree is
# kept under the cache so a rebuild after a fragment change is incremental.
#
# Usage: vm/build-kernel.sh [--force] [--config-only]
# Env:   VFIO_ENGINE_LINUX_SOURCE (tarball), VFIO_ENGINE_KBUILD_DIR (build tree),
#        VFIO_ENGINE_KBUILD_JOBS (make -j, default nproc),
#        VFIO_ENGINE_KBUILD_LOG (log file, default <cache>/build-kernel.log)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/kernel.fragment
script=$here/$(basename "${BASH_SOURCE[0]}")
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vfio-engine
log=${VFIO_ENGINE_KBUILD_LOG:-$cache/build-kernel.log}
tarball=${VFIO_ENGINE_LINUX_SOURCE:-/usr/src/linux-source-6.12.tar.xz}
builddir=${VFIO_ENGINE_KBUILD_DIR:-$cache/build}
jobs=${VFIO_ENGINE_KBUILD_JOBS:-$(nproc)}
force=0 config_only=0

for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    --config-only) config_only=1 ;;
    -h|--help) sed -n '2,19p' "$script" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-kernel: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

phase=0 phases=5
say() { echo "build-kernel: $*"; }
step() { phase=$((phase + 1)); say "[$phase/$phases] $*"; }
# Runs a command with its output in the log; on failure shows the log's tail and stops.
quiet() {
  echo "+ $*" >> "$log"
  if ! "$@" >> "$log" 2>&1; then
    echo "build-kernel: ERROR: '$*' failed; the last lines of $log:" >&2
    tail -n 40 "$log" | sed 's/^/  | /' >&2
    exit 1
  fi
}
die() { echo "build-kernel: ERROR: $*" >&2; exit 1; }

[ -f "$fragment" ] || die "missing $fragment"

mkdir -p "$cache" "$(dirname "$log")"
# Two concurrent builds (e.g. test:kernel and vm:kernel) would share the tree and the log.
if command -v flock >/dev/null; then
  exec 9>"$cache/build.lock"
  flock 9
fi

# Up to date: the image the stamp names was built from this fragment, script and tarball.
stamp=$cache/build-kernel.stamp
key_of() { echo "$(cat "$fragment" "$script" | sha256sum | cut -d' ' -f1)-$(stat -c '%s-%Y' "$tarball")"; }
if [ $force -eq 0 ] && [ $config_only -eq 0 ] && [ -f "$stamp" ] && [ -f "$tarball" ]; then
  read -r stamp_key stamp_image < "$stamp" || true
  if [ "${stamp_key:-}" = "$(key_of)" ] && [ -f "${stamp_image:-}" ]; then
    say "up to date"
    say "kernel image: $stamp_image"
    exit 0
  fi
fi
: > "$log" # a new build (or --config-only): the log starts again; an up-to-date run keeps the last one

# --- Build dependencies (Debian/Ubuntu) --------------------------------------
need=()
if [ -z "${VFIO_ENGINE_LINUX_SOURCE:-}" ] && ! dpkg-query -W -f='${Status}' linux-source-6.12 2>/dev/null | grep -q 'ok installed'; then
  need+=(linux-source-6.12)
fi
for pkg in flex bison bc libelf-dev libssl-dev gcc make xz-utils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing build packages (${need[*]}) and no apt-get to install them"
  sudo=()
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null && sudo=(sudo); } || die "need root or sudo to install: ${need[*]}"
  step "packages: installing ${need[*]} (log: $log)"
  # A fresh container may have empty package lists: update once and retry.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >> "$log" 2>&1 \
    || { quiet "${sudo[@]}" apt-get update && quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"; }
else
  step "packages: the build's Debian packages are installed"
fi
[ -f "$tarball" ] || die "kernel source not found: $tarball"

mkdir -p "$builddir"


# --- Source tree ------------------------------------------------------------
src_key=$(stat -c '%n-%s-%Y' "$tarball")
top=$(tar -tJf "$tarball" | head -1 | cut -d/ -f1) || true
[ -n "$top" ] || die "cannot read $tarball"
tree=$builddir/$top
if [ "$(cat "$tree/.vfio-engine-source" 2>/dev/null)" != "$src_key" ]; then
  step "source: extracting $tarball into $builddir (about 1 min)"
  rm -rf "$tree"
  quiet tar -xJf "$tarball" -C "$builddir"
  echo "$src_key" > "$tree/.vfio-engine-source"
else
  step "source: $tree (extracted before)"
fi
cd "$tree"

# --- Configuration ------------------------------------------------------------
step "config: defconfig + kvm_guest.config + $(basename "$fragment")"
quiet make -s defconfig
quiet make -s kvm_guest.config
args=()
while IFS= read -r line; do
  case $line in
    CONFIG_*=y)     opt=${line%%=*}; args+=(--enable "${opt#CONFIG_}") ;;
    CONFIG_*=m)     opt=${line%%=*}; args+=(--module "${opt#CONFIG_}") ;;
    CONFIG_*=\"*\") opt=${line%%=*}; val=${line#*=}; val=${val#\"}; args+=(--set-str "${opt#CONFIG_}" "${val%\"}") ;;
    CONFIG_*=*)     opt=${line%%=*}; args+=(--set-val "${opt#CONFIG_}" "${line#*=}") ;;
    "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}; args+=(--disable "${opt#CONFIG_}") ;;
  esac
done < "$fragment"
quiet scripts/config --file .config "${args[@]}"
quiet make -s olddefconfig

# olddefconfig silently drops what a dependency or a choice does not allow:
# check every line of the fragment against the final .config.
bad=0
while IFS= read -r line; do
  case $line in
    CONFIG_*=*)
      if ! grep -qxF -- "$line" .config; then
        opt=${line%%=*}
        got=$(grep -E "^$opt=|^# $opt is not set" .config || echo "undefined")
        echo "build-kernel:   wanted $line, got: $got" >&2; bad=1
      fi ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }; opt=${opt%% *}
      if grep -qE "^$opt=" .config; then
        echo "build-kernel:   wanted $opt off, got: $(grep -E "^$opt=" .config)" >&2; bad=1
      fi ;;
  esac
done < "$fragment"
[ $bad -eq 0 ] || die "kernel config does not match $fragment (see above)"
say "      every option of $(basename "$fragment") took effect"
[ $config_only -eq 0 ] || { say "config only: $tree/.config"; exit 0; }

# --- Build and install ---------------------------------------------------------
step "compile: make -j$jobs bzImage, about 20 min on 2 cores (compiler output: $log)"
start=$(date +%s)
quiet make -j"$jobs" bzImage
say "      compiled in $(( $(date +%s) - start )) s"

step "install: into $cache"
version=$(make -s kernelversion)
image=$cache/bzImage-$version-vfio
# Copy then rename: a concurrent test run never sees a half-written image.
cp arch/x86/boot/bzImage "$image.tmp"
mv -f "$image.tmp" "$image"
cp .config "$image.config"
(cd "$cache" && sha256sum "$(basename "$image")" > "$image.sha256")
echo "$(key_of) $image" > "$stamp"
say "kernel image: $image"
