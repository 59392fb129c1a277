#!/bin/bash
# Soak: BOOTS guests booted back to back under berth in one emulated host, each with disk I/O
# and an rng read, every device jailed; failures reported by cause (docs/benchmarks.md).
#
#   bench/soak.sh [BOOTS] [ARCH]     default 100 boots on x86_64 (the issue asks 20 on aarch64)
#
# Each guest (the test assets' kernel and initramfs, 1 vCPU, 256 MiB, `quiet`) writes 4 MiB of
# random data at a random offset of /dev/vda with fsync, drops its caches, reads them back and
# compares SHA-256; reads /dev/hwrng; then its init reboots and berth exits 0. A boot counts as
# ok only with status 0 and both checks passed. Any other end is a failure, classified as
#   io-mismatch   the data read back differs (a berth bug: the disk lost data)
#   timeout       berth had not exited after 240 s and was killed
#   guest-panic   "Kernel panic" on the guest console
#   berth-error   berth exited non-zero with an error line (shown)
#   rc-N          anything else
# and, separately, whether there is evidence that the emulated host caused it: RCU stalls, soft
# lockups, hung tasks or an unstable clocksource reported by the guest or the emulated host's
# kernel during that boot (TCG on two shared cores can starve a vCPU for seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
BOOTS=${1:-100}
ARCH=${2:-x86_64}
ASSETS=${BERTH_ASSETS:-$HOME/.cache/berth}
OUT=bench/results
mkdir -p "$OUT"
say() { echo "soak: $*" >&2; }

scripts/host-deps.sh "e2e-$ARCH" >&2
scripts/guest-assets.sh "$ARCH" >&2
case "$ARCH" in
x86_64)
  cargo build --release -p berth >&2
  BERTH=$PWD/target/release/berth
  KERNEL=bzImage CONSOLE=ttyS0
  QEMU=(qemu-system-x86_64 -accel tcg,thread=multi -M q35 -cpu max)
  ;;
aarch64)
  BERTH=$(scripts/build-aarch64.sh build | tail -1)
  KERNEL=Image CONSOLE=ttyAMA0
  QEMU=(qemu-system-aarch64 -accel tcg,thread=multi -M virt,virtualization=on,gic-version=3 -cpu max,pauth=off)
  ;;
