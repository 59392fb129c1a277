//! aarch64 boot: the kernel Image entered directly at EL1 with a device tree, no firmware.
//!
//! `fdt`, `image` and `layout` are pure and build on every host; loading into guest memory (it
//! needs linux-loader's arm64 PE support) and the vCPU set-up only on aarch64.

#[cfg(target_arch = "aarch64")]
pub mod boot;
pub mod fdt;
pub mod image;
pub mod layout;
#[cfg(target_arch = "aarch64")]
pub mod vcpu;

#[cfg(target_arch = "aarch64")]
pub use boot::{load_kernel, write_fdt, BootInfo, BootSource};
#[cfg(target_arch = "aarch64")]
pub use vcpu::{configure_vcpu, mpidrs};
