#!/bin/bash
# Fetch and build the guest assets berth's end-to-end tests (and scripts/boot-shell.sh) boot.
#
#   scripts/guest-assets.sh [--force] [x86_64|aarch64]
#
# On a Debian host with apt, downloads (without installing) the current kernel package
# (x86_64: linux-image-cloud-amd64; aarch64: linux-image-arm64:arm64) and busybox-static (of
# the guest's architecture), and builds in ${BERTH_ASSETS:-$HOME/.cache/berth}/<arch>/:
#   bzImage            x86_64: the package's vmlinuz
#   vmlinux            x86_64: the ELF kernel extracted from bzImage (what scripts/extract-vmlinux does)
#   Image, Image.gz    aarch64: the package's vmlinuz (a plain arm64 Image), and gzip'd
#   initramfs.cpio.gz  guest initramfs: busybox, virtio modules + modules.dep, /init (see below)
#   host-modules/      irqbypass.ko kvm.ko kvm-amd.ko kvm-intel.ko tun.ko loop.ko: loaded by the
#                      emulated host (L1) that gives the tests a real /dev/kvm (loop: bench/disk.sh);
#                      aarch64: tun.ko loop.ko (its KVM is built in)
#   busybox            the static busybox (also used for the emulated host's initramfs)
#   kernel-version     e.g. 6.1.0-56-cloud-amd64
#   modules/           the whole modules tree of the package (lib/modules/<ver>), for later use
#   packages           the .deb versions used; "stamp" marks a complete cache
# A rerun with a complete cache for the same kernel package and the same version of this script
# only checks and prints where the assets are. --force rebuilds.
#
# The guest's /init mounts proc, sysfs and devtmpfs, modprobes the modules listed in the kernel
# command line as berth.modules=a,b,c, moves its stdio to /dev/<name> when the command line has
# berth.console=<name> (e.g. hvc0, whose driver is a module), prints /proc/version and
# "BERTH-GUEST-INIT <uptime>",
# then runs /test.sh if it exists (a test supplies it in a second cpio archive concatenated to
# initramfs.cpio.gz), prints "BERTH-TEST-EXIT <status>" and reboots; without /test.sh it gives a
# shell on the console and reboots when the shell exits.
set -euo pipefail

FORCE=0
ARCH=x86_64
for a in "$@"; do
  case "$a" in
    --force) FORCE=1 ;;
    x86_64|amd64) ARCH=x86_64 ;;
    aarch64|arm64) ARCH=aarch64 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "guest-assets: unknown argument '$a' (usage: $0 [--force] [x86_64|aarch64])" >&2; exit 2 ;;
  esac
done

say() { echo "guest-assets: $*" >&2; }
die() { echo "guest-assets: error: $*" >&2; exit 1; }

BASE=${BERTH_ASSETS:-${HOME:?HOME is not set; set BERTH_ASSETS}/.cache/berth}
OUT=$BASE/$ARCH
# Modules the guest initramfs carries (their dependencies are added): .ko names in the package;
# those the kernel has built in are skipped.
GUEST_MODULES="virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
  virtio_mmio virtio_blk virtio_net virtio_console virtio-rng virtio_balloon vsock
  vmw_vsock_virtio_transport vmw_vsock_virtio_transport_common virtiofs fuse"
case $ARCH in
  x86_64)
    KPKG_META=linux-image-cloud-amd64
    BB_PKG=busybox-static
    GUEST_MODULES="$GUEST_MODULES pvpanic pvpanic-mmio"
    HOST_MODULES="virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-amd.ko
      arch/x86/kvm/kvm-intel.ko drivers/net/tun.ko drivers/block/loop.ko"
    KERNEL_FILES="bzImage vmlinux" ;;
  aarch64)
    # Foreign-architecture packages are downloaded, never installed (busybox-static:arm64
    # would replace the host's busybox).
    KPKG_META=linux-image-arm64:arm64
    BB_PKG=busybox-static:arm64
    HOST_MODULES="drivers/net/tun.ko drivers/block/loop.ko"
    KERNEL_FILES="Image Image.gz" ;;
esac

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" = 1 ] && return 0
  say "apt-get update"
  $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
  APT_UPDATED=1
}
# need COMMAND PACKAGE: a host tool, installed through scripts/host-deps.sh when it is missing.
HOSTDEPS=$(cd "$(dirname "$0")" && pwd)/host-deps.sh
need() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] && return 0
  "$HOSTDEPS" "$2" || exit 1
}
export PATH=$PATH:/usr/sbin:/sbin

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
  die "this script needs a Debian host with apt (apt-get, apt-cache, dpkg-deb)"
