//! x86_64 boot: direct 64-bit (or PVH 32-bit) entry, no firmware and no real mode.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod paging;
pub mod vcpu;

pub use boot::{load_kernel, BootProtocol, KernelImage};
pub use vcpu::configure_vcpu;
