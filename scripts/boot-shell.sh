#!/bin/bash
# Build berth, fetch the guest assets and boot a Debian guest to a shell on the serial console.
#
#   scripts/boot-shell.sh [extra berth run options, e.g. --cpus 2 --memory 1024]
#
# Where /dev/kvm is hardware-backed, berth runs here. Otherwise (no /dev/kvm, or a software
# KVM such as PVM that cannot boot Linux) berth runs inside an emulated x86_64 host: QEMU (TCG,
# -cpu max, which emulates SVM with nested paging) boots the same Debian kernel with kvm-amd
# loaded, and berth runs there on real KVM. That is slow (a minute to a shell) but faithful.
# Leave the guest with `poweroff -f`; Ctrl-A x quits berth (or, in the emulated host, QEMU).
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=${BERTH_ASSETS:-$HOME/.cache/berth}/x86_64
say() { echo "boot-shell: $*" >&2; }

cargo build --release -p berth >&2
BERTH=$PWD/target/release/berth
scripts/guest-assets.sh x86_64 >&2

hardware_kvm() {
  [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] &&
    { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }
}

CMDLINE="console=ttyS0 reboot=k panic=1 quiet"
if hardware_kvm && [ "${BERTH_E2E_MODE:-}" != emulated ]; then
  say "booting natively on this host's KVM"
  exec "$BERTH" run --kernel "$ASSETS/bzImage" --initrd "$ASSETS/initramfs.cpio.gz" \
    --cmdline "$CMDLINE" "$@"
fi

scripts/host-deps.sh e2e-x86_64
say "this host's /dev/kvm cannot boot Linux (missing, or a software KVM):"
say "running berth inside an emulated x86_64 host with real KVM (QEMU TCG); expect about a minute"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/berth-shell.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,proc,sys,dev,tmp,mods,guest,lib64,lib/x86_64-linux-gnu}
cp "$ASSETS/busybox" "$R/bin/busybox"
cp "$ASSETS"/host-modules/{irqbypass,kvm,kvm-amd,kvm-intel}.ko "$R/mods/"
cp "$BERTH" "$R/bin/berth"
for lib in $(ldd "$BERTH" | grep -o '/lib[^ ]*'); do cp -L "$lib" "$R$lib"; done
cp "$ASSETS/bzImage" "$ASSETS/initramfs.cpio.gz" "$R/guest/"
# The extra options, quoted for the emulated host's shell (none: nothing, not an empty word).
ARGS=
[ $# -eq 0 ] || ARGS=$(printf ' %q' "$@")
cat > "$R/init" <<EOS
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
insmod /mods/irqbypass.ko; insmod /mods/kvm.ko
insmod /mods/kvm-amd.ko 2>/dev/null || insmod /mods/kvm-intel.ko
echo "emulated host: starting berth (Ctrl-A x leaves QEMU)"
/bin/berth run --kernel /guest/bzImage --initrd /guest/initramfs.cpio.gz --cmdline "$CMDLINE" $ARGS
echo "emulated host: berth exited with status \$?"
poweroff -f
EOS
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/host.cpio.gz")
# One emulated host at a time on this machine: the test harness takes the same lock.
exec 9>"${TMPDIR:-/tmp}/berth-e2e.lock"
flock 9 || true
qemu-system-x86_64 -accel tcg,thread=multi -M q35 -cpu max -smp 2 -m 2G -nographic -no-reboot \
  -kernel "$ASSETS/bzImage" -initrd "$WORK/host.cpio.gz" -append "console=ttyS0 panic=-1 quiet"
