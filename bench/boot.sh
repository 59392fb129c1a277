#!/bin/bash
# Boot benchmark: berth against QEMU (-M microvm) on the same guest, in the same emulated host.
#
#   bench/boot.sh [RUNS]        (default 10 runs of each; prints a table, writes bench/results/)
#   BENCH_PARTS="pairs scale rss" selects parts (default all three; "smp" runs both VMMs with
#   BENCH_SMP vCPUs, default 32; "pages" runs berth with --hugepages thp and off alternately;
#   "devices" boots berth with a disk, rng and a virtio console, the backends in processes and in
#   threads alternately, and measures the PSS of berth and its device processes; "irqchip" runs
#   berth with --irqchip kernel and split alternately)
#
# Everything runs inside one emulated x86_64 host with real KVM (QEMU TCG, -cpu max, kvm-amd; see
# docs/testing.md), so absolute times are those of a slow emulated machine: compare ratios.
# Where /dev/kvm is hardware-backed the same measurements could run natively; this script always
# uses the emulated host so that figures from different machines of this project compare.
#
# Measured, each over RUNS boots of the Debian cloud kernel + busybox initramfs with
# `console=ttyS0 reboot=t panic=1 quiet` (triple-fault reboot: the same path on both VMMs):
#   (a) berth start -> first vCPU entry            berth's own debug log
#   (b) berth start -> guest init (boot timer)     the guest's init writes 123 to 0xF000_0000
#       berth start -> exit after `reboot -f`      berth's own debug log
#       VMM launch -> exit, for berth and QEMU     /proc/uptime around the process (10 ms steps)
#       VMM launch -> init marker on the console   timestamped by a reader in the emulated host
#   (c) resident memory outside guest RAM          /proc/PID/smaps while the guest sleeps
#   berth start -> init with 1, 4 and 16 vCPUs    (issue 3: boot time versus vCPU count)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
ASSETS=${BERTH_ASSETS:-$HOME/.cache/berth}/x86_64
OUT=bench/results
mkdir -p "$OUT"
say() { echo "bench: $*" >&2; }

cargo build --release -p berth >&2
BERTH=$PWD/target/release/berth
scripts/guest-assets.sh x86_64 >&2
scripts/host-deps.sh e2e-x86_64
QEMU=$(command -v qemu-system-x86_64)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,proc,sys,dev,tmp,mods,guest,qemu,lib64,lib/x86_64-linux-gnu,usr/lib/x86_64-linux-gnu}
cp "$ASSETS/busybox" "$R/bin/busybox"
cp "$ASSETS"/host-modules/{irqbypass,kvm,kvm-amd,kvm-intel}.ko "$R/mods/"
cp "$BERTH" "$R/bin/berth"
cp "$QEMU" "$R/bin/qemu-system-x86_64"
for bin in "$BERTH" "$QEMU"; do
  for lib in $(ldd "$bin" | grep -o '/[^ ]*\.so[^ ]*'); do mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"; done
done
for f in bios-microvm.bin linuxboot_dma.bin; do
    # QEMU 7.2 links its firmware into /usr/share/qemu; QEMU 10 finds seabios's in place.
    src=
    for d in /usr/share/qemu /usr/share/seabios; do [ -f "$d/$f" ] && { src=$d/$f; break; }; done
    [ -n "$src" ] || { say "QEMU's firmware $f is missing (package seabios)"; exit 1; }
    cp "$src" "$R/qemu/"
  done
cp "$ASSETS/bzImage" "$R/guest/"

# Guest initrds: the base one plus an appended /test.sh (Linux unpacks concatenated archives).
guest_initrd() { # name, test.sh text
  local d=$WORK/t-$1; mkdir -p "$d"; printf '%s\n' "$2" >"$d/test.sh"
  (cd "$d" && echo test.sh | cpio -o -H newc --quiet | gzip -1) >"$WORK/$1.cpio.gz"
  cat "$ASSETS/initramfs.cpio.gz" "$WORK/$1.cpio.gz" >"$R/guest/$1.cpio.gz"
}
guest_initrd timer 'devmem 0xf0000000 8 123; reboot -f'
guest_initrd plain 'reboot -f'
guest_initrd sleep 'devmem 0xf0000000 8 123; sleep 40; reboot -f'