if [ "$ARCH" = aarch64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  say "adding the arm64 package architecture (to download arm64 packages)"
  $SUDO dpkg --add-architecture arm64
  apt_update
fi

# Resolve the current kernel package (the ABI name changes with security updates).
resolve_kpkg() {
  apt-cache depends "$KPKG_META" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'
}
KPKG=$(resolve_kpkg || true)
if [ -z "$KPKG" ]; then
  if [ -f "$OUT/stamp" ] && [ "$FORCE" = 0 ]; then
    KPKG=$(sed -n 's/^kernel-package //p' "$OUT/packages")
  else
    apt_update
    KPKG=$(resolve_kpkg || true)
    [ -n "$KPKG" ] || die "apt-cache does not know $KPKG_META (is this Debian with main enabled?)"
  fi
fi
SCRIPT_SUM=$(sha256sum "$0" | cut -d' ' -f1)
WANT_STAMP="$SCRIPT_SUM $KPKG"

check_assets() {
  local f
  for f in $KERNEL_FILES initramfs.cpio.gz busybox kernel-version; do
    [ -s "$OUT/$f" ] || return 1
  done
  for f in $HOST_MODULES; do
    [ -s "$OUT/host-modules/$(basename "$f")" ] || return 1
  done
}
print_assets() {
  say "assets for $ARCH ($(cat "$OUT/kernel-version")) in $OUT"
  echo "$OUT"
}

if [ "$FORCE" = 0 ] && [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$WANT_STAMP" ] && check_assets; then
  print_assets
  exit 0
fi

"$HOSTDEPS" assets || exit 1

mkdir -p "$OUT"
WORK=$(mktemp -d "$BASE/.work-$ARCH.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

say "downloading $KPKG and $BB_PKG"
# apt-get download as root warns that _apt cannot write to the directory: harmless.
if ! apt-get download "$KPKG" "$BB_PKG" >download.log 2>&1; then
  apt_update
  apt-get download "$KPKG" "$BB_PKG" >download.log 2>&1 ||
    { cat download.log >&2; die "apt-get download $KPKG $BB_PKG failed"; }
fi
KDEB=$(ls "${KPKG%%:*}"_*.deb); BDEB=$(ls busybox-static_*.deb)
dpkg-deb -x "$KDEB" k
dpkg-deb -x "$BDEB" b
# Debian 13 ships merged-/usr packages: usr/bin/busybox, usr/lib/modules.
[ -x b/bin/busybox ] || { [ -x b/usr/bin/busybox ] && mkdir -p b/bin && mv b/usr/bin/busybox b/bin/busybox; } ||
  die "busybox-static has no bin/busybox or usr/bin/busybox"
[ -d k/lib/modules ] || { [ -d k/usr/lib/modules ] && mkdir -p k/lib && mv k/usr/lib/modules k/lib/modules; } ||
  die "$KDEB has no lib/modules or usr/lib/modules"

KVER=$(ls k/lib/modules)
[ "$(echo "$KVER" | wc -w)" = 1 ] || die "expected one module tree in $KDEB, found: $KVER"
VMLINUZ=k/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "$KDEB has no boot/vmlinuz-$KVER"
MODS=k/lib/modules/$KVER

if [ "$ARCH" = x86_64 ]; then
# --- vmlinux: the ELF kernel inside the bzImage -------------------------------------------------
# The x86 boot protocol (>= 2.08) gives the compressed payload's place in the setup header:
# setup_sects (0x1f1), payload_offset (0x248) and payload_length (0x24c). The payload is the
# compressed vmlinux (Debian 6.1 cloud: LZ4, legacy frame), followed, for all compressors but
# gzip, by the uncompressed size as a 32-bit little-endian number (the kernel's *_with_size).
# scripts/extract-vmlinux finds the payload by scanning for magic numbers instead; the header
# is exact.
u8()  { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
[ "$(dd if="$VMLINUZ" bs=1 skip=$((0x202)) count=4 2>/dev/null)" = HdrS ] || die "$VMLINUZ is not a bzImage"
SETUP_SECTS=$(u8 "$VMLINUZ" $((0x1f1))); [ "$SETUP_SECTS" = 0 ] && SETUP_SECTS=4
PAYLOAD_OFF=$(( (SETUP_SECTS + 1) * 512 + $(u32 "$VMLINUZ" $((0x248))) ))
PAYLOAD_LEN=$(u32 "$VMLINUZ" $((0x24c)))
dd if="$VMLINUZ" of=payload iflag=skip_bytes,count_bytes skip="$PAYLOAD_OFF" count="$PAYLOAD_LEN" status=none
MAGIC=$(od -An -tx1 -N6 payload | tr -d ' \n')
case "$MAGIC" in
  1f8b*)         COMP=gzip;  DECOMP="gzip -dc" ;;
  02214c18*)     COMP=lz4;   DECOMP="lz4 -dc" ;;
  fd377a585a00*) COMP=xz;    DECOMP="xz -dc" ;;
  28b52ffd*)     COMP=zstd;  DECOMP="zstd -dc" ;;
  5d0000*)       COMP=lzma;  DECOMP="xz -dc --format=lzma" ;;
  425a68*)       COMP=bzip2; DECOMP="bzip2 -dc" ;;
  894c5a*)       COMP=lzo;   DECOMP="lzop -dc" ;;
  *) die "unknown compression of the bzImage payload (magic $MAGIC)" ;;
