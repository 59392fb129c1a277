#!/bin/bash
# Cross-builds berth for aarch64-unknown-linux-gnu with Debian's Rust toolchain (rustc-web, the
# aarch64 std from libstd-rust-web-dev:arm64, the aarch64 GNU linker), as a static binary that
# runs in a bare initramfs. rustup cannot add targets here; Debian's toolchain can.
#
# Usage: scripts/build-aarch64.sh [build|check|clippy|test]
#   build   release build of the berth binary (default); prints its path
#   check   cargo check of the whole workspace for aarch64
#   clippy  clippy on every target of the workspace for aarch64, warnings denied, also with
#           the mshv feature
#           (Debian's rust-web-clippy, matching rustc-web)
#   test    the unit tests of hypervisor (also its mshv half), arch, devices and berth, built
#           for aarch64 and run under qemu-user (qemu-aarch64-static); tests that need /dev/kvm are not among them
# Output goes to target/aarch64 (CARGO_TARGET_DIR overrides), apart from the x86_64 build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-build}
TARGET=aarch64-unknown-linux-gnu

# A rustup toolchain with the aarch64 target installed (rustup target add
# aarch64-unknown-linux-gnu; not possible on this project's build machines) is used as it is;
# otherwise Debian's Rust, whose arm64 std comes as a package.
if command -v rustup >/dev/null 2>&1 &&
   rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    RUST=rustup
    deps=(cross-linker)
else
    RUST=debian
    deps=(cross)
fi
case "$MODE" in
clippy) [ $RUST = debian ] && deps=(cross-clippy) ;;
test) deps+=(cross-test-tools) ;;
esac
"$ROOT/scripts/host-deps.sh" "${deps[@]}"
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/aarch64}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
if [ $RUST = rustup ]; then
    CARGO=cargo
else
    # Debian's cargo and rustc (and cargo-clippy / clippy-driver) first in PATH: rustup's
    # rustc has no aarch64 std here.
    export PATH=/usr/bin:$PATH
    export RUSTC=/usr/bin/rustc
    CARGO=/usr/bin/cargo
    # The workspace's rust-version; Debian 12 without bookworm-security has 1.85.
    NEED=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
    HAVE=$($RUSTC --version | awk '{print $2}')
    if ! printf '%s\n%s\n' "$NEED" "$HAVE" | sort -V -C; then
        echo "build-aarch64: Debian's rustc is $HAVE, berth needs $NEED: with bookworm-security enabled, run apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 (or rustup target add $TARGET)" >&2
        exit 1
    fi
fi

case "$MODE" in
build)
    $CARGO build --release --target $TARGET -p berth
    echo "$CARGO_TARGET_DIR/$TARGET/release/berth"
    ;;
check)
    $CARGO check --workspace --all-targets --target $TARGET
    ;;
clippy)
    $CARGO clippy --workspace --all-targets --target $TARGET -- -D warnings
    # The MSHV backend, whose aarch64 half is built and linted here.
    $CARGO clippy -p hypervisor -p berth --all-targets --target $TARGET --features hypervisor/mshv -- -D warnings
    ;;
test)
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static
    # qemu-user cannot emulate clone(2) with namespace flags: tests of the jail skip, saying
    # so (the aarch64 jail is proven in the emulated aarch64 host by scripts/test.sh).
    export BERTH_UNDER_QEMU_USER=1
    $CARGO test --target $TARGET -p hypervisor -p arch -p devices
    # berth's own unit tests (its aarch64 platform half); its integration tests need /dev/kvm.
    $CARGO test --target $TARGET -p berth --bins
    # The MSHV backend's aarch64 half: intercepts from TLFS-layout bytes, register names.
    $CARGO test --target $TARGET -p hypervisor --features mshv --lib mshv
    ;;
*)
    echo "usage: $0 [build|check|clippy|test]" >&2
    exit 2
    ;;
esac
