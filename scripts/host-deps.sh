#!/bin/bash
# The one place that knows which host packages berth's scripts need, and installs what is
# missing. Every script calls it with the groups it needs:
#
#   scripts/host-deps.sh GROUP...          install what is missing (quick when all is there)
#   scripts/host-deps.sh --list GROUP...   print the packages, one per line, and exit
#   scripts/host-deps.sh --qemu-suite      print the apt suite QEMU would come from, and exit
#
# Groups:
#   e2e           the emulated hosts: qemu-system-arm, qemu-system-x86 (on x86_64 hosts), cpio,
#                 kmod, file, lz4, gzip
#   e2e-x86_64    the x86_64 emulated host only (scripts/boot-shell.sh, bench/boot.sh)
#   e2e-aarch64   the aarch64 emulated host only (scripts/aarch64-host-assets.sh)
#   build         the C linker and libc headers Rust links with (gcc, libc6-dev)
#   unit          what unit tests call: e2fsprogs (mkfs.ext4 -d, fsck, debugfs), acpica-tools (iasl), device-tree-compiler (dtc: the device tree is built and checked on every host)
#   assets        what scripts/guest-assets.sh calls: cpio gzip file kmod lz4
#   cross         Debian's Rust and the aarch64 cross linker (scripts/build-aarch64.sh)
#   cross-linker  the aarch64 cross linker and libc alone (with a rustup aarch64 target)
#   cross-clippy  cross, plus Debian's clippy for it
#   cross-test    cross, plus qemu-user-static and device-tree-compiler
#   cross-test-tools  qemu-user-static and device-tree-compiler alone
#   aarch64-host  aarch64 emulated-host assets: qemu-system-arm, binutils-aarch64-linux-gnu
#   bench-disk    fio (bench/disk.sh)
#   ci            everything .ci/run needs: build e2e unit assets cross cross-clippy cross-test
#   PKG           any other word is taken as a Debian package name
#
# QEMU: the machines this project builds on come with qemu-utils 10 from bookworm-backports
# and no backports source, and qemu-utils 10 breaks bookworm's qemu-system-common 7.2. So QEMU
# packages are installed from the suite whose version agrees with the qemu-* packages already
# installed: when an installed one is newer than the candidate, the suite that carries its
# version (apt-cache madison); when none does and the version is a Debian backport (~bpoNN),
# that release's backports suite, whose source is added (sources.list.d/berth-<suite>.sources,
# same mirror and keyring as the release). Nothing is removed or downgraded (--no-remove; apt
# never downgrades unasked). The emulated hosts were last proven with QEMU 10.0.2 (backports)
# and 7.2 (bookworm).
#
# Exit status 0 when everything is there; 1, with one line naming the package and what to do,
# when something cannot be installed.
set -euo pipefail
say() { echo "host-deps: $*" >&2; }
die() { echo "host-deps: $*" >&2; exit 1; }

ARCH=$(uname -m)
group() {
  case "$1" in
    e2e) group e2e-aarch64; [ "$ARCH" = x86_64 ] && group e2e-x86_64; return 0 ;;
    e2e-x86_64) echo qemu-system-x86 cpio kmod file lz4 gzip ;;
    e2e-aarch64) echo qemu-system-arm cpio kmod file gzip ;;
    build) echo gcc libc6-dev ;;
    unit) echo e2fsprogs acpica-tools device-tree-compiler ;;
    assets) echo cpio gzip file kmod lz4 ;;
    cross) cross_packages; group cross-linker ;;
    cross-linker) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    cross-clippy) group cross; echo "$(rust_prefix)clippy" ;;
    cross-test) group cross; group cross-test-tools ;;
    cross-test-tools) echo qemu-user-static device-tree-compiler ;;
    aarch64-host) echo qemu-system-arm cpio gzip binutils-aarch64-linux-gnu ;;
    bench-disk) echo fio ;;
    ci) for g in build e2e unit assets cross cross-clippy cross-test; do group $g; done ;;
    -*) die "unknown option '$1' (see the head of $0)" ;;
    *) echo "$1" ;;
  esac
}
# Debian 12 ships a current Rust as rustc-web (kept new for the browsers); other releases as
# rustc. The aarch64 std is the arm64 build of the same source package.
rust_prefix() {
  if apt-cache show rustc-web >/dev/null 2>&1 || dpkg-query -W rustc-web >/dev/null 2>&1; then
    echo rust-web-
  else
    echo rust-
  fi
}
cross_packages() {
  if [ "$(rust_prefix)" = rust-web- ]; then
    echo rustc-web cargo-web libstd-rust-web-dev:arm64
  else
    echo rustc cargo libstd-rust-dev:arm64
  fi
}

LIST=0
case "${1:-}" in
  --list) LIST=1; shift ;;
  --qemu-suite) QEMU_SUITE_ONLY=1; shift ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac

# Every package once, in order.
declare -A SEEN=()
PKGS=()
for g in "$@"; do
  for p in $(group "$g"); do
    [ -n "${SEEN[$p]:-}" ] && continue
    SEEN[$p]=1
    PKGS+=("$p")
  done
done
if [ "$LIST" = 1 ]; then
  printf '%s\n' "${PKGS[@]}"
  exit 0
fi