esac
case $COMP in
  gzip) need gzip gzip ;; lz4) need lz4 lz4 ;; xz|lzma) need xz xz-utils ;;
  zstd) need zstd zstd ;; bzip2) need bzip2 bzip2 ;; lzo) need lzop lzop ;;
esac
UNCOMP_SIZE=$(u32 payload $((PAYLOAD_LEN - 4)))
# Without the trailing size first (lz4's legacy frame rejects it), then the whole payload.
if ! head -c $((PAYLOAD_LEN - 4)) payload 2>/dev/null | $DECOMP > vmlinux 2>decomp.log ||
   [ "$(stat -c %s vmlinux)" != "$UNCOMP_SIZE" ]; then
  $DECOMP < payload > vmlinux 2>decomp.log || { cat decomp.log >&2; die "$COMP decompression of the payload failed"; }
fi
file -b vmlinux | grep -q '^ELF 64-bit LSB executable, x86-64' ||
  die "the extracted vmlinux is not an ELF 64-bit executable: $(file -b vmlinux)"
say "vmlinux: $COMP-compressed payload, $(stat -c %s vmlinux) bytes, $(file -b vmlinux | cut -d, -f1-2)"
else
# --- aarch64: vmlinuz is a plain Image; berth also takes it gzip'd ------------------------------
[ "$(dd if="$VMLINUZ" bs=1 skip=56 count=4 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 41524d64 ] ||
  die "$VMLINUZ is not an arm64 Image"
COMP=none
gzip -9 -n -c "$VMLINUZ" > Image.gz
fi

# --- modules ---------------------------------------------------------------------------------------
# Debian 12 ships modules as plain .ko, Debian 13 as .ko.xz: the initramfs and the emulated host
# get them decompressed (busybox's insmod and modprobe read plain ones).
# copy_mod SRC DEST.ko: SRC (.ko, .ko.xz, .ko.zst or .ko.gz) decompressed to DEST.ko.
copy_mod() {
  case "$1" in
    *.ko) cp "$1" "$2" ;;
    *.ko.xz) need xz xz-utils; xz -dc "$1" >"$2" ;;
    *.ko.zst) need zstd zstd; zstd -qdc "$1" >"$2" ;;
    *.ko.gz) gzip -dc "$1" >"$2" ;;
    *) die "unknown module file $1" ;;
  esac
}
# plain PATH: PATH without the compression suffix.
plain() { local p=${1%.xz}; p=${p%.zst}; echo "${p%.gz}"; }
# find_mod NAME: the path (relative to $MODS) of NAME.ko[.xz|.zst|.gz], '-' and '_' being the same.
find_mod() {
  local n=$1 p
  p=$(cd "$MODS" && find kernel \( -name "$n.ko*" -o -name "${n//-/_}.ko*" -o -name "${n//_/-}.ko*" \) -print -quit)
  if [ -z "$p" ]; then
    # Built into this kernel: nothing to carry.
    grep -qE "/(${n}|${n//-/_}|${n//_/-})\.ko\$" "$MODS/modules.builtin" && return 0
    die "module $n is not in $KPKG"
  fi
  echo "$p"
}
declare -A SEEN=()
WANTED=()
add_mod() {
  local p dep
  p=$(find_mod "$1")
  [ -z "$p" ] && return 0
  [ -n "${SEEN[$p]:-}" ] && return 0
  SEEN[$p]=1
  for dep in $(modinfo -F depends "$MODS/$p" | tr , ' '); do add_mod "$dep"; done
  WANTED+=("$p")
}
for m in $GUEST_MODULES; do add_mod "$m"; done

# --- guest initramfs -----------------------------------------------------------------------------
R=root
mkdir -p $R/bin $R/sbin $R/usr/bin $R/usr/sbin $R/proc $R/sys $R/dev $R/tmp $R/run $R/mnt $R/root \
  $R/etc $R/lib/modules/"$KVER"
