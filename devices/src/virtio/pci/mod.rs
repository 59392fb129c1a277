//! The virtio-pci transport (virtio 1.2, 4.1), modern only: one 64-bit memory BAR holding the
//! common configuration, ISR, device configuration, notification area and the MSI-X table.
//! Queue notifications normally never get here (the VMM registers an ioeventfd on each
//! queue's notify address); writes that do trap are forwarded to the same kick fd.

mod common;
mod interrupt;

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::common::{
    CommonConfig, CommonWrite, COMMON_CFG_LEN, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
};
use self::interrupt::PciInterrupt;
use super::{
    Activation, GuestMemory, Running, Spawner, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::bus::lock;
use crate::log_limited;
use crate::pci::msix::MSIX_CONTROL;
use crate::pci::{
    BarKind, ConfigWrite, IntxLine, MsiVector, Msix, PciConfig, PciDevice, PciHeader,
};

/// BAR 0 layout. Each region sits in its own 4 KiB page so a driver may map them separately.
const COMMON_OFFSET: u64 = 0x0000;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_CFG_OFFSET: u64 = 0x2000;
const DEVICE_CFG_LEN: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_LEN: u64 = 0x1000;
/// Queue `i` is notified at `NOTIFY_OFFSET + i * NOTIFY_MULTIPLIER`.
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;
/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
const BAR: u8 = 0;

/// virtio_pci_cap.cfg_type values.
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
const VIRTIO_VENDOR_ID: u16 = 0x1af4;
const VIRTIO_DEVICE_ID_BASE: u16 = 0x1040;

/// A virtio device on the PCI bus.
pub struct VirtioPci {
    name: String,
    config: PciConfig,
    device: Box<dyn VirtioDevice>,
    common: CommonConfig,
    msix: Arc<Mutex<Msix>>,
    msix_cap: usize,
    pci_cfg_cap: usize,
    interrupt: Arc<PciInterrupt>,
    kicks: Vec<EventFd>,
    mem: GuestMemory,
    spawner: Arc<dyn Spawner>,
    running: Option<(EventFd, Box<dyn Running>)>,
}

/// The bytes of a `virtio_pci_cap` (without the generic PCI header the config adds).
fn virtio_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    // cap_vndr, cap_next (filled in by PciConfig), cap_len, cfg_type, bar, id, padding[2].
    let mut c = vec![0x09, 0, (16 + extra.len()) as u8, cfg_type, BAR, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(length as u32).to_le_bytes());
    c.extend_from_slice(extra);
    c
}

