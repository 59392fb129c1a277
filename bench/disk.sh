#!/bin/bash
# Disk benchmark: fio in a berth guest on a virtio-blk disk against the same fio in the host on
# the same image and in the same guest under QEMU's virtio-blk, inside one emulated host (see
# docs/benchmarks.md).
#
#   bench/disk.sh [SECONDS]      (default 10 s per fio job; prints a table, writes bench/results/)
#   BENCH_PARTS="host berth qemu" selects parts (default all three; "guest" is "berth");
#                                "berth-thread" is berth with --disable-sandbox (device backends
#                                as threads), "berth-old" the berth binary $BENCH_BERTH_OLD (e.g.
#                                a build of an earlier commit)
#   BENCH_ROUNDS=N               run the guest parts N times, alternating (default 1); the
#                                summary gives medians
#   BENCH_DISK_MIB=256           size of the image (in the emulated host's tmpfs, so in its RAM)
#   BERTH_BIN=/abs/berth         use this berth instead of building target/release/berth
#   BENCH_QEMU_OPTS="..."        more QEMU options, e.g. one I/O thread like berth's worker:
#                                "-object main-loop,id=main-loop,thread-pool-min=1,thread-pool-max=1"
#
# In the emulated x86_64 host (QEMU TCG, -cpu max, kvm-amd; docs/testing.md) the image is a file
# in tmpfs (/dev/shm), filled with zeros first so that every block exists. Three fio jobs, each
# `--direct=1 --ioengine=libaio --time_based --runtime=SECONDS`:
#   seqwrite   1 MiB sequential writes, iodepth 16      MiB/s
#   seqread    1 MiB sequential reads,  iodepth 16      MiB/s
#   randread   4 KiB random reads,      iodepth 32      IOPS
# run (host) in the emulated host on a loop device over the image (tmpfs has no O_DIRECT on
# Linux 6.1; the loop device has), (berth) in a berth guest (1 vCPU, 1 GiB) on /dev/vda with
# `berth run --disk path=<image>`, and (qemu) in the same guest under this machine's QEMU copied
# into the emulated host as bench/boot.sh does: `-M microvm,pcie=on -accel kvm -cpu host`, 1 vCPU,
# 1 GiB, `-device virtio-blk-pci` on `-drive format=raw,cache=writeback,aio=threads` (virtio-pci
# with MSI-X, ioeventfd and irqfd, I/O through the host's page cache: berth's setup). The guest
# gets Debian's fio, the one of this machine, with the shared libraries ldd lists (84 MB, 33 MB
# gzip'd: too big for the test initramfs, so it is an extra archive for this benchmark only).
# Absolute figures are those of a slow emulated machine; read the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
PARTS=${BENCH_PARTS:-host berth qemu}
PARTS=${PARTS//guest/berth}
DISK_MIB=${BENCH_DISK_MIB:-256}
ASSETS=${BERTH_ASSETS:-$HOME/.cache/berth}/x86_64
OUT=bench/results
mkdir -p "$OUT"
say() { echo "bench: $*" >&2; }

scripts/host-deps.sh e2e-x86_64 bench-disk
if [ -n "${BERTH_BIN:-}" ]; then
  BERTH=$BERTH_BIN
else
  cargo build --release -p berth >&2
  BERTH=$PWD/target/release/berth
fi
scripts/guest-assets.sh x86_64 >&2
[ -f "$ASSETS/host-modules/loop.ko" ] || { say "no loop.ko in $ASSETS/host-modules (run scripts/guest-assets.sh --force)"; exit 1; }
FIO=$(command -v fio)
QEMU=$(command -v qemu-system-x86_64)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench-disk.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# copy_with_libs ROOT BINARY...: the binaries and what ldd lists, at the same paths under ROOT.
copy_with_libs() {
  local root=$1 bin lib; shift
  for bin in "$@"; do
    mkdir -p "$root$(dirname "$bin")"; cp -L "$bin" "$root$bin"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
  done
}

# The guest's initrd: the test initramfs, then fio with its libraries, then /test.sh (Linux
# unpacks concatenated archives).
G=$WORK/guest-fio
copy_with_libs "$G" "$FIO"
(cd "$G" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$WORK/fio.cpio.gz"
JOBS="seqwrite:write:1M:16 seqread:read:1M:16 randread:randread:4k:32"
# fio_jobs WHERE DEVICE: prints "RESULT WHERE job bw_kib=N iops=N" per job (fio --minimal:
# field 7/8 read bandwidth KiB/s and IOPS, 48/49 the same for writes).
FIO_JOBS=$(cat <<EOS
fio_jobs() {
  for j in $JOBS; do
    IFS=: read name rw bs depth <<EOF
\$j
EOF
    line=\$(fio --name=\$name --filename=\$2 --rw=\$rw --bs=\$bs --iodepth=\$depth --ioengine=libaio \
      --direct=1 --time_based --runtime=$SECS --ramp_time=1 --size=${DISK_MIB}M --minimal 2>/tmp/fio.err) ||
      { echo "FIOFAIL \$1 \$name \$(tr '\n' ' ' </tmp/fio.err)"; continue; }
    echo "\$line" | awk -F';' -v w=\$1 -v n=\$name -v rw=\$rw '{
      if (rw ~ /write/) { bw = \$48; io = \$49 } else { bw = \$7; io = \$8 }
      printf "RESULT %s %s bw_kib=%d iops=%d\n", w, n, bw, io }'
  done
}
EOS
)
# The results are tagged with the VMM the command line names (bench.vmm=berth or qemu).
d=$WORK/guest-test; mkdir -p "$d"
printf '%s\nfio_jobs $(sed -n "s/.*bench.vmm=\\([a-z]*\\).*/\\1/p" /proc/cmdline) /dev/vda\n' \
  "$FIO_JOBS" >"$d/test.sh"
(cd "$d" && echo test.sh | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$WORK/test.cpio.gz"

# The emulated host: busybox, kvm and loop, berth, QEMU and fio with their libraries, QEMU's
# firmware for -M microvm (as bench/boot.sh), the guest.
R=$WORK/root
mkdir -p "$R"/{bin,proc,sys,dev,tmp,mods,guest,qemu}
cp "$ASSETS/busybox" "$R/bin/busybox"
cp "$ASSETS"/host-modules/{irqbypass,kvm,kvm-amd,kvm-intel,loop}.ko "$R/mods/"
copy_with_libs "$R" "$FIO"
cp "$BERTH" "$R/bin/berth"
for lib in $(ldd "$BERTH" | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
case "$PARTS" in *berth-old*)
  [ -x "${BENCH_BERTH_OLD:-}" ] || { say "berth-old needs BENCH_BERTH_OLD=/path/to/berth"; exit 1; }
  cp "$BENCH_BERTH_OLD" "$R/bin/berth-old";;
esac
ROUNDS=${BENCH_ROUNDS:-1}
case "$PARTS" in *qemu*)
  copy_with_libs "$R" "$QEMU"
  for f in bios-microvm.bin linuxboot_dma.bin; do
    # QEMU 7.2 links its firmware into /usr/share/qemu; QEMU 10 finds seabios's in place.
    src=
    for d in /usr/share/qemu /usr/share/seabios; do [ -f "$d/$f" ] && { src=$d/$f; break; }; done
    [ -n "$src" ] || { say "QEMU's firmware $f is missing (package seabios)"; exit 1; }
    cp "$src" "$R/qemu/"
  done;;
esac
cp "$ASSETS/bzImage" "$R/guest/"
cat "$ASSETS/initramfs.cpio.gz" "$WORK/fio.cpio.gz" "$WORK/test.cpio.gz" >"$R/guest/initrd"
cat >"$R/init" <<EOS
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm && mount -t tmpfs -o size=$((DISK_MIB + 64))M tmpfs /dev/shm
insmod /mods/irqbypass.ko; insmod /mods/kvm.ko; insmod /mods/loop.ko
insmod /mods/kvm-amd.ko 2>/dev/null || insmod /mods/kvm-intel.ko
$FIO_JOBS
echo "BENCH-START secs=$SECS disk_mib=$DISK_MIB"
echo "BENCH-QEMU-OPTS ${BENCH_QEMU_OPTS:-}"
dd if=/dev/zero of=/dev/shm/disk.img bs=1M count=$DISK_MIB 2>/dev/null
up() { echo "BENCH-UPTIME \$1 \$(cut -d' ' -f1 /proc/uptime)"; }
up host
case "$PARTS" in *host*)
  L=\$(losetup -f); losetup "\$L" /dev/shm/disk.img && fio_jobs host "\$L"; losetup -d "\$L";;