cat >"$R/init" <<EOS
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
insmod /mods/irqbypass.ko; insmod /mods/kvm.ko
insmod /mods/kvm-amd.ko 2>/dev/null || insmod /mods/kvm-intel.ko
CMD="console=ttyS0 reboot=t panic=1 quiet"
up() { cut -d' ' -f1 /proc/uptime; }
# Prints the uptime at which the guest's init marker shows on stdin.
# Passes the VMM's "RC n" line through, keeps the console in /tmp/console.
stamp() { : >/tmp/console; while IFS= read -r l; do echo "\$l" >>/tmp/console; case "\$l" in *BERTH-GUEST-INIT*) echo "MARK \$(up)";; RC\ *) echo "\$l";; esac; done; }
# A run that never reached the guest's init shows why.
explain() { grep -q MARK /tmp/mark || { tail -n 12 /tmp/console | sed 's/^/NOINIT console: /'; grep -v 'us after' /tmp/err 2>/dev/null | tail -n 5 | sed 's/^/NOINIT berth: /'; }; }
berth_run() { # tag cpus initrd [more berth options]
  s=\$(up)
  { /bin/berth -l debug run --kernel /guest/bzImage --initrd /guest/\$3.cpio.gz --cpus \$2 --memory 256 \
    --cmdline "\$CMD" --boot-timer \${4:-} </dev/null 2>/tmp/err; echo; echo "RC \$?"; } | stamp >/tmp/mark
  e=\$(up)
  echo "RESULT \$1 cpus=\$2 rc=\$(sed -n 's/^RC //p' /tmp/mark) launch=\$s end=\$e \$(grep MARK /tmp/mark) \$(grep -o 'first vCPU entry [0-9]*' /tmp/err | tr ' ' _) \$(grep -o 'guest boot time: [0-9]*' /tmp/err | tr -d ' :') \$(grep -o 'exiting [0-9]*' /tmp/err | tr ' ' _)"
  explain
}
qemu_run() { # [cpus]
  s=\$(up)
  { /bin/qemu-system-x86_64 -L /qemu -M microvm -accel kvm -cpu host -smp \${1:-1} -m 256 -nodefaults \
    -no-user-config -nographic -no-reboot -serial stdio -kernel /guest/bzImage \
    -initrd /guest/plain.cpio.gz -append "\$CMD" </dev/null 2>/tmp/qerr; echo; echo "RC \$?"; } | stamp >/tmp/mark
  e=\$(up)
  echo "RESULT qemu cpus=\${1:-1} rc=\$(sed -n 's/^RC //p' /tmp/mark) launch=\$s end=\$e \$(grep MARK /tmp/mark)"
  explain
}
# pss PID LABEL: proportional set size (KiB) of PID and its children outside guest RAM (the
# 256 MiB mapping every process of the VM shares), and inside it.
pss() {
  pid=\$1 label=\$2
  pids="\$pid \$(for d in /proc/[0-9]*; do [ "\$(awk '/^PPid:/ { print \$2 }' \$d/status 2>/dev/null)" = "\$pid" ] && echo \${d#/proc/}; done)"
  out=0; ram=0; n=0
  for p in \$pids; do
    r=\$(awk '/^Size:/ { big = (\$2 == 262144) } /^Pss:/ { if (big) r += \$2; else o += \$2 } END { print o + 0, r + 0 }' /proc/\$p/smaps 2>/dev/null)
    [ -n "\$r" ] || { echo "PSS \$label: cannot read /proc/\$p/smaps"; continue; }
    set -- \$r
    out=\$((out + \$1)); ram=\$((ram + \$2)); n=\$((n + 1))
  done
  echo "PSS \$label processes=\$n outside_guest_kib=\$out guest_kib=\$ram"
}
rss() { # pid label: resident KiB outside guest RAM (the memfd for berth, the 256 MiB anon map for QEMU)
  awk -v label=\$2 '
    /^[0-9a-f]+-[0-9a-f]+ / { split(\$1, a, "-"); name = \$6; big = 0 }
    /^Size:/ { if (\$2 == 262144) big = 1 }
    /^Rss:/ { if (name ~ /berth-guest-ram/ || big) guest += \$2; else other += \$2 }
    END { printf "RSS %s outside_guest_kib=%d guest_kib=%d\n", label, other, guest }' /proc/\$1/smaps
}
echo "BENCH-START runs=$RUNS"
PARTS="${BENCH_PARTS:-pairs scale rss}"
case "\$PARTS" in *pairs*) for i in \$(seq $RUNS); do berth_run berth 1 timer; qemu_run; done;; esac
# BENCH_PARTS=pages: guest RAM on transparent huge pages (the default) against 4 KiB pages.
case "\$PARTS" in *pages*) for i in \$(seq $RUNS); do berth_run thp 1 timer "--hugepages thp"; berth_run 4k 1 timer "--hugepages off"; done;; esac
# BENCH_PARTS=irqchip: KVM's whole interrupt controller against berth's user-space IOAPIC.
case "\$PARTS" in *irqchip*) for i in \$(seq $RUNS); do berth_run irqkernel 1 timer "--irqchip kernel"; berth_run irqsplit 1 timer "--irqchip split"; done;; esac
# BENCH_PARTS=devices: disk, rng and virtio console; backends in processes, then in threads.
DEV="--disk path=/tmp/disk.img --rng --console virtio --serial none"
DEVCMD="berth.console=hvc0 berth.modules=virtio_pci,virtio_blk,virtio-rng,virtio_console"
case "\$PARTS" in *devices*)
  dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null
  CMD0=\$CMD; CMD="\$CMD \$DEVCMD"
  for i in \$(seq $RUNS); do berth_run devproc 1 timer "\$DEV"; berth_run devthread 1 timer "\$DEV --disable-sandbox"; done
  for mode in proc thread; do
    extra=; [ \$mode = thread ] && extra=--disable-sandbox
    /bin/berth run --kernel /guest/bzImage --initrd /guest/sleep.cpio.gz --memory 256 --cmdline "\$CMD" \$DEV \$extra </dev/null >/dev/null 2>/tmp/pss-err &
    p=\$!; sleep 25; pss \$p dev\$mode
    while kill -0 \$p 2>/dev/null; do sleep 0.5; done
    sed 's/^/PSSLOG berth: /' /tmp/pss-err
  done
  CMD=\$CMD0;;
