#!/bin/bash
# Fetches what the aarch64 emulated-host runs need (scripts/boot-aarch64-host.sh,
# bench/boot-aarch64.sh) into ${BERTH_ASSETS:-~/.cache/berth}/aarch64-host/ and prints that path:
#   Image        the Debian arm64 kernel (linux-image-arm64), both the host's and the guest's
#   modules/     its modules tree (virtio drivers for the guest)
#   busybox      static arm64 busybox (downloaded, not installed: it would replace the host's)
#   qemu/        with `qemu`: arm64 qemu-system-aarch64 and its libraries, for the comparison
# Installs qemu-system-arm (the emulator of the host) when missing (scripts/host-deps.sh). Until scripts/guest-assets.sh
# learns aarch64, this is where the aarch64 runs get their files.
set -euo pipefail
WANT_QEMU=${1:-}
OUT=${BERTH_ASSETS:-$HOME/.cache/berth}/aarch64-host
say() { echo "aarch64-host-assets: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$OUT/debs"
dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -qq; }
"$(dirname "$0")/host-deps.sh" aarch64-host
KPKG=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$KPKG" ] || { apt-get update -qq; KPKG=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/{print $2; exit}'); }
cd "$OUT/debs"
if [ "$(cat "$OUT/kernel-package" 2>/dev/null)" != "$KPKG" ] || [ ! -s "$OUT/Image" ]; then
  say "downloading $KPKG and busybox-static:arm64"
  rm -f ./*.deb
  apt-get download "$KPKG" busybox-static:arm64 >/dev/null 2>&1
  rm -rf "$OUT/k" "$OUT/b" && mkdir -p "$OUT/k" "$OUT/b"
  dpkg-deb -x ${KPKG%%:*}_*.deb "$OUT/k"
  dpkg-deb -x busybox-static_*_arm64.deb "$OUT/b"
  cp "$OUT"/k/boot/vmlinuz-* "$OUT/Image"
  rm -rf "$OUT/modules" && mkdir "$OUT/modules" && mv "$OUT"/k/lib/modules/* "$OUT/modules/" && rm -rf "$OUT/k"
  cp "$OUT/b/bin/busybox" "$OUT/busybox" && rm -rf "$OUT/b"
  echo "$KPKG" > "$OUT/kernel-package"
fi
if [ "$WANT_QEMU" = qemu ] && [ ! -x "$OUT/qemu/usr/bin/qemu-system-aarch64" ]; then
  say "downloading qemu-system-arm:arm64 and its libraries"
  mkdir -p q && cd q && rm -f ./*.deb
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances --no-pre-depends qemu-system-arm:arm64 2>/dev/null |
    grep -E '^(lib|zlib1g|gcc-12-base|qemu-system-arm)[^ ]*:arm64$' |
    grep -vE 'libpam|libdebian-installer|libsemanage|libnewt|libtextwrap|libslang|libcap2-bin' | sort -u > list.txt
  apt-get download $(cat list.txt) >/dev/null 2>&1
  rm -rf "$OUT/qroot" && mkdir "$OUT/qroot" && for d in ./*.deb; do dpkg-deb -x "$d" "$OUT/qroot"; done
  # Only the binary, the loader and the libraries it needs (found through DT_NEEDED).
  Q=$OUT/qemu; rm -rf "$Q" && mkdir -p "$Q/usr/bin" "$Q/lib"
  cp "$OUT/qroot/usr/bin/qemu-system-aarch64" "$Q/usr/bin/"
  cp -L "$OUT/qroot/lib/ld-linux-aarch64.so.1" "$Q/lib/"
  todo=("$OUT/qroot/usr/bin/qemu-system-aarch64"); declare -A seen=()
  while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[-1]}; unset 'todo[-1]'
    for n in $(aarch64-linux-gnu-readelf -d "$f" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
      [ -n "${seen[$n]:-}" ] && continue; seen[$n]=1
      for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
        if [ -e "$OUT/qroot/$d/$n" ]; then
          mkdir -p "$Q/$d"; cp -L "$OUT/qroot/$d/$n" "$Q/$d/"; todo+=("$(readlink -f "$OUT/qroot/$d/$n")"); break
        fi
      done
    done
  done
  rm -rf "$OUT/qroot"
fi
echo "$OUT"
