//! The PCI root complex and the virtio devices on it, wired to the hypervisor: BARs from the
//! 64-bit window, MSI-X vectors as irqfds with MSI routes, queue notifications as ioeventfds,
//! and each device's vhost-user backend behind its transport (its call fds connected to the
//! vectors' GSIs as irqfds).

use std::os::unix::net::UnixStream;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use arch::GuestMemory;
use devices::pci::{MsiMessage, MsiVector, PciConfigIo, PciConfigMmio, PciMmio, PciRoot};
use devices::virtio::frontend::Frontend;
use devices::virtio::pci::{DeviceInfo, TransportParts, VirtioPci, BAR_SIZE};
use devices::virtio::VIRTIO_F_VERSION_1;
use devices::{Bus, EventFd};
use hypervisor::{Datamatch, IoEventAddress, IrqChip, Vm};
use vm_allocator::{AddressAllocator, AllocPolicy};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::error::{Error, Result};
use crate::events::VmEvent;
use crate::interrupts::{Interrupts, MsiRoutes};
use crate::platform::PciLayout;
use crate::vhost_user::control::{self, ControlParts};
use crate::vhost_user::wiring::VmWiring;
use crate::vhost_user::{Kind, REQUEST_TIMEOUT};

/// One MSI-X vector: an irqfd on its own GSI (the VMM's own, for configuration interrupts),
/// and the backend call fds connected to the same GSI.
struct Vector {
    gsi: u32,
    devid: Option<u32>,
    irqfd: EventFd,
    routes: Arc<MsiRoutes>,
    irqchip: Arc<dyn IrqChip>,
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

    fn connect(&self, fd: &EventFd) {
        // KVM injects at once if the fd was signalled while disconnected.
        if let Err(e) = self.irqchip.register_irqfd(fd, self.gsi) {
            devices::log_limited!(log::Level::Error, "call fd on GSI {}: {e}", self.gsi);
        }
    }

    fn disconnect(&self, fd: &EventFd) {
        if let Err(e) = self.irqchip.unregister_irqfd(fd, self.gsi) {
            devices::log_limited!(log::Level::Error, "call fd off GSI {}: {e}", self.gsi);
        }
    }
}

/// Builds bus 0 and its devices; [`PciBuilder::attach`] puts it on the VM's buses.
pub struct PciBuilder {
    vm: Arc<dyn Vm>,
    irqchip: Arc<dyn IrqChip>,
    interrupts: Arc<Interrupts>,
    mem: GuestMemory,
    root: PciRoot,
    layout: PciLayout,
    bars: AddressAllocator,
    routes: Arc<MsiRoutes>,
    next_gsi: u32,
    wiring: Arc<VmWiring>,
    events: Sender<VmEvent>,
}

fn dev_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

impl PciBuilder {
    pub fn new(
        vm: Arc<dyn Vm>,
        interrupts: Arc<Interrupts>,
        mem: GuestMemory,
        layout: PciLayout,
        events: Sender<VmEvent>,
    ) -> Result<Self> {
        let bars = AddressAllocator::new(layout.mmio64.0, layout.mmio64.1)
            .map_err(|e| dev_err("PCI window", format!("{e:?}")))?;
        Ok(PciBuilder {
            wiring: Arc::new(VmWiring::new(vm.clone())),
            events,
            vm,
            next_gsi: interrupts.irqchip.pin_count(),
            routes: interrupts.routes.clone(),
            irqchip: interrupts.irqchip.clone(),
            interrupts,
            mem,
            root: PciRoot::new(),
            layout,
            bars,
        })
    }

    fn vector(&mut self, devid: Option<u32>) -> Result<Arc<dyn MsiVector>> {
        let gsi = self.next_gsi;
        self.next_gsi += 1;
        // Masked until the guest programs it; the route is written once at attach.
        self.routes.reserve(gsi, MsiMessage::default(), devid);
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(|e| dev_err("eventfd", e))?;
        self.irqchip.register_irqfd(&irqfd, gsi)?;
        Ok(Arc::new(Vector {
            gsi,
            devid,
            irqfd,
            routes: self.routes.clone(),
            irqchip: self.irqchip.clone(),
        }))
    }

    /// Puts a virtio device of `kind` on the bus as a function named `name`, its backend
    /// reached through `stream` (connected to berth's own backend or someone else's). The
    /// frontend negotiates with the backend now, before the guest runs.
    pub fn add_vhost_user(&mut self, name: &str, kind: Kind, stream: UnixStream) -> Result<()> {
        let fe_err = |e: devices::virtio::frontend::FrontendError| {
            Error::Device(format!("{name}: vhost-user backend: {e}"))
        };
        let queues = kind.queues();
        let mut frontend = Frontend::new(stream, queues, REQUEST_TIMEOUT).map_err(fe_err)?;
        if frontend.features() & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(Error::Device(format!(
                "{name}: the vhost-user backend does not offer VIRTIO_F_VERSION_1 (virtio 1.x); berth has no legacy transport"
            )));
        }
        frontend.set_mem_table(&self.mem).map_err(fe_err)?;
        let config = frontend
            .config(kind.config_len())
            .map_err(fe_err)?
            .unwrap_or_else(|| vec![0; kind.config_len()]);
        let info = DeviceInfo {
            device_type: kind.virtio_type(),
            queue_sizes: vec![256; queues],
            features: frontend.features(),
            config,
        };
        // The requester id of bus 0, function 0 of the slot the device will get; its INTA is
        // wired by slot too.
        let slot = self
            .root
            .next_free_slot()
            .ok_or_else(|| dev_err(name, "no free PCI slot"))?;
        let devid = self.layout.msi_devid.then_some(u32::from(slot) << 3);
        let vectors = (0..queues + 1)
            .map(|_| self.vector(devid))
            .collect::<Result<Vec<_>>>()?;
        let bar = self
            .bars
            .allocate(BAR_SIZE, BAR_SIZE, AllocPolicy::FirstMatch)
            .map_err(|e| dev_err(name, format!("no room for its BAR: {e:?}")))?
            .start();
        let intx = self.interrupts.level_line((self.layout.intx_gsi)(slot));
        let parts = TransportParts {
            mem: self.mem.clone(),
            bar_addr: bar,
            vectors,
            intx: Some(intx),
            wiring: self.wiring.clone(),
        };
        let (mem, events) = (self.mem.clone(), self.events.clone());
        let dev = VirtioPci::new(name.to_string(), info, parts, |state, kicks, calls| {
            let dup = |fds: &[EventFd]| {
                fds.iter()
                    .map(|f| f.try_clone())
                    .collect::<std::io::Result<Vec<_>>>()
            };
            let c = control::start(ControlParts {
                name: name.to_string(),
                frontend,
                mem,
                kicks: dup(kicks)?,
                calls: dup(calls)?,
                state,
                events,
            })?;
            Ok(Box::new(c))
        })
        .map_err(|e| dev_err(name, e))?;
        for (addr, evt) in dev.ioevents() {
            self.vm
                .register_ioevent(evt, IoEventAddress::Mmio(addr), Datamatch::Any)?;
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
        self.routes.write()?;
        let root = Arc::new(self.root);
        let insert = |bus: &mut Bus, dev: Arc<dyn devices::bus::BusAccess>, base, len| {
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
            Arc::new(PciConfigMmio::new(root.clone())),
            ecam,
            ecam_len,
        )?;
        for (base, len) in [self.layout.mmio32, self.layout.mmio64] {
            insert(mmio, Arc::new(PciMmio::new(root.clone(), base)), base, len)?;
        }
        Ok(())
    }
}