esac
# reboot=t: a triple fault ends both VMMs (microvm has no keyboard controller for reboot=k, and
# QEMU's reboot through the firmware would boot the guest again). A VMM that hangs is killed.
CMD="console=ttyS0 reboot=t panic=1 quiet berth.modules=virtio_pci,virtio_blk"
VMM_TIMEOUT=$((420 + SECS * 6))
# guest_results VMM RC: the guest's results from /tmp/console, or why there are none.
guest_results() {
  grep -E '^(RESULT|FIOFAIL)' /tmp/console | tr -d '\r'
  grep -q RESULT /tmp/console || { echo "NOGUEST \$1 exited \$2"; tail -n 15 /tmp/console /tmp/vmm.err | sed 's/^/NOGUEST /'; }
}
# berth_part TAG BINARY [OPTIONS]: one berth guest, results tagged TAG.
berth_part() {
  tag=\$1 bin=\$2; shift 2
  up \$tag
  timeout -s KILL \$VMM_TIMEOUT \$bin run --kernel /guest/bzImage --initrd /guest/initrd --memory 1024 --cpus 1 \
    --disk path=/dev/shm/disk.img --cmdline "\$CMD bench.vmm=\$tag" "\$@" \
    </dev/null >/tmp/console 2>/tmp/vmm.err
  guest_results \$tag \$?
}
qemu_part() {
  up qemu
  timeout -s KILL \$VMM_TIMEOUT $QEMU -L /qemu -M microvm,pcie=on -accel kvm -cpu host -smp 1 -m 1024 \
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel /guest/bzImage -initrd /guest/initrd -append "\$CMD bench.vmm=qemu" \
    -drive file=/dev/shm/disk.img,format=raw,if=none,id=d,cache=writeback,aio=threads \
    -device virtio-blk-pci,drive=d ${BENCH_QEMU_OPTS:-} </dev/null >/tmp/console 2>/tmp/vmm.err
  guest_results qemu \$?
}
for round in \$(seq $ROUNDS); do
  echo "BENCH-ROUND \$round"
  for part in $PARTS; do
    case \$part in
      berth) berth_part berth /bin/berth ;;
      berth-thread) berth_part berththread /bin/berth --disable-sandbox ;;
      berth-old) berth_part bertholdmain /bin/berth-old ;;
      qemu) qemu_part ;;
    esac
  done
