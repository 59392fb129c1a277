//! The PCI root complex and the virtio devices on it, wired to the hypervisor: BARs from the
//! 64-bit window, MSI-X vectors as irqfds with MSI routes, queue notifications as ioeventfds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arch::x86_64::layout::{
    pci_mmio64, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE, PCI_MMIO32_START,
};
use arch::GuestMemory;
use devices::bus::lock;
use devices::pci::{MsiMessage, MsiVector, PciConfigIo, PciConfigMmio, PciMmio, PciRoot};
use devices::virtio::pci::{VirtioPci, BAR_SIZE};
use devices::virtio::VirtioDevice;
use devices::{Bus, EventFd};
use hypervisor::{IoEventAddress, IrqChip, IrqRoute, Vm};
use vm_allocator::{AddressAllocator, AllocPolicy};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::error::{Error, Result};
use crate::worker::ThreadSpawner;

const PCI_CONFIG_PORT: u64 = 0xcf8;
const PCI_CONFIG_PORT_LEN: u64 = 8;

/// The MSI part of the hypervisor's routing table, rewritten whenever the guest reprograms a
/// vector (the hypervisor API replaces the table as a whole).
struct MsiRoutes {
    irqchip: Arc<dyn IrqChip>,
    table: Mutex<BTreeMap<u32, MsiMessage>>,
}

impl MsiRoutes {
    fn apply(&self, table: &BTreeMap<u32, MsiMessage>) -> hypervisor::Result<()> {
        let routes: Vec<IrqRoute> = table
            .iter()
            .map(|(&gsi, m)| IrqRoute::Msi {
                gsi,
                msi: hypervisor::MsiMessage {
                    address: m.address,
                    data: m.data,
                },
            })
            .collect();
        self.irqchip.set_msi_routes(&routes)
    }

    fn set(&self, gsi: u32, msg: MsiMessage) {
        let mut table = lock(&self.table);
        table.insert(gsi, msg);
        if let Err(e) = self.apply(&table) {
            devices::log_limited!(log::Level::Error, "MSI route for GSI {gsi}: {e}");
        }
    }
}

/// One MSI-X vector: an irqfd on its own GSI.
struct Vector {
    gsi: u32,
    irqfd: EventFd,
    routes: Arc<MsiRoutes>,
}

impl MsiVector for Vector {
    fn set_message(&self, msg: MsiMessage) {
        self.routes.set(self.gsi, msg);
    }

    fn trigger(&self) {
        if let Err(e) = self.irqfd.write(1) {
            devices::log_limited!(log::Level::Error, "irqfd for GSI {}: {e}", self.gsi);
        }
    }
}

/// Builds bus 0 and its devices; [`PciBuilder::attach`] puts it on the VM's buses.
pub struct PciBuilder<'a> {
    vm: &'a dyn Vm,
    irqchip: Arc<dyn IrqChip>,
    mem: GuestMemory,
    root: PciRoot,
    mmio64: (u64, u64),
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
        mem_size: u64,
    ) -> Result<Self> {
        let mmio64 = pci_mmio64(mem_size);
        let bars = AddressAllocator::new(mmio64.0, mmio64.1)
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
            mmio64,
            bars,
            spawner: Arc::new(ThreadSpawner),
        })
    }

    fn vector(&mut self) -> Result<Arc<dyn MsiVector>> {
        let gsi = self.next_gsi;
        self.next_gsi += 1;
        // Masked until the guest programs it; the route is written once at attach.
        lock(&self.routes.table).insert(gsi, MsiMessage::default());
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(|e| dev_err("eventfd", e))?;
        self.irqchip.register_irqfd(&irqfd, gsi)?;
        Ok(Arc::new(Vector {
            gsi,
            irqfd,
            routes: self.routes.clone(),
        }))
    }

    /// Puts `device` on the bus as a virtio-pci function named `name`.
    pub fn add_virtio(&mut self, name: &str, device: Box<dyn VirtioDevice>) -> Result<()> {
        let vectors = (0..device.queue_max_sizes().len() + 1)
            .map(|_| self.vector())
            .collect::<Result<Vec<_>>>()?;
        let bar = self
            .bars
            .allocate(BAR_SIZE, BAR_SIZE, AllocPolicy::FirstMatch)
            .map_err(|e| dev_err(name, format!("no room for its BAR: {e:?}")))?
            .start();
        let dev = VirtioPci::new(
            name.to_string(),
            device,
            self.mem.clone(),
            bar,
            vectors,
            self.spawner.clone(),
        )
        .map_err(|e| dev_err(name, e))?;
        for (addr, evt) in dev.ioevents() {
            self.vm
                .register_ioevent(evt, IoEventAddress::Mmio(addr), None)?;
        }
        let slot = self
            .root
            .add_device(Arc::new(Mutex::new(dev)))
            .map_err(|e| dev_err(name, e))?;
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
        insert(
            pio,
            Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
            PCI_CONFIG_PORT,
            PCI_CONFIG_PORT_LEN,
        )?;
        insert(
            mmio,
            Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
            PCI_ECAM_START,
            PCI_ECAM_SIZE,
        )?;
        for (base, len) in [(PCI_MMIO32_START, PCI_MMIO32_SIZE), self.mmio64] {
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
