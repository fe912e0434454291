#!/bin/sh
# /init of the test VM's initramfs (busybox sh; vm/run.ts packs it with a
# static busybox, vm/guest-run.sh and the run's mocha settings or command).
#
# Mounts the host's root (read-only, 9p) on /host, gives it fresh proc, sysfs,
# devtmpfs and tmpfs (/tmp, /run), then runs vm/guest-run.sh chrooted there,
# so the guest runs the host's own node on the host's checkout.
#
# Kernel command line (parameters with a dot are ignored by the kernel):
#   vfio_engine.dir=/path/to/checkout   required
#   vfio_engine.spec=GLOB               repeatable; default dist/test/kernel/**/*.spec.js
#   vfio_engine.node=/usr/bin/node      the node binary (default: node on PATH)
#   vfio_engine.iommu=vtd|virtio        the VM's IOMMU variant (for the suites)
#   vfio_engine.timeout=SECONDS         watchdog: power off after this long
#   vfio_engine.env=VFIO_ENGINE_X=VALUE repeatable; exported to the suites (run.ts forwards
#                                       the host's VFIO_ENGINE_DIFF_* settings this way)
#
# Every path ends in a power-off: poweroff -f here or in guest-run.sh, and if
# even that fails, init exiting panics the kernel, panic=-1 reboots, and
# QEMU's -no-reboot turns the reboot into an exit.

export PATH=/bin
/bin/busybox --install -s /bin

rc=1
staged=/host/run/vfio-engine

off() {
  # guest-run.sh reports on its own; report here only if it never got that far.
  if [ ! -e "$staged/reported" ]; then
    echo "@@VFIO_ENGINE_TOTALS null"
    echo "@@VFIO_ENGINE_EXIT $rc"
  fi
  sync
  poweroff -f
  sleep 10
}
trap off EXIT

fail() {
  echo "vfio-engine: guest init: $*"
  rc=1
  exit 1
}

mkdir -p /proc /sys /dev /host /hostroot
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "vfio-engine: guest init at $(cut -d' ' -f1 /proc/uptime) s of uptime, kernel $(uname -r)"

# The command line is split on blanks only: keep globs unexpanded.
set -f
dir=
node=
iommu=
specs=
timeout=
for word in $(cat /proc/cmdline); do
  case $word in
    vfio_engine.dir=*) dir=${word#*=} ;;
    vfio_engine.node=*) node=${word#*=} ;;
    vfio_engine.iommu=*) iommu=${word#*=} ;;
    vfio_engine.spec=*) specs="$specs${word#*=}
" ;;
    vfio_engine.timeout=*) timeout=${word#*=} ;;
    vfio_engine.env=VFIO_ENGINE_*=*) export "${word#vfio_engine.env=}" ;;
  esac
done
set +f
if [ -n "$timeout" ]; then
  # Guards against a hung guest whose QEMU lost its host process.
  ( sleep "$timeout"; echo "vfio-engine: guest watchdog: ${timeout} s elapsed, powering off"; poweroff -f ) &
fi
[ -n "$dir" ] || fail "no vfio_engine.dir= on the kernel command line"

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host \
  || fail "cannot mount the host root (9p tag hostroot)"
# The 9p root without the tmpfs mounts below: a checkout under /tmp or /run
# would otherwise be hidden by them.
mount --bind /host /hostroot || fail "cannot bind the host root"
mount -t proc proc /host/proc || fail "cannot mount /host/proc"
mount -t sysfs sysfs /host/sys || fail "cannot mount /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fail "cannot mount /host/dev"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "cannot mount /host/tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "cannot mount /host/run"
[ -d /host/dev/shm ] || mkdir -p /host/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm 2>/dev/null

# Stage what the chroot needs in its (writable) /run.
mkdir -p "$staged" || fail "cannot create $staged"
cp /bin/busybox /vfio-engine/* "$staged/" || fail "cannot stage files in $staged"
case $dir in
  /tmp/*|/run/*)
    mkdir -p "$staged/checkout"
    mount --bind "/hostroot$dir" "$staged/checkout" || fail "cannot bind $dir"
    dir=/run/vfio-engine/checkout ;;
esac

export VFIO_ENGINE_DIR="$dir" VFIO_ENGINE_NODE="$node" VFIO_ENGINE_SPECS="$specs" VFIO_ENGINE_IOMMU="$iommu"
chroot /host /run/vfio-engine/busybox sh /run/vfio-engine/guest-run.sh
rc=$?
exit $rc
