//! Interrupt-controller abstraction: how devices' interrupts reach the guest.

use crate::{EventFd, Result};

/// Where an ioevent listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEventAddress {
    /// An I/O port (x86_64 only).
    Pio(u64),
    /// A guest physical MMIO address.
    Mmio(u64),
}

/// An MSI message: what a device writes, and where, to raise an interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
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
pub trait IrqChip: Send + Sync {
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
}
