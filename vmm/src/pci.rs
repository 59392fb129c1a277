//! The PCI root complex and the virtio devices on it, wired to the hypervisor: BARs from the
//! 64-bit window, MSI-X vectors as irqfds with MSI routes, queue notifications as ioeventfds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arch::GuestMemory;
use devices::bus::lock;
use devices::pci::{IntxLine, MsiMessage, MsiVector, PciConfigIo, PciConfigMmio, PciMmio, PciRoot};
use devices::virtio::pci::{VirtioPci, BAR_SIZE};
use devices::virtio::VirtioDevice;
use devices::{Bus, EventFd};
use hypervisor::{IoEventAddress, IrqChip, IrqRoute, Vm};
use vm_allocator::{AddressAllocator, AllocPolicy};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::error::{Error, Result};
use crate::platform::PciLayout;
use crate::worker::ThreadSpawner;

/// The MSI part of the hypervisor's routing table, rewritten whenever the guest reprograms a
/// vector (the hypervisor API replaces the table as a whole).
struct MsiRoutes {
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

    fn set(&self, gsi: u32, msg: MsiMessage, devid: Option<u32>) {
        let mut table = lock(&self.table);
        table.insert(gsi, (msg, devid));
        if let Err(e) = self.apply(&table) {
            devices::log_limited!(log::Level::Error, "MSI route for GSI {gsi}: {e}");
        }
    }
}

/// One MSI-X vector: an irqfd on its own GSI.
struct Vector {
    gsi: u32,
    devid: Option<u32>,
    irqfd: EventFd,
    routes: Arc<MsiRoutes>,
}

impl MsiVector for Vector {
    fn set_message(&self, msg: MsiMessage) {
        self.routes.set(self.gsi, msg, self.devid);
    }

    fn trigger(&self) {
        if let Err(e) = self.irqfd.write(1) {
            devices::log_limited!(log::Level::Error, "irqfd for GSI {}: {e}", self.gsi);
        }
    }
}

/// An INTx pin: a level on an IOAPIC input.
struct Intx {
    irqchip: Arc<dyn IrqChip>,
    gsi: u32,
}

impl IntxLine for Intx {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.irqchip.set_irq_line(self.gsi, high) {
            devices::log_limited!(log::Level::Error, "INTx GSI {}: {e}", self.gsi);
        }
    }
}

/// Builds bus 0 and its devices; [`PciBuilder::attach`] puts it on the VM's buses.
pub struct PciBuilder<'a> {
    vm: &'a dyn Vm,
    irqchip: Arc<dyn IrqChip>,
    mem: GuestMemory,
    root: PciRoot,
    layout: PciLayout,
    bars: AddressAllocator,
    routes: Arc<MsiRoutes>,
    next_gsi: u32,
    spawner: Arc<ThreadSpawner>,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

impl<'a> PciBuilder<'a> {
    pub fn new(
        vm: &'a dyn Vm,
        irqchip: Arc<dyn IrqChip>,
        mem: GuestMemory,
        layout: PciLayout,
    ) -> Result<Self> {
        let bars = AddressAllocator::new(layout.mmio64.0, layout.mmio64.1)
            .map_err(|e| dev_err("PCI window", format!("{e:?}")))?;
        Ok(PciBuilder {
            vm,
            next_gsi: irqchip.pin_count(),
            routes: Arc::new(MsiRoutes {
                irqchip: irqchip.clone(),
                table: Mutex::new(BTreeMap::new()),
            }),
            irqchip,
            mem,
            root: PciRoot::new(),
            layout,
            bars,
            spawner: Arc::new(ThreadSpawner),
        })
    }

    fn vector(&mut self, devid: Option<u32>) -> Result<Arc<dyn MsiVector>> {
        let gsi = self.next_gsi;
        self.next_gsi += 1;
        // Masked until the guest programs it; the route is written once at attach.
        lock(&self.routes.table).insert(gsi, (MsiMessage::default(), devid));
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(|e| dev_err("eventfd", e))?;
        self.irqchip.register_irqfd(&irqfd, gsi)?;
        Ok(Arc::new(Vector {
            gsi,
            devid,
            irqfd,
            routes: self.routes.clone(),
        }))
    }

    /// Puts `device` on the bus as a virtio-pci function named `name`.
    pub fn add_virtio(&mut self, name: &str, device: Box<dyn VirtioDevice>) -> Result<()> {
        // The requester id of bus 0, function 0 of the slot the device will get; its INTA is
        // wired by slot too.
        let slot = self
            .root
            .next_free_slot()
            .ok_or_else(|| dev_err(name, "no free PCI slot"))?;
        let devid = self.layout.msi_devid.then_some(u32::from(slot) << 3);
        let vectors = (0..device.queue_max_sizes().len() + 1)
            .map(|_| self.vector(devid))
            .collect::<Result<Vec<_>>>()?;
        let bar = self
            .bars
            .allocate(BAR_SIZE, BAR_SIZE, AllocPolicy::FirstMatch)
            .map_err(|e| dev_err(name, format!("no room for its BAR: {e:?}")))?
            .start();
        let intx: Arc<dyn IntxLine> = Arc::new(Intx {
            irqchip: self.irqchip.clone(),
            gsi: (self.layout.intx_gsi)(slot),
        });
        let dev = VirtioPci::new(
            name.to_string(),
            device,
            self.mem.clone(),
            bar,
            vectors,
            Some(intx),
            self.spawner.clone(),
        )
        .map_err(|e| dev_err(name, e))?;
        for (addr, evt) in dev.ioevents() {
            self.vm
                .register_ioevent(evt, IoEventAddress::Mmio(addr), None)?;
        }
        let placed = self
            .root
            .add_device(Arc::new(Mutex::new(dev)))
            .map_err(|e| dev_err(name, e))?;
        if placed != slot {
            return Err(dev_err(
                name,
                "PCI slot out of order; INTx and MSI routing would be wrong",
            ));
        }
        log::debug!("{name}: PCI 00:{slot:02x}.0, BAR0 at {bar:#x}");
        Ok(())
    }

    /// Maps configuration space and the BAR windows, and installs the MSI routes.
    pub fn attach(self, pio: &mut Bus, mmio: &mut Bus) -> Result<()> {
        self.routes.apply(&lock(&self.routes.table))?;
        let root = Arc::new(self.root);
        let insert = |bus: &mut Bus, dev: Arc<Mutex<dyn devices::BusDevice>>, base, len| {
            bus.insert(dev, base, len).map_err(|e| dev_err("PCI", e))
        };
        if let Some((port, len)) = self.layout.config_ports {
            insert(
                pio,
                Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
                port,
                len,
            )?;
        }
        let (ecam, ecam_len) = self.layout.ecam;
        insert(
            mmio,
            Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
            ecam,
            ecam_len,
        )?;
        for (base, len) in [self.layout.mmio32, self.layout.mmio64] {
            insert(
                mmio,
                Arc::new(Mutex::new(PciMmio::new(root.clone(), base))),
                base,
                len,
            )?;
        }
        Ok(())
    }
}
