//! PCI: a root complex on bus 0 (ECAM and, on x86_64, ports 0xCF8/0xCFC), type 0 configuration
//! headers with BARs and capabilities, and MSI-X. Written against our own bus and the
//! [`MsiVector`] trait, so no hypervisor name appears here.

pub mod config;
pub mod msix;
pub mod root;

pub use config::{
    BarKind, ConfigWrite, PciConfig, PciConfigError, PciHeader, COMMAND_BUS_MASTER,
    COMMAND_INTX_DISABLE, COMMAND_MEMORY,
};
pub use msix::{Msix, MsixCapability, MsixError};
pub use root::{PciConfigIo, PciConfigMmio, PciMmio, PciRoot, PciRootError};

/// A function on bus 0 of the root complex, as the root sees it.
pub trait PciDevice: Send {
    /// Reads configuration dword `reg` (byte offset `reg * 4`, up to 4 KiB with ECAM).
    fn read_config(&mut self, reg: usize) -> u32;
    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` (0..4, no straddling) of dword `reg`.
    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]);
    /// Which BAR, if any, decodes guest address `addr` now: (BAR index, offset in it).
    /// Nothing decodes while memory decoding is off in the command register.
    fn decode(&self, addr: u64) -> Option<(usize, u64)>;
    /// The BARs that decode now, as (index, base, size): what [`PciDevice::decode`] would
    /// find. The root keeps a table of them, so a BAR access locks only the device it is for.
    fn bars(&self) -> Vec<(usize, u64, u64)>;
    /// A guest read inside BAR `bar`.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A guest write inside BAR `bar`.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// An MSI message: the write that raises an interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// One MSI-X vector as the VMM wires it (an irqfd plus a route in the hypervisor's table).
pub trait MsiVector: Send + Sync {
    /// The guest programmed the vector's table entry with `msg`.
    fn set_message(&self, msg: MsiMessage);
    /// Delivers the vector's current message.
    fn trigger(&self);
    /// Makes a signal of `fd` deliver the vector directly (a vhost-user backend's call fd
    /// becomes an irqfd on the vector's GSI). A signal that came while disconnected is
    /// delivered on connecting.
    fn connect(&self, fd: &vmm_sys_util::eventfd::EventFd);
    /// Undoes [`MsiVector::connect`]; signals of `fd` then wait in it.
    fn disconnect(&self, fd: &vmm_sys_util::eventfd::EventFd);
}

/// A level-triggered INTx line as the VMM wires it (a pin of the platform's interrupt
/// controller, routed by the firmware tables).
pub trait IntxLine: Send + Sync {
    fn set_level(&self, high: bool);
}