esac
case "\$PARTS" in *scale*) for c in 1 4 16; do for i in \$(seq $(( (RUNS + 1) / 2 ))); do berth_run scale \$c timer; done; done;; esac
# BENCH_PARTS=smp: both VMMs with BENCH_SMP vCPUs (default 32), to tell berth's SMP bugs from
# the emulated host's.
case "\$PARTS" in *smp*) for i in \$(seq $RUNS); do berth_run smp ${BENCH_SMP:-32} timer; qemu_run ${BENCH_SMP:-32}; done;; esac
case "\$PARTS" in *rss*)
/bin/berth run --kernel /guest/bzImage --initrd /guest/sleep.cpio.gz --memory 256 --cmdline "\$CMD" </dev/null >/dev/null 2>&1 &
p=\$!; sleep 25; rss \$p berth; wait \$p
/bin/qemu-system-x86_64 -L /qemu -M microvm -accel kvm -cpu host -smp 1 -m 256 -nodefaults -no-user-config \
  -nographic -no-reboot -serial stdio -kernel /guest/bzImage -initrd /guest/sleep.cpio.gz -append "\$CMD" </dev/null >/dev/null 2>&1 &
p=\$!; sleep 25; rss \$p qemu; wait \$p;;
esac
echo "BENCH-END"
poweroff -f
EOS
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/host.cpio.gz")
# One emulated host at a time on this machine: the test harness takes the same lock.
exec 9>"${TMPDIR:-/tmp}/berth-e2e.lock"
flock 9 || true
say "booting the emulated host; $RUNS runs of each VMM take a while (about 30 s per pair)"
LOG=$OUT/boot-$(date +%Y%m%d-%H%M%S).log
timeout $((600 + RUNS * 120)) qemu-system-x86_64 -accel tcg,thread=multi -M q35 -cpu max -smp 2 -m 3G \
  -nographic -no-reboot -kernel "$ASSETS/bzImage" -initrd "$WORK/host.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet" </dev/null | tr -d '\r' | tee "$LOG" | grep -E '^(RESULT|RSS|BENCH|NOINIT)' >&2 || true
grep -q BENCH-END "$LOG" || { say "the emulated host did not finish; see $LOG"; exit 1; }
python3 bench/summarize.py "$LOG" | tee "${LOG%.log}.txt"
