#!/bin/sh
# Runs inside the test VM, chrooted into the host's root (read-only 9p, with
# fresh /proc, /sys, /dev, and tmpfs on /tmp and /run); started by
# vm/guest-init.sh with busybox sh.
#
# Binds every edu device (1234:11e8) to vfio-pci, waits for the VFIO cdevs,
# prints the topology, runs the kernel test suites with mocha from the
# checkout (or, when vm/run.ts staged a command, that command instead), then
# prints the lines vm/run.ts parses and powers off:
#   @@VFIO_ENGINE_COVERAGE {...}   (the ioctl counts of zz-ioctl-coverage.spec, or null)
#   @@VFIO_ENGINE_TOTALS {"passed":N,"failed":N,"skipped":N}   (or null)
#   @@VFIO_ENGINE_EXIT <mocha's (the command's) exit code, or 1 if it never ran>
#
# Env (from guest-init.sh): VFIO_ENGINE_DIR (checkout), VFIO_ENGINE_NODE,
# VFIO_ENGINE_SPECS (newline-separated globs), VFIO_ENGINE_IOMMU (vtd or virtio:
# the suites see it as VFIO_ENGINE_GUEST_IOMMU). Also read from the staging
# dir: mocharc.json (the project's config without "spec", because mocha adds
# a config's spec to --spec), mocha-args (extra mocha args, one a line) and
# command (a shell script run in the checkout instead of mocha, with the node
# binary's directory first on PATH; it reports no totals and no coverage).

staged=/run/vfio-engine
bb=$staged/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp
rc=1

report() {
  totals=null
  [ -s /tmp/totals.json ] && totals=$(cat /tmp/totals.json)
  coverage=null
  [ -s /tmp/coverage.json ] && coverage=$(cat /tmp/coverage.json)
  # Own lines, whatever the console held before (a kernel message may not end with a newline).
  echo
  echo "@@VFIO_ENGINE_COVERAGE $coverage"
  echo "@@VFIO_ENGINE_TOTALS $totals"
  echo "@@VFIO_ENGINE_EXIT $rc"
  : > "$staged/reported"
  sync
  "$bb" poweroff -f
}
trap report EXIT
trap 'exit 1' INT TERM HUP

fail() {
  echo "vfio-engine: guest: $*"
  rc=1
  exit 1
}

# --- edu devices -> vfio-pci --------------------------------------------------
edus=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] && edus="$edus ${d##*/}"
done
[ -n "$edus" ] || fail "no edu device (1234:11e8) on the PCI bus"
[ -d /sys/bus/pci/drivers/vfio-pci ] || fail "no vfio-pci driver in this kernel"
[ -e /dev/iommu ] || fail "no /dev/iommu (kernel without CONFIG_IOMMUFD?)"
echo "1234 11e8" > /sys/bus/pci/drivers/vfio-pci/new_id || fail "cannot add the edu id to vfio-pci"

# Probing is asynchronous and slow under TCG: wait up to 30 s for every cdev.
for bdf in $edus; do
  i=0
  while :; do
    cdev=$(ls "/sys/bus/pci/devices/$bdf/vfio-dev" 2>/dev/null | head -1)
    [ -n "$cdev" ] && [ -e "/dev/vfio/devices/$cdev" ] && break
    i=$((i + 1))
    [ $i -le 300 ] || fail "$bdf: no /dev/vfio/devices/vfio* after 30 s"
    sleep 0.1
  done
done

# The variant must be the IOMMU this VM really has: suites pick their facts by it.
iommu=${VFIO_ENGINE_IOMMU:-}
iommus=$(ls /sys/class/iommu 2>/dev/null | tr '\n' ' ')
case $iommu in
  vtd) ls /sys/class/iommu 2>/dev/null | grep -q '^dmar' || fail "variant vtd but no DMAR unit in /sys/class/iommu ($iommus)" ;;
  virtio) [ -d /sys/bus/virtio/drivers/virtio_iommu ] && ls /sys/bus/virtio/drivers/virtio_iommu | grep -q '^virtio' \
    || fail "variant virtio but no device bound to virtio_iommu (IOMMUs: $iommus)" ;;
  *) fail "no IOMMU variant (vfio_engine.iommu=vtd|virtio) on the kernel command line" ;;
esac
export VFIO_ENGINE_GUEST_IOMMU=$iommu

echo "vfio-engine: kernel $(uname -r); IOMMU $iommu ($iommus); VFIO topology:"
for bdf in $edus; do
  group=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
  cdev=$(ls "/sys/bus/pci/devices/$bdf/vfio-dev" | head -1)
  driver=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")
  echo "vfio-engine:   edu $bdf driver $driver iommu_group $group (/dev/vfio/$group) cdev $cdev (/dev/vfio/devices/$cdev)"
done

[ -n "${VFIO_ENGINE_DIR:-}" ] || fail "VFIO_ENGINE_DIR not set"
cd "$VFIO_ENGINE_DIR" || fail "no checkout at $VFIO_ENGINE_DIR"
node=${VFIO_ENGINE_NODE:-$(command -v node)}
[ -x "$node" ] || fail "no node binary (${node:-none on PATH})"

# --- a command instead of mocha (vm/run.ts --command) -------------------------
if [ -f "$staged/command" ]; then
  echo "vfio-engine: running in $PWD: $(cat "$staged/command")"
  PATH="$(dirname "$node"):$PATH" VFIO_ENGINE_GUEST=1 VFIO_ENGINE_NODE="$node" "$bb" sh "$staged/command"
  rc=$?
  exit $rc
fi

# --- mocha --------------------------------------------------------------------
[ -f node_modules/mocha/bin/mocha.js ] || fail "no node_modules/mocha in $VFIO_ENGINE_DIR (npm install)"

config=$staged/mocharc.json
if [ ! -f "$config" ] && [ -f .mocharc.json ]; then
  # Started without vm/run.ts: derive the spec-less config here (costs a node start).
  config=/tmp/mocharc.json
  "$node" -e 'const fs=require("fs");const c=JSON.parse(fs.readFileSync(".mocharc.json","utf8"));delete c.spec;fs.writeFileSync(process.argv[1],JSON.stringify(c))' "$config" \
    || fail "cannot derive $config from .mocharc.json"
fi

set --
[ -f "$config" ] && set -- --config "$config"
specs=${VFIO_ENGINE_SPECS:-}
[ -n "$specs" ] || specs='dist/test/kernel/**/*.spec.js'
# Split on newlines only, and do not glob: mocha expands the patterns.
set -f
old_ifs=$IFS
IFS='
'
for s in $specs; do
  [ -n "$s" ] && set -- "$@" --spec "$s"
done
IFS=$old_ifs
set +f
if [ -f "$staged/mocha-args" ]; then
  while IFS= read -r a || [ -n "$a" ]; do
    set -- "$@" "$a"
  done < "$staged/mocha-args"
fi

echo "vfio-engine: running in $PWD: node node_modules/mocha/bin/mocha.js $*"
VFIO_ENGINE_GUEST=1 VFIO_ENGINE_TOTALS=/tmp/totals.json VFIO_ENGINE_COVERAGE=/tmp/coverage.json "$node" node_modules/mocha/bin/mocha.js "$@"
rc=$?
exit $rc
