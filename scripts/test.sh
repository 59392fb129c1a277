#!/bin/bash
# The project's one test command: unit tests and the end-to-end tests that boot real guests.
#
#   scripts/test.sh                     everything (cargo test --workspace --release)
#   scripts/test.sh -p berth-tests --test boot_x86_64 [-- filter]   some of it
#
# 1. installs what is missing (Debian: qemu-system-x86, qemu-system-arm, cpio, kmod, file, lz4, e2fsprogs,
#    acpica-tools), checking with `command -v` first, so a machine that has them is not slowed down;
# 2. fetches the guest assets (scripts/guest-assets.sh; cached in ~/.cache/berth), x86_64 and
#    aarch64;
# 3. builds berth in release mode and points BERTH_BIN at it; builds the aarch64 berth
#    (scripts/build-aarch64.sh, Debian's cross toolchain) and points BERTH_BIN_AARCH64 at it;
# 4. runs cargo test in release mode (so that build serves both). End-to-end runs are
#    serialized by the harness itself (one guest at a time, whatever the test threads).
# Environment: BERTH_E2E_MODE=native|emulated|skip, BERTH_E2E_VERBOSE=1, BERTH_ASSETS, see
# docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "test.sh: $*" >&2; }
T0=$(date +%s)

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
if [ "${BERTH_E2E_MODE:-}" != skip ]; then
  case "$(uname -m)" in
    x86_64) have qemu-system-x86_64 || missing+=(qemu-system-x86) ;;
  esac
  have qemu-system-aarch64 || missing+=(qemu-system-arm)
  have cpio || missing+=(cpio)
  have depmod || missing+=(kmod)
  have file || missing+=(file)
  have lz4 || missing+=(lz4)
fi
# ext4 images for the virtio-blk tests: mkfs.ext4 -d, fsck.ext4 -n, debugfs (the harness's unit
# tests use them too, so also with BERTH_E2E_MODE=skip)
{ have mkfs.ext4 && have fsck.ext4 && have debugfs; } || missing+=(e2fsprogs)
have iasl || missing+=(acpica-tools) # arch's ACPI tests disassemble the tables with it
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { say "missing: ${missing[*]} (install them; this script knows apt only)"; exit 1; }
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${BERTH_E2E_MODE:-}" != skip ]; then
  scripts/guest-assets.sh x86_64 >/dev/null
  scripts/guest-assets.sh aarch64 >/dev/null
  say "scripts/build-aarch64.sh build"
  BERTH_BIN_AARCH64=$(scripts/build-aarch64.sh build | tail -1)
  export BERTH_BIN_AARCH64
  say "BERTH_BIN_AARCH64=$BERTH_BIN_AARCH64"
fi

say "cargo build --release -p berth"
cargo build --release -p berth
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BERTH_BIN=$(realpath "$TARGET_DIR/release/berth")
export BERTH_BIN
say "BERTH_BIN=$BERTH_BIN"

if [ $# -eq 0 ]; then
  set -- --workspace
fi
STALLS=${TMPDIR:-/tmp}/berth-e2e-stalls.log
rm -f "$STALLS"
say "cargo test --release $*"
cargo test --release "$@"
if [ -s "$STALLS" ]; then
  say "emulated-host stalls retried during this run (see docs/testing.md):"
  cat "$STALLS" >&2
fi
say "all tests passed in $(( $(date +%s) - T0 )) s"
