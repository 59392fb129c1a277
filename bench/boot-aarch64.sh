#!/bin/bash
# Boot benchmark on aarch64: berth against QEMU (-M virt -accel kvm) booting the same guest
# (Debian arm64 Image + busybox initramfs, 2 vCPUs, 256 MiB, `quiet`) inside one emulated
# aarch64 host with real KVM (QEMU TCG, virtualization=on, GICv3), alternately, RUNS times each.
#
#   bench/boot-aarch64.sh [RUNS]     (default 5; prints a table and the ratio of the medians)
#
# Measured in the emulated host, for both VMMs the same way: from the VMM's launch to the
# guest's init marker on the console, timestamped with /proc/uptime by a reader in the host
# (10 ms steps). For berth also its own boot timer (berth start -> the guest's devmem write).
# Absolute times are those of a slow emulated machine: compare the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
W=${TMPDIR:-/tmp}/berth-bench-aarch64
mkdir -p "$W"
say() { echo "bench: $*" >&2; }

BERTH=$(scripts/build-aarch64.sh build | tail -1)
A=$(scripts/aarch64-host-assets.sh qemu | tail -1)

rm -rf "$W/l2" && mkdir -p "$W/l2"/{bin,proc,sys,dev}
cp "$A/busybox" "$W/l2/bin/"
cat > "$W/l2/init" <<'EOI'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
grep -q berth.bt=1 /proc/cmdline && devmem 0x9020000 8 123
echo "=== L2 INIT REACHED: uptime $(cut -d' ' -f1 /proc/uptime)s, $(grep -c ^processor /proc/cpuinfo) cpus"
poweroff -f
EOI
chmod +x "$W/l2/init"

R=$W/l1
rm -rf "$R" && mkdir -p "$R"/{bin,proc,sys,dev,tmp,l2}
cp "$A/busybox" "$BERTH" "$R/bin/"
cp -a "$A/qemu/." "$R/"
cp "$A/Image" "$R/l2/Image"
(cd "$W/l2" && find . | cpio -o -H newc --quiet | gzip -1 > "$R/l2/initrd.cpio.gz")
cat > "$R/init" <<EOI
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
up() { cut -d' ' -f1 /proc/uptime; }
# Prints the host's uptime when the guest's init marker passes.
mark() { while IFS= read -r l; do case "\$l" in *"L2 INIT REACHED"*) echo "=== MARK \$1 \$(up)";; esac; echo "\$l"; done; }
for i in \$(seq $RUNS); do
  echo "=== START berth \$(up)"
  /bin/berth run --kernel /l2/Image --initrd /l2/initrd.cpio.gz --cpus 2 --memory 256 --boot-timer \
    --cmdline "console=ttyS0 panic=-1 quiet berth.bt=1" </dev/null 2>&1 | mark berth
  echo "=== START qemu \$(up)"
  qemu-system-aarch64 -nodefaults -nographic -no-reboot -M virt,gic-version=3 -accel kvm -cpu host \
    -m 256M -smp 2 -serial stdio -kernel /l2/Image -initrd /l2/initrd.cpio.gz \
    -append "console=ttyAMA0 panic=-1 quiet" </dev/null 2>&1 | mark qemu
done
echo "=== DONE"
poweroff -f
EOI
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 > "$W/l1.cpio.gz")
say "booting the emulated host ($RUNS runs of each VMM; waits for the e2e lock)"
flock /tmp/berth-e2e.lock timeout 1800 qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 \
  -cpu max,pauth=off -m 2G -smp 2 -nographic -no-reboot -kernel "$A/Image" -initrd "$W/l1.cpio.gz" \
  -append "console=ttyAMA0 panic=-1 quiet" > "$W/host.log" 2>&1 || true
grep -q "=== DONE" "$W/host.log" || { say "the emulated host did not finish; see $W/host.log"; exit 1; }

awk '
  /^=== START / { vmm = $3; start = $4 }
  /^=== MARK /  { t[$3, ++n[$3]] = $4 - start }
  /guest boot time: [0-9]+ us/ { for (i = 1; i <= NF; i++) if ($i == "us") bt[++nb] = $(i - 1) / 1e6 }
  function median(a, k,   i, j, s, x) {
    for (i = 1; i <= k; i++) s[i] = a[i]
    for (i = 2; i <= k; i++) { x = s[i]; for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
    return k % 2 ? s[(k + 1) / 2] : (s[k / 2] + s[k / 2 + 1]) / 2
  }
  END {
    printf "%-6s %-28s %s\n", "run", "berth launch->init (s)", "qemu launch->init (s)"
    for (i = 1; i <= n["berth"] || i <= n["qemu"]; i++) {
      printf "%-6d %-28.2f %.2f\n", i, t["berth", i], t["qemu", i]; b[i] = t["berth", i]; q[i] = t["qemu", i]
    }
    mb = median(b, n["berth"]); mq = median(q, n["qemu"])
    printf "median %-28.2f %.2f\n", mb, mq
    if (nb) printf "berth boot timer (berth start -> guest init), median: %.2f s\n", median(bt, nb)
    printf "ratio berth/qemu (medians): %.2f\n", mb / mq
  }' "$W/host.log"
