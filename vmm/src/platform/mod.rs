//! The per-architecture half of the VMM: which guest addresses hold RAM and devices, the
//! platform devices, loading the kernel and setting up the vCPUs. Each architecture module
//! offers the same items (`MAX_CPUS`, `MIN_MEMORY`, `DEFAULT_CMDLINE`, `ram_ranges`,
//! `irq_chip_config`, `interrupts`, `pci_layout`, `build_devices`, `load_guest`, `configure_vcpus`), so
//! `vm.rs` builds a VM the same way on both.

use std::fs::File;
use std::sync::{Arc, Mutex};

use devices::legacy::Serial;
use devices::{Bus, EventFd};

use crate::error::{Error, Result};
use crate::interrupts::Interrupts;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

/// The buses vCPU exits dispatch to (still open for more devices), and the console the VMM
/// feeds.
pub struct Platform {
    pub pio: Bus,
    pub mmio: Bus,
    pub serial: Arc<Mutex<Serial>>,
    /// Signalled when the guest drains the UART's receive FIFO.
    pub serial_drained: EventFd,
}

/// Where PCI lives in the guest's address map.
#[derive(Clone, Copy, Debug)]
pub struct PciLayout {
    /// ECAM `(start, size)`.
    pub ecam: (u64, u64),
    /// The configuration ports 0xCF8-0xCFF (x86_64 only).
    pub config_ports: Option<(u64, u64)>,
    /// The 32-bit BAR window `(start, size)`.
    pub mmio32: (u64, u64),
    /// The 64-bit BAR window `(start, size)`, where berth places BARs.
    pub mmio64: (u64, u64),
    /// The platform interrupt (GSI) a slot's INTA is wired to, as the firmware tables say.
    pub intx_gsi: fn(u8) -> u32,
    /// MSIs carry the requester id (the aarch64 GICv3 ITS translates per device).
    pub msi_devid: bool,
}

/// The kernel, initrd and command line the user gave.
pub struct GuestFiles<'a> {
    pub kernel: &'a mut File,
    /// Shown in errors.
    pub kernel_name: &'a str,
    pub initrd: Option<&'a mut File>,
    pub cmdline: &'a str,
}

fn insert(bus: &mut Bus, dev: Arc<dyn devices::bus::BusAccess>, base: u64, len: u64) -> Result<()> {
    bus.insert(dev, base, len)
        .map_err(|e| Error::Device(e.to_string()))
}

/// The UART, its output and the eventfd that tells the input feeder the FIFO drained.
fn serial(
    interrupts: &Interrupts,
    gsi: u32,
    out: Box<dyn std::io::Write + Send>,
) -> Result<(Arc<Mutex<Serial>>, EventFd)> {
    let drained = EventFd::new(0).map_err(|e| Error::Device(format!("eventfd: {e}")))?;
    let serial = Serial::new(
        interrupts.edge_line(gsi)?,
        out,
        Some(
            drained
                .try_clone()
                .map_err(|e| Error::Device(format!("eventfd: {e}")))?,
        ),
    );
    Ok((Arc::new(Mutex::new(serial)), drained))
}
