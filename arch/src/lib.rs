//! berth's boot layer: pure functions from (configuration, guest memory, kernel file) to a loaded
//! guest and the vCPU state that starts it. Register values are applied through the neutral
//! hypervisor traits, so nothing here depends on a particular hypervisor.

// Built on every host (the vCPU set-up only on aarch64): the Image loader and the device tree
// are pure and are tested and fuzzed natively on x86_64 too.
pub mod aarch64;
mod error;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use error::{Error, Result};

/// Guest memory as berth maps it (vm-memory's mmap backend, one region per RAM range).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;
