//! berth's fuzz targets. Each target is a function from bytes to nothing that drives the real
//! code over a small guest memory: it must neither panic nor hang nor allocate without bound,
//! whatever the bytes. libFuzzer calls them through `fuzz_targets/` (cargo-fuzz); the corpus
//! test replays the committed inputs through the same functions on a stable toolchain.
//!
//! Which surface each target covers, and how to run them: docs/security.md.

pub mod acpi;
pub mod boot;
#[cfg(target_arch = "x86_64")]
pub mod emulator;
pub mod fdt;
pub mod frontend;
pub mod image;
pub mod legacy;
pub mod pci;
pub mod queue;
pub mod seeds;
pub mod util;
pub mod virtio_pci;

/// A fuzz target: the name cargo-fuzz knows it by and the function behind it.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order docs/security.md lists them.
pub const TARGETS: &[Target] = &[
    #[cfg(target_arch = "x86_64")]
    Target {
        name: "boot_x86_64",
        run: boot::run,
    },
    Target {
        name: "image_arm64",
        run: image::run,
    },
    #[cfg(target_arch = "x86_64")]
    Target {
        name: "acpi",
        run: acpi::run,
    },
    Target {
        name: "fdt",
        run: fdt::run,
    },
    Target {
        name: "legacy",
        run: legacy::run,
    },
    Target {
        name: "pci",
        run: pci::run,
    },
    Target {
        name: "virtio_pci",
        run: virtio_pci::run,
    },
    Target {
        name: "virtqueue_blk",
        run: queue::blk,
    },
    Target {
        name: "virtqueue_rng",
        run: queue::rng,
    },
    Target {
        name: "virtqueue_console",
        run: queue::console,
    },
    Target {
        name: "vhost_user_frontend",
        run: frontend::run,
    },
    #[cfg(target_arch = "x86_64")]
    Target {
        name: "emulator",
        run: emulator::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