done
up end
echo "BENCH-END"
poweroff -f
EOS
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/host.cpio.gz")
say "guest initrd $(( $(stat -c %s "$R/guest/initrd") / 1048576 )) MiB (fio archive $(( $(stat -c %s "$WORK/fio.cpio.gz") / 1048576 )) MiB), emulated host initrd $(( $(stat -c %s "$WORK/host.cpio.gz") / 1048576 )) MiB"
# One emulated host at a time on this machine: the test harness takes the same lock.
exec 9>"${TMPDIR:-/tmp}/berth-e2e.lock"
flock 9
say "booting the emulated host: parts '$PARTS', 3 fio jobs of $SECS s each per part${BENCH_QEMU_OPTS:+; QEMU with $BENCH_QEMU_OPTS}"
LOG=$OUT/disk-$(date +%Y%m%d-%H%M%S).log
timeout $((900 + SECS * 30 * ROUNDS)) qemu-system-x86_64 -accel tcg,thread=multi -M q35 -cpu max -smp 2 -m 4G \
  -nographic -no-reboot -kernel "$ASSETS/bzImage" -initrd "$WORK/host.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null | sed -u 's/\r//g' | tee "$LOG" |
  grep -E '^(RESULT|FIOFAIL|NOGUEST|BENCH)' >&2 || true
grep -q BENCH-END "$LOG" || { say "the emulated host did not finish; see $LOG"; exit 1; }
python3 bench/summarize.py --disk "$LOG" | tee "${LOG%.log}.txt"