impl VirtioPci {
    /// Wraps `device` with its BAR at `bar_addr` (64-bit, [`BAR_SIZE`] bytes), one MSI-X
    /// vector per queue plus one for configuration changes in `vectors`, and INTx pin A on
    /// `intx` for drivers that do not enable MSI-X.
    pub fn new(
        name: String,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        bar_addr: u64,
        vectors: Vec<Arc<dyn MsiVector>>,
        intx: Option<Arc<dyn IntxLine>>,
        spawner: Arc<dyn Spawner>,
    ) -> std::io::Result<Self> {
        let err = |e: String| std::io::Error::other(format!("{name}: {e}"));
        let queues = device.queue_max_sizes().len();
        let mut config = PciConfig::new(&PciHeader {
            vendor_id: VIRTIO_VENDOR_ID,
            device_id: VIRTIO_DEVICE_ID_BASE + device.device_type() as u16,
            revision: 1,
            class: 0xff,
            subclass: 0,
            prog_if: 0,
            subsystem_vendor_id: VIRTIO_VENDOR_ID,
            subsystem_id: 0x40,
            interrupt_pin: u8::from(intx.is_some()),
        });
        config
            .add_bar(
                0,
                BarKind::Mem64 {
                    prefetchable: false,
                },
                bar_addr,
                BAR_SIZE,
            )
            .map_err(|e| err(e.to_string()))?;
        let mut add = |bytes: &[u8], writable: &[u8]| {
            config
                .add_capability(bytes, writable)
                .map_err(|e| err(e.to_string()))
        };
        let ro = |b: &Vec<u8>| vec![0u8; b.len()];
        for cap in [
            virtio_cap(CAP_COMMON, COMMON_OFFSET, COMMON_CFG_LEN, &[]),
            virtio_cap(CAP_ISR, ISR_OFFSET, 1, &[]),
            virtio_cap(CAP_DEVICE, DEVICE_CFG_OFFSET, DEVICE_CFG_LEN, &[]),
            virtio_cap(
                CAP_NOTIFY,
                NOTIFY_OFFSET,
                NOTIFY_LEN,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
        ] {
            add(&cap, &ro(&cap))?;
        }
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and the data window are the driver's.
        let pci_cfg = virtio_cap(CAP_PCI_CFG, 0, 0, &[0; 4]);
        let mut mask = vec![0u8; pci_cfg.len()];
        mask[4] = 0xff;
        mask[8..].fill(0xff);
        let pci_cfg_cap = add(&pci_cfg, &mask)?;
        let nvec = vectors.len();
        let msix = Msix::new(vectors).map_err(|e| err(e.to_string()))?;
        let cap = msix
            .capability(BAR, MSIX_TABLE_OFFSET as u32, BAR, MSIX_PBA_OFFSET as u32)
            .map_err(|e| err(e.to_string()))?;
        let msix_cap = add(&cap.bytes, &cap.writable)?;
        if nvec < queues + 1 {
            log::warn!("{name}: {nvec} MSI-X vectors for {queues} queues; some will share");
        }

        let msix = Arc::new(Mutex::new(msix));
        let kicks = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let common = CommonConfig::new(device.features(), device.queue_max_sizes());
        Ok(VirtioPci {
            name,
            config,
            interrupt: Arc::new(PciInterrupt::new(msix.clone(), intx, queues)),
            device,
            common,
            msix,
            msix_cap,
            pci_cfg_cap,
            kicks,
            mem,
            spawner,
            running: None,
        })
    }

    /// Guest addresses of the queues' notifications and the fds they should signal, for the
    /// VMM to register as ioeventfds (4-byte or any-width writes; the value does not matter).
    pub fn ioevents(&self) -> Vec<(u64, &EventFd)> {
        let base = self.config.bar_addr(0).unwrap_or(0) + NOTIFY_OFFSET;
        self.kicks
            .iter()
            .enumerate()
            .map(|(i, k)| (base + i as u64 * u64::from(NOTIFY_MULTIPLIER), k))
            .collect()
    }

    fn stop_worker(&mut self) {
        if let Some((stop, running)) = self.running.take() {
            if let Err(e) = stop.write(1) {
                log::error!("{}: cannot stop worker: {e}", self.name);
            }
            running.join();
        }
    }

    fn reset(&mut self) {
        self.stop_worker();
        self.device.reset();
        self.common.reset();
        self.interrupt.reset();
        for k in &self.kicks {
            // Drain stale notifications so the next worker does not see them.
            let _ = k.read();
        }
    }

    fn set_status(&mut self, status: u8) {
        if status == 0 {
            self.reset();
            return;
        }
        let old = self.common.status;
        let mut status = status;
        if status & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let f = self.common.driver_features;
            if f & !self.common.device_features != 0 || f & (1 << VIRTIO_F_VERSION_1) == 0 {
                log_limited!(
                    log::Level::Warn,
                    "{}: driver features {f:#x} refused",
                    self.name
                );
                status &= !STATUS_FEATURES_OK;
            }
        }
        self.common.status = status;
        if status & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            if let Err(e) = self.activate() {
                log_limited!(log::Level::Error, "{}: activation failed: {e}", self.name);
                self.common.status |= STATUS_DEVICE_NEEDS_RESET;
                self.interrupt_config();
            }
        }
    }

    fn interrupt_config(&self) {
        use super::VirtioInterrupt;
        self.interrupt.signal_config();
    }

    fn activate(&mut self) -> Result<(), String> {
        if self.common.status & STATUS_FEATURES_OK == 0 {
            return Err("DRIVER_OK without FEATURES_OK".into());
        }
        let features = self.common.driver_features;
        let mut queues = Vec::with_capacity(self.common.queues.len());
        for (i, qc) in self.common.queues.iter().enumerate() {
            let mut q = Queue::new(qc.max_size).map_err(|e| format!("queue {i}: {e:?}"))?;
            if qc.enabled {
                q.try_set_size(qc.size)
                    .and_then(|_| q.try_set_desc_table_address(GuestAddress(qc.desc)))
                    .and_then(|_| q.try_set_avail_ring_address(GuestAddress(qc.avail)))
                    .and_then(|_| q.try_set_used_ring_address(GuestAddress(qc.used)))
                    .map_err(|e| format!("queue {i}: {e:?}"))?;
                q.set_event_idx(features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
                q.set_ready(true);
                if !q.is_valid(&self.mem) {
                    return Err(format!("queue {i} lies outside guest memory"));
                }
            }
            queues.push(q);
        }
        let kicks = self
            .kicks
            .iter()
            .map(|k| k.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let worker = self
            .device
            .activate(Activation {
                mem: self.mem.clone(),
                queues,
                kicks,
                interrupt: self.interrupt.clone(),
                features,
            })
            .map_err(|e| e.to_string())?;
        let stop = EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string())?;
        let stop_clone = stop.try_clone().map_err(|e| e.to_string())?;
        let running = self
            .spawner
            .spawn(self.name.clone(), worker, stop_clone)
            .map_err(|e| format!("cannot start worker: {e}"))?;
        self.running = Some((stop, running));
        Ok(())
    }

    fn read_bar0(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < COMMON_OFFSET + COMMON_CFG_LEN => self.common.read(o, data),
            ISR_OFFSET if data.len() == 1 => data[0] = self.interrupt.read_isr(),
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.msix).read_table(o - MSIX_TABLE_OFFSET, data)
            }
            o if o >= MSIX_PBA_OFFSET => lock(&self.msix).read_pba(o - MSIX_PBA_OFFSET, data),
            _ => {}
        }
    }

    fn write_bar0(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_CFG_LEN => match self.common.write(o, data) {
                CommonWrite::Status(s) => self.set_status(s),
                CommonWrite::Vectors => self.interrupt.set_vectors(
                    self.common.config_msix_vector,
                    self.common.queues.iter().map(|q| q.msix_vector),
                ),
                CommonWrite::None => {}
            },
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                self.device.write_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + NOTIFY_LEN).contains(&o) => {
                let q = ((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                match self.kicks.get(q) {
                    Some(k) => {
                        let _ = k.write(1);
                    }
                    None => log_limited!(log::Level::Warn, "{}: notify of queue {q}", self.name),
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                lock(&self.msix).write_table(o - MSIX_TABLE_OFFSET, data)
            }
            _ => log_limited!(
                log::Level::Warn,
                "{}: write to read-only BAR offset {offset:#x} ignored",
                self.name
            ),
        }
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window: an access to `pci_cfg_data` reaches the BAR at the
    /// offset and width the driver put in the capability.
    fn pci_cfg_target(&mut self) -> Option<(u64, usize)> {
        let base = self.pci_cfg_cap / 4;
        let bar = self.config.read_reg(base + 1) & 0xff;
        let offset = u64::from(self.config.read_reg(base + 2));
        let len = self.config.read_reg(base + 3) as usize;
        (bar == u32::from(BAR) && matches!(len, 1 | 2 | 4) && offset + len as u64 <= BAR_SIZE)
            .then_some((offset, len))
    }
}

impl PciDevice for VirtioPci {
    fn read_config(&mut self, reg: usize) -> u32 {
        if reg == self.pci_cfg_cap / 4 + 4 {
            if let Some((offset, len)) = self.pci_cfg_target() {
                let mut b = [0u8; 4];
                self.read_bar0(offset, &mut b[..len]);
                return u32::from_le_bytes(b);
            }
        }
        self.config.read_reg(reg)
    }

    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if reg == self.pci_cfg_cap / 4 + 4 {
            if let Some((bar_offset, len)) = self.pci_cfg_target() {
                if offset == 0 && data.len() == len {
                    self.write_bar0(bar_offset, data);
                }
            }
            return;
        }
        match self.config.write_reg(reg, offset, data) {
            ConfigWrite::Capability(at) if at == self.msix_cap => {
                let control = self.config.read_u16(at + MSIX_CONTROL);
                lock(&self.msix).set_control(control);
            }
            // Sizing probes move BARs too. A real move leaves the ioeventfds at the old
            // address; notifications then trap here and still reach the kick fds.
            ConfigWrite::BarMoved { .. } | ConfigWrite::Capability(_) | ConfigWrite::Other => {}
        }
    }

    fn decode(&self, addr: u64) -> Option<(usize, u64)> {
        self.config.decode(addr)
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == 0 {
            self.read_bar0(offset, data);
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == 0 {
            self.write_bar0(offset, data);
        }
    }
}

#[cfg(test)]
mod tests;