command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 || {
  [ ${#PKGS[@]} -eq 0 ] && exit 0
  die "this is not a Debian or Ubuntu system (no apt-get): install the equivalents of ${PKGS[*]} yourself"
}

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
UPDATED=0
ADDED_ARM64=0
apt_update() {
  [ "$UPDATED" = 1 ] && [ "${1:-}" != force ] && return 0
  local log hint="check /etc/apt/sources.list*"
  if ! log=$($SUDO apt-get update -qq 2>&1); then
    if [ "$ADDED_ARM64" = 1 ]; then
      # Leave apt as it was: an architecture no source serves breaks every update.
      $SUDO dpkg --remove-architecture arm64 2>/dev/null || true
      $SUDO apt-get update -qq >/dev/null 2>&1 || true
      hint="no configured source serves arm64 packages; on Ubuntu they come from ports.ubuntu.com (a source with Architectures: arm64), or install the aarch64 Rust target with rustup"
    fi
    die "apt-get update failed: $(echo "$log" | grep -m1 '^E:' || echo "$log" | tail -1) ($hint)"
  fi
  UPDATED=1
}
installed() {
  dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

# --- QEMU: the suite that agrees with the machine's own qemu-* packages ------------------------
# The newest installed qemu-* version (qemu-utils on this project's machines), or nothing.
installed_qemu_version() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' 'qemu*' 2>/dev/null |
    awk '$1 == "ii" { print $3 }' | sort -V | tail -1
}
# madison_suite PKG VERSION: the suite of a configured source that offers PKG at VERSION.
madison_suite() {
  apt-cache madison "$1" 2>/dev/null |
    awk -F' [|] ' -v v="$2" '$2 == v { split($3, a, " "); split(a[2], s, "/"); print s[1]; exit }'
}
candidate() {
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2; exit }'
}
# Adds the backports source of the Debian release number N (from ~bpoN), on the same mirror
# and with the same keyring as the configured release.
add_backports_source() {
  local n=$1 codename suite uri key file
  case "$n" in
    11) codename=bullseye ;; 12) codename=bookworm ;; 13) codename=trixie ;; 14) codename=forky ;;
    *) return 1 ;;
  esac
  suite=$codename-backports
  file=/etc/apt/sources.list.d/berth-$suite.sources
  [ -f "$file" ] && return 0
  uri=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME)' 2>/dev/null |
    awk -v c="$codename" '$2 == c && $1 !~ /security/ { print $1; exit }')
  uri=${uri:-http://deb.debian.org/debian/}
  key=/usr/share/keyrings/debian-archive-keyring.gpg
  say "adding the $suite source ($uri) so that QEMU agrees with the installed qemu packages"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$uri" "$suite" "$key" | $SUDO tee "$file" >/dev/null
  apt_update force
}
# Prints the suite to install QEMU system packages from (empty: the default candidate is right).
# $1: a QEMU package to be installed, used to read what the sources offer.
qemu_suite() {
  local probe=$1 have cand suite bpo
  have=$(installed_qemu_version)
  [ -n "$have" ] || return 0
  cand=$(candidate "$probe")
  [ -n "$cand" ] && [ "$cand" != "(none)" ] && dpkg --compare-versions "$cand" ge "$have" && return 0
  suite=$(madison_suite "$probe" "$have")
  if [ -z "$suite" ]; then
    bpo=$(echo "$have" | sed -n 's/.*~bpo\([0-9][0-9]*\).*/\1/p')
    [ -n "$bpo" ] && add_backports_source "$bpo" >&2 && suite=$(madison_suite "$probe" "$have")
  fi
  [ -n "$suite" ] || die "installed QEMU packages are $have, and no configured source offers $probe $have (apt-cache madison $probe): add the source they came from, or install $probe $have by hand"
  echo "$suite"
}

if [ "${QEMU_SUITE_ONLY:-0}" = 1 ]; then
  apt_update
  qemu_suite qemu-system-x86
  exit 0
fi

MISSING=()
for p in "${PKGS[@]}"; do installed "$p" || MISSING+=("$p"); done
[ ${#MISSING[@]} -eq 0 ] && exit 0

for p in "${MISSING[@]}"; do
  case "$p" in
    *:arm64)
      dpkg --print-foreign-architectures | grep -qx arm64 || {
        say "adding the arm64 package architecture (for ${p})"
        $SUDO dpkg --add-architecture arm64
        ADDED_ARM64=1
        UPDATED=0
      } ;;
  esac
done
apt_update

QEMU=() OTHER=()
for p in "${MISSING[@]}"; do
  case "$p" in qemu-*) QEMU+=("$p") ;; *) OTHER+=("$p") ;; esac
done

# install [apt-get options --] PKG...: on failure, finds which package cannot be installed and
# says so in one line.
install() {
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  say "installing $* ${opts[*]}"
  local log
  if log=$($SUDO apt-get install -y -qq --no-install-recommends --no-remove "${opts[@]}" "$@" 2>&1 >/dev/null); then
    return 0
  fi
  local p why
  for p in "$@"; do
    why=$(apt-get install -s -qq --no-install-recommends --no-remove "${opts[@]}" "$p" 2>&1 | grep -m1 -E '^E:|broken|Depends:' || true)
    [ -n "$why" ] && die "cannot install $p: ${why#E: } (install it by hand, or see scripts/host-deps.sh)"
  done
  die "apt-get install $* failed: $(echo "$log" | grep -m1 '^E:' || echo "$log" | tail -1)"
}

if [ ${#OTHER[@]} -gt 0 ]; then install -- "${OTHER[@]}"; fi
if [ ${#QEMU[@]} -gt 0 ]; then
  SUITE=$(qemu_suite "${QEMU[0]}")
  if [ -n "$SUITE" ]; then
    install -t "$SUITE" -- "${QEMU[@]}"
  else
    install -- "${QEMU[@]}"
  fi
fi
for p in "${MISSING[@]}"; do
  installed "$p" || die "$p is still not installed after apt-get install (install it by hand)"
done