*) say "ARCH is x86_64 or aarch64"; exit 2 ;;
esac
A=$ASSETS/$ARCH

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-soak.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
d=$WORK/guest-test; mkdir -p "$d"
cat >"$d/test.sh" <<'EOS'
s=$((RANDOM % 56))
dd if=/dev/urandom of=/tmp/w bs=1M count=4 2>/dev/null
a=$(sha256sum /tmp/w | cut -c1-64)
dd if=/tmp/w of=/dev/vda bs=1M seek=$s conv=fsync 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
b=$(dd if=/dev/vda bs=1M skip=$s count=4 2>/dev/null | sha256sum | cut -c1-64)
if [ "$a" = "$b" ]; then echo SOAK-IO-OK; else echo "SOAK-IO-BAD at ${s} MiB"; fi
echo "SOAK-RNG $(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | wc -c)"
EOS
(cd "$d" && echo test.sh | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$WORK/test.cpio.gz"

R=$WORK/root
mkdir -p "$R"/{bin,proc,sys,dev,tmp,mods,guest}
cp "$A/busybox" "$R/bin/busybox"
if [ "$ARCH" = x86_64 ]; then
  cp "$A"/host-modules/{irqbypass,kvm,kvm-amd,kvm-intel}.ko "$R/mods/"
fi
cp "$BERTH" "$R/bin/berth"
for lib in $(ldd "$BERTH" 2>/dev/null | grep -o '/[^ ]*'); do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
cp "$A/$KERNEL" "$R/guest/kernel"
cat "$A/initramfs.cpio.gz" "$WORK/test.cpio.gz" >"$R/guest/initrd"
cat >"$R/init" <<EOS
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm && mount -t tmpfs -o size=128M tmpfs /dev/shm
for m in irqbypass kvm kvm-amd kvm-intel; do [ -f /mods/\$m.ko ] && insmod /mods/\$m.ko 2>/dev/null; done
dd if=/dev/zero of=/dev/shm/disk.img bs=1M count=64 2>/dev/null
CMD="console=ttyS0 reboot=k panic=1 quiet berth.modules=virtio_pci,virtio_blk,virtio-rng"
STALL='rcu_sched|rcu: INFO|rcu_preempt|soft lockup|hung_task|blocked for more than|clocksource.*unstable|watchdog'
echo "SOAK-START boots=$BOOTS arch=$ARCH"
dmesg -c >/dev/null
for i in \$(seq $BOOTS); do
  t0=\$(cut -d' ' -f1 /proc/uptime)
  timeout -s KILL 240 berth run --kernel /guest/kernel --initrd /guest/initrd --memory 256 --cpus 1 \
    --disk path=/dev/shm/disk.img --rng --cmdline "\$CMD" </dev/null >/tmp/c 2>/tmp/e
  rc=\$?
  t1=\$(cut -d' ' -f1 /proc/uptime)
  if [ \$rc = 0 ] && grep -q SOAK-IO-OK /tmp/c && grep -q 'SOAK-RNG 64' /tmp/c; then cause=ok
  elif grep -q SOAK-IO-BAD /tmp/c; then cause=io-mismatch
  elif [ \$rc = 137 ]; then cause=timeout
  elif grep -q 'Kernel panic' /tmp/c; then cause=guest-panic
  elif grep -q 'berth: error' /tmp/e; then cause=berth-error
  else cause=rc-\$rc
  fi
  host=no
  { grep -E "\$STALL" /tmp/c /tmp/e; dmesg -c | grep -E "\$STALL"; } >/tmp/stall 2>/dev/null && host=yes
  echo "SOAK \$i rc=\$rc secs=\$(awk "BEGIN{print \$t1-\$t0}") cause=\$cause host-evidence=\$host"
  if [ \$cause != ok ]; then
    tail -n 8 /tmp/c | sed 's/^/SOAK-LOG console: /'
    tail -n 4 /tmp/e | sed 's/^/SOAK-LOG berth: /'
    head -n 4 /tmp/stall | sed 's/^/SOAK-LOG stall: /'
  fi
done
echo "SOAK-END"
poweroff -f
EOS
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/host.cpio.gz")
exec 9>"${TMPDIR:-/tmp}/berth-e2e.lock"
flock 9
LOG=$OUT/soak-$ARCH-$(date +%Y%m%d-%H%M%S).log
say "booting the emulated $ARCH host for $BOOTS boots (log: $LOG)"
timeout $((600 + BOOTS * 250)) "${QEMU[@]}" -smp 2 -m 2G -nographic -no-reboot \
  -kernel "$A/$KERNEL" -initrd "$WORK/host.cpio.gz" -append "console=$CONSOLE panic=-1 quiet" \
  </dev/null | sed -u 's/\r//g' | tee "$LOG" | grep -E '^SOAK' >&2 || true
grep -q SOAK-END "$LOG" || say "the emulated host did not finish: the summary covers the boots it reported"
python3 - "$LOG" <<'EOP' | tee "${LOG%.log}.txt"
import collections, re, statistics, sys
boots = [dict(kv.split("=", 1) for kv in l.split()[2:])
         for l in open(sys.argv[1], errors="replace") if re.match(r"SOAK \d", l)]
causes = collections.Counter(b["cause"] for b in boots)
fails = [b for b in boots if b["cause"] != "ok"]
host = sum(b["host-evidence"] == "yes" for b in fails)
print(f"boots {len(boots)}, ok {causes['ok']}, failed {len(fails)} (with emulated-host evidence {host})")
for c, n in causes.items():
    if c != "ok":
        print(f"  {c}: {n}")
if boots:
    secs = [float(b["secs"]) for b in boots]
    print(f"seconds per boot (launch to exit): median {statistics.median(secs):.2f}, max {max(secs):.2f}")
EOP
