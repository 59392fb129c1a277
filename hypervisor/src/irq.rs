//! Interrupt-controller abstraction: how devices' interrupts reach the guest.

use crate::arch::IrqChipArch;
use crate::{EventFd, Result};

/// Where an ioevent listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEventAddress {
    /// An I/O port (x86_64 only).
    Pio(u64),
    /// A guest physical MMIO address.
    Mmio(u64),
}

/// Which writes an ioevent signals on. A value match also matches the access width, as the
/// value's type says (KVM compares both): `U32(7)` is a 4-byte write of 7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datamatch {
    /// Any write of any width.
    Any,
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
}

/// An MSI message: what a device writes, and where, to raise an interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
    /// The requester's device id (PCI bus/device/function), for interrupt controllers that
    /// translate MSIs per device (the aarch64 GICv3 ITS); `None` where it does not matter.
    pub devid: Option<u32>,
}

/// One entry of the interrupt routing table (GSI to pin or MSI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqRoute {
    /// GSI `gsi` raises pin `pin` of the platform controller.
    Pin { gsi: u32, pin: u32 },
    /// GSI `gsi` sends `msi`.
    Msi { gsi: u32, msi: MsiMessage },
}

/// The VM's interrupt controller, as devices (through the VMM) see it.
pub trait IrqChip: IrqChipArch + Send + Sync {
    /// Number of wired interrupt lines (GSIs backed by pins).
    fn pin_count(&self) -> u32;
    /// Drives line `gsi` high or low.
    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<()>;
    /// Makes a write to `evt` pulse `gsi` (edge) without a trip through the VMM.
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()>;
    /// Undoes [`IrqChip::register_irqfd`].
    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<()>;
    /// Replaces the MSI part of the routing table; pin routes stay as the platform set them.
    fn set_msi_routes(&self, routes: &[IrqRoute]) -> Result<()>;
    /// Sends one MSI now (a user-space interrupt controller's output).
    fn signal_msi(&self, msi: MsiMessage) -> Result<()>;
    /// Completes the controller once every vCPU exists and before any runs or any irqfd is
    /// registered (the aarch64 GIC is initialised here; x86_64 has nothing to do).
    fn finalize(&self) -> Result<()> {
        Ok(())
    }
}
