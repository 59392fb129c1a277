#!/bin/bash
# End-to-end check of berth on aarch64, by hand or from CI until the tests/ harness gains its
# aarch64 host: an emulated aarch64 host (QEMU TCG -M virt,virtualization=on: KVM at EL2) runs
# the static aarch64 berth on the Debian arm64 kernel with a busybox initramfs and 2 vCPUs.
#
#   scripts/boot-aarch64-host.sh [3|2 ...]     (default: 3 then 2)
#
# gic-version=3: the plain Image and the gzip'd Image, each with a virtio-blk disk whose first
#   bytes the guest prints (MSIs through the ITS).
# gic-version=2: berth must fall back to a GICv2 and say why; the disk works through INTx.
# Each run must reach the guest's init marker and end berth with status 0 (PSCI SYSTEM_OFF).
# QEMU runs under flock /tmp/berth-e2e.lock (one emulator at a time on this machine). Logs and
# console output go to ${TMPDIR:-/tmp}/berth-aarch64-host/.
set -euo pipefail
cd "$(dirname "$0")/.."
GICS=${*:-3 2}
W=${TMPDIR:-/tmp}/berth-aarch64-host
mkdir -p "$W"
say() { echo "boot-aarch64-host: $*" >&2; }

BERTH=$(scripts/build-aarch64.sh build | tail -1)
A=$(scripts/aarch64-host-assets.sh | tail -1)
KVER=$(ls "$A/modules")
M=$A/modules/$KVER/kernel/drivers

# The guest (L2): busybox, the virtio-pci and virtio-blk modules, an init that prints markers.
rm -rf "$W/l2" && mkdir -p "$W/l2"/{bin,proc,sys,dev,lib/modules}
cp "$A/busybox" "$W/l2/bin/"
cp "$M"/virtio/virtio_pci_legacy_dev.ko "$M"/virtio/virtio_pci_modern_dev.ko "$M"/virtio/virtio_pci.ko \
   "$M"/block/virtio_blk.ko "$W/l2/lib/modules/"
cat > "$W/l2/init" <<'EOI'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
grep -q berth.bt=1 /proc/cmdline && devmem 0x9020000 8 123
echo "=== L2 INIT REACHED: uptime $(cut -d' ' -f1 /proc/uptime)s, $(grep -c ^processor /proc/cpuinfo) cpus"
dmesg | grep -E 'Machine model|GICv[23]:|ITS@|psci: PSCIv|SMP: Total|ttyS0 at|rtc-pl031.*registered' | head -12
for m in virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do insmod /lib/modules/$m.ko; done
sleep 1
[ -b /dev/vda ] && echo "=== L2 DISK: $(head -c 17 /dev/vda)"
echo "=== L2 SHELL MARKER"
poweroff -f
EOI
chmod +x "$W/l2/init"
(cd "$W/l2" && find . | cpio -o -H newc --quiet | gzip -1 > "$W/l2.cpio.gz")

# The emulated host (L1): busybox, berth, the guest's files, an init that runs /runs.sh.
run_host() { # run_host GIC RUNS_SCRIPT LOG
  local gic=$1 runs=$2 log=$3 r=$W/l1
  rm -rf "$r" && mkdir -p "$r"/{bin,proc,sys,dev,tmp,l2}
  cp "$A/busybox" "$BERTH" "$r/bin/"
  cp "$A/Image" "$r/l2/Image" && gzip -1 -c "$A/Image" > "$r/l2/Image.gz"
  cp "$W/l2.cpio.gz" "$r/l2/initrd.cpio.gz"
  printf '%s\n' "$runs" > "$r/runs.sh"
  cat > "$r/init" <<'EOI'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
echo "=== L1 INIT: uptime $(cut -d' ' -f1 /proc/uptime)s"
dd if=/dev/zero of=/tmp/disk.img bs=1M count=4 2>/dev/null
printf 'berth disk marker' | dd of=/tmp/disk.img conv=notrunc 2>/dev/null
berth() { T0=$(cut -d' ' -f1 /proc/uptime); /bin/berth "$@" </dev/null; rc=$?
  echo "=== L1 berth rc=$rc in $(echo "$(cut -d' ' -f1 /proc/uptime) $T0" | awk '{print $1-$2}')s"; }
. /runs.sh
poweroff -f
EOI
  chmod +x "$r/init"
  (cd "$r" && find . | cpio -o -H newc --quiet | gzip -1 > "$W/l1.cpio.gz")
  say "gic-version=$gic: booting the emulated host (waits for the e2e lock)"
  flock /tmp/berth-e2e.lock timeout 900 qemu-system-aarch64 -M virt,virtualization=on,gic-version="$gic" \
    -cpu max,pauth=off -m 2G -smp 2 -nographic -no-reboot -kernel "$A/Image" -initrd "$W/l1.cpio.gz" \
    -append "console=ttyAMA0 panic=-1 quiet" > "$log" 2>&1 || true
  sed -n '/=== L1 INIT/,$p' "$log" >&2
}

BOOT='run --cpus 2 --memory 256 --boot-timer --initrd /l2/initrd.cpio.gz --cmdline "console=ttyS0 panic=-1 quiet berth.bt=1"'
fail=0
check() { # check LOG COUNT PATTERN: PATTERN must appear COUNT times
  local n; n=$(grep -c -- "$3" "$1" || true)
  if [ "$n" -ne "$2" ]; then say "FAIL: expected $2 x '$3', found $n ($1)"; fail=1; fi
}
for gic in $GICS; do
  log=$W/gic$gic.log
  case $gic in
  3)
    run_host 3 "berth $BOOT --kernel /l2/Image --disk path=/tmp/disk.img
berth $BOOT --kernel /l2/Image.gz --disk path=/tmp/disk.img" "$log"
    check "$log" 2 "=== L2 SHELL MARKER"
    check "$log" 2 "2 cpus"
    check "$log" 2 "=== L2 DISK: berth disk marker"
    check "$log" 2 "ITS@.*Devices"
    check "$log" 2 "=== L1 berth rc=0 "
    check "$log" 2 "guest boot time:"
    ;;
  2)
    run_host 2 "berth $BOOT --kernel /l2/Image --disk path=/tmp/disk.img" "$log"
    check "$log" 1 "=== L2 SHELL MARKER"
    check "$log" 1 "2 cpus"
    check "$log" 1 "cannot provide a GICv3 (.*); using a GICv2"
    check "$log" 1 "=== L2 DISK: berth disk marker"
    check "$log" 1 "=== L1 berth rc=0 "
    ;;
  *) say "unknown GIC version $gic"; exit 2 ;;
  esac
done
[ $fail = 0 ] && say "all runs passed" || { say "some runs failed; logs in $W"; exit 1; }
