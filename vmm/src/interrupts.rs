//! How the platform's interrupt lines and the devices' MSIs reach the guest: through the
//! hypervisor's own controller (`--irqchip kernel`), or on x86_64 through berth's IOAPIC in
//! user space with only the local APICs in the hypervisor (`--irqchip split`, as MSHV needs).
//!
//! In split mode an edge line (the UART, the i8042) stays an irqfd on its pin's GSI: the
//! IOAPIC keeps that GSI's MSI route equal to what the pin's redirection entry sends, so
//! the hypervisor delivers it without a trip through berth. A level line (PCI INTx) goes
//! through the IOAPIC, which sends the MSI itself and waits for the guest's EOI; the route
//! on the pin's GSI is what makes KVM report that EOI (it does so only for level-triggered
//! routes on the reserved pin GSIs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use devices::bus::lock;
use devices::pci::{IntxLine, MsiMessage};
use devices::{log_limited, EventFd, EventFdTrigger};
use hypervisor::{IrqChip, IrqRoute};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::error::{Error, Result};

/// The MSI part of the hypervisor's routing table, rewritten whenever the guest reprograms a
/// vector or an IOAPIC pin (the hypervisor API replaces the table as a whole).
pub struct MsiRoutes {
    irqchip: Arc<dyn IrqChip>,
    /// GSI to (message, requester id).
    table: Mutex<BTreeMap<u32, (MsiMessage, Option<u32>)>>,
}

impl MsiRoutes {
    fn apply(&self, table: &BTreeMap<u32, (MsiMessage, Option<u32>)>) -> hypervisor::Result<()> {
        let routes: Vec<IrqRoute> = table
            .iter()
            .map(|(&gsi, (m, devid))| IrqRoute::Msi {
                gsi,
                msi: hypervisor::MsiMessage {
                    address: m.address,
                    data: m.data,
                    devid: *devid,
                },
            })
            .collect();
        self.irqchip.set_msi_routes(&routes)
    }

    /// Routes `gsi` to `msg` now.
    pub fn set(&self, gsi: u32, msg: MsiMessage, devid: Option<u32>) {
        let mut table = lock(&self.table);
        table.insert(gsi, (msg, devid));
        if let Err(e) = self.apply(&table) {
            log_limited!(log::Level::Error, "MSI route for GSI {gsi}: {e}");
        }
    }

    /// Records a route without writing the table (set up before the guest runs; the next
    /// `set` or `remove` writes them all).
    pub fn reserve(&self, gsi: u32, msg: MsiMessage, devid: Option<u32>) {
        lock(&self.table).insert(gsi, (msg, devid));
    }

    /// Writes the table as it is.
    pub fn write(&self) -> hypervisor::Result<()> {
        self.apply(&lock(&self.table))
    }