cp b/bin/busybox $R/bin/busybox
PLAIN=()
for p in "${WANTED[@]}"; do
  mkdir -p "$R/lib/modules/$KVER/$(dirname "$p")"
  copy_mod "$MODS/$p" "$R/lib/modules/$KVER/$(plain "$p")"
  PLAIN+=("$(plain "$p")")
done
cp "$MODS"/modules.builtin "$MODS"/modules.builtin.modinfo $R/lib/modules/"$KVER"/
# modules.order limited to what is there (busybox modprobe only needs modules.dep, but keep the
# tree consistent for kmod tools too).
grep -Fxf <(printf '%s\n' "${PLAIN[@]}") "$MODS/modules.order" > $R/lib/modules/"$KVER"/modules.order || true
depmod -b "$PWD/$R" "$KVER" 2>depmod.log || { cat depmod.log >&2; die "depmod failed"; }
[ -s $R/lib/modules/"$KVER"/modules.dep ] || die "depmod wrote no modules.dep"
echo "berth" > $R/etc/hostname
cat > $R/init <<'EOF'
#!/bin/busybox sh
# berth guest init (scripts/guest-assets.sh)
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname -F /etc/hostname
CONSOLE=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    berth.modules=*)
      for m in $(echo "${arg#berth.modules=}" | tr , ' '); do
        modprobe "$m" || echo "BERTH-GUEST-INIT: modprobe $m failed"
      done ;;
    berth.console=*) CONSOLE=${arg#berth.console=} ;;
  esac
done
# berth.console=hvc0: the kernel's console (ttyS0) stays, but init and what it starts talk on
# /dev/hvc0, which appears only once virtio_console (a module, loaded above) has probed. The
# node can appear before the port opens (ENODEV for a moment, seen with 6.1.0-57), and a failed
# redirect on exec would end init: wait until a trial open in a subshell succeeds.
if [ -n "$CONSOLE" ]; then
  i=0
  while ! ( : <>"/dev/$CONSOLE" ) 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if ( : <>"/dev/$CONSOLE" ) 2>/dev/null; then
    exec <>"/dev/$CONSOLE" >&0 2>&0
  else
    echo "BERTH-GUEST-INIT: no /dev/$CONSOLE after 5 s, staying on the kernel console"
    CONSOLE=
  fi
fi
cat /proc/version
echo "BERTH-GUEST-INIT $(cut -d' ' -f1 /proc/uptime)"
if [ -f /test.sh ]; then
  cd /
  sh /test.sh
  echo "BERTH-TEST-EXIT $?"
else
  echo "berth guest shell ($(uname -r)): 'exit' or Ctrl-D reboots (berth then exits)"
  if [ -n "$CONSOLE" ]; then
    # cttyhack would pick the kernel's console (ttyS0): open hvc0 as the controlling tty.
    setsid sh -c "exec sh -l <>/dev/$CONSOLE >&0 2>&0"
  else
    setsid cttyhack sh -l
  fi
fi
reboot -f
EOF
chmod 755 $R/init
(cd $R && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > initramfs.cpio.gz

# --- install into the cache ------------------------------------------------------------------------
STAGE=$WORK/out
mkdir -p "$STAGE/host-modules"
if [ "$ARCH" = x86_64 ]; then
  cp "$VMLINUZ" "$STAGE/bzImage"
  mv vmlinux "$STAGE/vmlinux"
else
  cp "$VMLINUZ" "$STAGE/Image"
  mv Image.gz "$STAGE/Image.gz"
fi
mv initramfs.cpio.gz "$STAGE/initramfs.cpio.gz"
cp b/bin/busybox "$STAGE/busybox"
for p in $HOST_MODULES; do
  src=$(ls "$MODS/kernel/$p"* 2>/dev/null | head -1)
  [ -n "$src" ] || die "$KPKG has no $p"
  copy_mod "$src" "$STAGE/host-modules/$(basename "$p")"
done
echo "$KVER" > "$STAGE/kernel-version"
mv "$MODS" "$STAGE/modules"
{
  echo "kernel-package $KPKG"
  echo "kernel-deb $KDEB"
  echo "busybox-deb $BDEB"
  echo "compression $COMP"
} > "$STAGE/packages"
echo "$WANT_STAMP" > "$STAGE/stamp"
rm -rf "$OUT.old"
[ -e "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$STAGE" "$OUT"
rm -rf "$OUT.old"
check_assets || die "internal error: incomplete assets in $OUT"
print_assets
