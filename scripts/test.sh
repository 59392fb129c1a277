#!/bin/bash
# The project's one test command: unit tests and the end-to-end tests that boot real guests.
#
#   scripts/test.sh                     everything (cargo test --workspace --release)
#   scripts/test.sh -p berth-tests --test boot_x86_64 [-- filter]   some of it
#
# 1. installs what is missing through scripts/host-deps.sh (Debian or Ubuntu: QEMU for x86_64 and
#    aarch64 from the suite that agrees with any QEMU already installed, cpio, kmod, file, lz4,
#    e2fsprogs, acpica-tools), quick when all is there;
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

# ext4 tools and iasl for the unit tests (also with BERTH_E2E_MODE=skip); QEMU and the rest for
# the emulated hosts. scripts/host-deps.sh knows the packages.
if [ "${BERTH_E2E_MODE:-}" = skip ]; then
  scripts/host-deps.sh build unit
else
  scripts/host-deps.sh build unit e2e assets
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