    /// `gsi` sends nothing now.
    #[cfg(target_arch = "x86_64")]
    pub fn remove(&self, gsi: u32) {
        let mut table = lock(&self.table);
        if table.remove(&gsi).is_some() {
            if let Err(e) = self.apply(&table) {
                log_limited!(log::Level::Error, "MSI route for GSI {gsi}: {e}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub type UserIoapic = devices::irqchip::Ioapic<IoapicOutput>;

/// The user-space IOAPIC's outputs: MSIs through the hypervisor, and a route per pin.
#[cfg(target_arch = "x86_64")]
pub struct IoapicOutput {
    irqchip: Arc<dyn IrqChip>,
    routes: Arc<MsiRoutes>,
}

#[cfg(target_arch = "x86_64")]
impl devices::irqchip::MsiSender for IoapicOutput {
    fn send(&self, address: u64, data: u32) {
        let msi = hypervisor::MsiMessage {
            address,
            data,
            devid: None,
        };
        if let Err(e) = self.irqchip.signal_msi(msi) {
            log_limited!(log::Level::Error, "IOAPIC MSI {address:#x}/{data:#x}: {e}");
        }
    }

    fn pin_changed(&self, pin: usize, msi: Option<(u64, u32)>) {
        let gsi = pin as u32;
        match msi {
            Some((address, data)) => self.routes.set(gsi, MsiMessage { address, data }, None),
            None => self.routes.remove(gsi),
        }
    }
}

/// The VM's interrupt wiring, shared by the platform devices, PCI and the vCPU threads.
pub struct Interrupts {
    pub irqchip: Arc<dyn IrqChip>,
    pub routes: Arc<MsiRoutes>,
    #[cfg(target_arch = "x86_64")]
    ioapic: Option<Arc<Mutex<UserIoapic>>>,
}

impl Interrupts {
    /// The hypervisor's controller does everything.
    pub fn in_kernel(irqchip: Arc<dyn IrqChip>) -> Self {
        Interrupts {
            routes: Arc::new(MsiRoutes {
                irqchip: irqchip.clone(),
                table: Mutex::new(BTreeMap::new()),
            }),
            irqchip,
            #[cfg(target_arch = "x86_64")]
            ioapic: None,
        }
    }

    /// berth's IOAPIC drives the pins of `irqchip`, a split-mode controller.
    #[cfg(target_arch = "x86_64")]
    pub fn split(irqchip: Arc<dyn IrqChip>) -> Self {
        let mut me = Self::in_kernel(irqchip);
        let out = IoapicOutput {
            irqchip: me.irqchip.clone(),
            routes: me.routes.clone(),
        };
        me.ioapic = Some(Arc::new(Mutex::new(devices::irqchip::Ioapic::new(out))));
        me
    }

    /// The user-space IOAPIC, for the MMIO bus (split mode only).
    #[cfg(target_arch = "x86_64")]
    pub fn ioapic(&self) -> Option<Arc<Mutex<UserIoapic>>> {
        self.ioapic.clone()
    }

    /// An edge-triggered line on `gsi`: an irqfd, in both modes.
    pub fn edge_line(&self, gsi: u32) -> Result<EventFdTrigger> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Device(format!("eventfd: {e}")))?;
        self.irqchip.register_irqfd(&evt, gsi)?;
        Ok(EventFdTrigger::new(evt))
    }

    /// A level-triggered line on `gsi` (a PCI INTx pin).
    pub fn level_line(&self, gsi: u32) -> Arc<dyn IntxLine> {
        #[cfg(target_arch = "x86_64")]
        if let Some(ioapic) = &self.ioapic {
            return Arc::new(IoapicPin {
                ioapic: ioapic.clone(),
                pin: gsi as usize,
            });
        }
        Arc::new(KernelLine {
            irqchip: self.irqchip.clone(),
            gsi,
        })
    }

    /// The guest finished `vector`, as the hypervisor reports in split mode.
    pub fn end_of_interrupt(&self, vector: u8) {
        #[cfg(target_arch = "x86_64")]
        if let Some(ioapic) = &self.ioapic {
            lock(ioapic).end_of_interrupt(vector);
            return;
        }
        log_limited!(
            log::Level::Debug,
            "EOI of vector {vector:#x} without a user-space IOAPIC ignored"
        );
    }
}

/// A level on a pin of the hypervisor's own controller.
struct KernelLine {
    irqchip: Arc<dyn IrqChip>,
    gsi: u32,
}

impl IntxLine for KernelLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.irqchip.set_irq_line(self.gsi, high) {
            log_limited!(log::Level::Error, "interrupt line GSI {}: {e}", self.gsi);
        }
    }
}

/// A level on a pin of berth's IOAPIC.
#[cfg(target_arch = "x86_64")]
struct IoapicPin {
    ioapic: Arc<Mutex<UserIoapic>>,
    pin: usize,
}

#[cfg(target_arch = "x86_64")]
impl IntxLine for IoapicPin {
    fn set_level(&self, high: bool) {
        lock(&self.ioapic).service_irq(self.pin, high);
    }
}
