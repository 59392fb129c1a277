#!/bin/bash
# Records real virtqueue traffic as seeds for the virtqueue fuzz targets: builds berth with
# `--cfg berth_record_chains` (devices/src/virtio/queue_util.rs), boots the emulated x86_64 host
# and runs three guests in it, one device each (virtio-blk: mount an ext4 disk, write, sync,
# read back, discard; virtio-rng: read /dev/hwrng; virtio-console: write to hvc0 and read
# input), with the backends as threads (a jailed device cannot write files). The chains come
# back over the emulated host's console and land in fuzz/corpus/virtqueue_<device>/recorded-*.
#
#   scripts/record-chains.sh [MAX]      keep at most MAX chains per device (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${1:-40}
ASSETS=${BERTH_ASSETS:-$HOME/.cache/berth}/x86_64
say() { echo "record-chains: $*" >&2; }

scripts/host-deps.sh e2e-x86_64 unit
scripts/guest-assets.sh x86_64 >&2
say "building berth with --cfg berth_record_chains (target/record)"
CARGO_TARGET_DIR=target/record RUSTFLAGS="--cfg berth_record_chains" cargo build --release -p berth >&2
BERTH=$PWD/target/record/release/berth

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-record.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# One /test.sh per guest; the guest init runs it and reboots when it ends.
guest_initrd() {
  local name=$1 script=$2
  local d=$WORK/g-$name
  mkdir -p "$d"
  printf '%s\n' "$script" >"$d/test.sh"
  chmod +x "$d/test.sh"
  (cd "$d" && echo test.sh | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$WORK/$name.cpio.gz"
  cat "$ASSETS/initramfs.cpio.gz" "$WORK/$name.cpio.gz"
}
R=$WORK/root
mkdir -p "$R"/{bin,proc,sys,dev,tmp,mods,guest}
cp "$ASSETS/busybox" "$R/bin/busybox"
cp "$ASSETS"/host-modules/{irqbypass,kvm,kvm-amd,kvm-intel}.ko "$R/mods/"
cp "$BERTH" "$R/bin/berth"
for lib in $(ldd "$BERTH" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
cp "$ASSETS/bzImage" "$R/guest/"
truncate -s 32M "$R/guest/disk.img"
mkfs.ext4 -q -F -E nodiscard "$R/guest/disk.img"
guest_initrd blk 'mkdir -p /mnt && mount /dev/vda /mnt
dd if=/dev/urandom of=/mnt/f bs=64k count=8 2>/dev/null; sync
echo 3 >/proc/sys/vm/drop_caches; sha256sum /mnt/f; rm /mnt/f; sync
fstrim /mnt 2>&1; umount /mnt; blkdiscard -o 1048576 -l 65536 /dev/vda 2>&1
dd if=/dev/vda of=/dev/null bs=4k count=16 2>/dev/null' >"$R/guest/blk.initrd"
guest_initrd rng 'dd if=/dev/hwrng of=/dev/null bs=64 count=16 2>/dev/null; echo rng-read' >"$R/guest/rng.initrd"
guest_initrd console 'echo to-hvc0 >/dev/hvc0; read -t 5 line </dev/hvc0; echo "got $line"' >"$R/guest/console.initrd"
cat >"$R/init" <<EOS
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
insmod /mods/irqbypass.ko; insmod /mods/kvm.ko
insmod /mods/kvm-amd.ko 2>/dev/null || insmod /mods/kvm-intel.ko
CMD="console=ttyS0 reboot=k panic=1 quiet"
run() {
  dev=\$1; shift
  mkdir -p /tmp/\$dev
  echo "RECORD-RUN \$dev"
  BERTH_RECORD_CHAINS=/tmp/\$dev timeout -s KILL 300 berth run --kernel /guest/bzImage \
    --initrd /guest/\$dev.initrd --memory 256 --disable-sandbox "\$@" >/tmp/\$dev.out 2>&1
  echo "RECORD-EXIT \$dev \$?"
  tail -n 5 /tmp/\$dev.out | sed 's/^/RECORD-LOG /'
  # MAX chains spread over the whole run (mount, writes, sync, reads, discards), not the first.
  (cd /tmp/\$dev && tar cf - \$(ls | awk -v n=\$(ls | wc -l) -v m=$MAX \
    'BEGIN { s = int(n / m); if (s < 1) s = 1 } (NR - 1) % s == 0' | head -n $MAX)) |
    gzip | base64 | sed "s/^/RECORD-DATA \$dev /"
  echo "RECORD-COUNT \$dev \$(ls /tmp/\$dev | wc -l)"
}
run blk --disk path=/guest/disk.img --cmdline "\$CMD berth.modules=virtio_pci,virtio_blk" </dev/null
run rng --rng --cmdline "\$CMD berth.modules=virtio_pci,virtio-rng" </dev/null
echo input-line | run console --console virtio --serial none --cmdline "console=hvc0 reboot=k panic=1 quiet berth.modules=virtio_pci,virtio_console"
echo "RECORD-END"
poweroff -f
EOS
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/host.cpio.gz")
exec 9>"${TMPDIR:-/tmp}/berth-e2e.lock"
flock 9
say "booting the emulated host"
LOG=$WORK/host.log
timeout 1800 qemu-system-x86_64 -accel tcg,thread=multi -M q35 -cpu max -smp 2 -m 2G \
  -nographic -no-reboot -kernel "$ASSETS/bzImage" -initrd "$WORK/host.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null | sed -u 's/\r//g' >"$LOG" || true
cp "$LOG" "${TMPDIR:-/tmp}/record-chains-host.log"
grep -E '^RECORD-(RUN|EXIT|LOG|COUNT|END)' "$LOG" >&2 || true
grep -q RECORD-END "$LOG" || { say "the emulated host did not finish"; tail -30 "$LOG" >&2; exit 1; }
for dev in blk rng console; do
  out=fuzz/corpus/virtqueue_$dev
  x=$WORK/x-$dev
  mkdir -p "$x" "$out"
  sed -n "s/^RECORD-DATA $dev //p" "$LOG" | base64 -d | tar xzf - -C "$x"
  n=0
  for f in "$x"/*; do
    [ -f "$f" ] || continue
    # Named by content, so recording again adds only what is new.
    cp "$f" "$out/recorded-$(sha1sum "$f" | cut -c1-16)"
    n=$((n + 1))
  done
  say "$dev: $n chains recorded into $out"
done
