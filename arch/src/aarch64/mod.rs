//! aarch64 boot: the kernel Image entered directly at EL1 with a device tree, no firmware.

pub mod boot;
pub mod fdt;
pub mod image;
pub mod layout;
pub mod vcpu;

pub use boot::{load_kernel, write_fdt, BootInfo, BootSource};
pub use vcpu::{configure_vcpu, mpidrs};
