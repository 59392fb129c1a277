//! The virtio-pci transport (virtio 1.2, 4.1), modern only: one 64-bit memory BAR holding the
//! common configuration, ISR, device configuration, notification area and the MSI-X table.
//! The device itself is a vhost-user backend elsewhere; the transport hands activation, reset
//! and configuration writes to its control side without waiting ([`DeviceControl`]).
//!
//! The data path never comes here. Queue notifications are ioeventfds the backend reads (a
//! write that traps anyway is forwarded to the same kick fd); the backend's call fds are
//! connected straight to their MSI-X vectors' irqfds while those are unmasked, disconnected
//! while masked (a signal then waits in the fd and is delivered on unmasking), and watched by
//! the VMM, which raises INTx, while MSI-X is off.

mod common;
mod control;
mod interrupt;

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use self::common::{
    CommonConfig, CommonWrite, COMMON_CFG_LEN, NO_VECTOR, STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use self::interrupt::PciInterrupt;
use super::frontend::QueueSetup;
use super::{rings_in_memory, GuestMemory, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::bus::lock;
use crate::log_limited;
use crate::pci::msix::MSIX_CONTROL;
use crate::pci::{
    BarKind, ConfigWrite, IntxLine, MsiVector, Msix, PciConfig, PciDevice, PciHeader,
};
pub use control::{ControlState, DeviceControl, Wiring};

/// Offset of `device_status` in the common configuration.
const STATUS_OFFSET: u64 = 0x14;

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

/// What the transport needs to know of the device behind it.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Virtio device type (2 block, 3 console, 4 rng, ...).
    pub device_type: u32,
    /// Maximum size of each queue; the length is the number of queues.
    pub queue_sizes: Vec<u16>,
    /// Feature bits the device offers.
    pub features: u64,
    /// The configuration space as the device reported it.
    pub config: Vec<u8>,
}

/// Where each queue's call fd goes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Nowhere: signals wait in the fd (stopped device, masked or no vector).
    None,
    /// Connected to this MSI-X vector's irqfd.
    Msi(u16),
    /// Watched by the VMM, which raises INTx.
    Intx,
}

/// Where the device is in its life, as the transport sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started (after power-on or a completed reset).
    Idle,
    /// Activation handed to the control side: it runs, or failed (ControlState says).
    Active,
    /// The driver wrote 0 to device_status; the control side is stopping the rings. The
    /// status reads as it was (non-zero) until that is done: drivers poll it for 0.
    Resetting(u8),
}

/// A virtio device on the PCI bus.
pub struct VirtioPci {
    name: String,
    device_type: u32,
    config: PciConfig,
    common: CommonConfig,
    msix: Arc<Mutex<Msix>>,
    msix_cap: usize,
    pci_cfg_cap: usize,
    interrupt: Arc<PciInterrupt>,
    kicks: Vec<EventFd>,
    calls: Vec<EventFd>,
    routes: Vec<Route>,
    mem: GuestMemory,
    control: Box<dyn DeviceControl>,
    state: Arc<ControlState>,
    wiring: Arc<dyn Wiring>,
    /// Where the notification ioeventfds are registered (BAR 0's address when last moved).
    notify_at: u64,
    phase: Phase,
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

/// How a transport is wired up: everything [`VirtioPci::new`] takes besides the device.
pub struct TransportParts {
    pub mem: GuestMemory,
    /// Guest address of BAR 0 (64-bit, [`BAR_SIZE`] bytes).
    pub bar_addr: u64,
    /// One MSI-X vector per queue plus one for configuration changes.
    pub vectors: Vec<Arc<dyn MsiVector>>,
    /// INTx pin A, for drivers that do not enable MSI-X.
    pub intx: Option<Arc<dyn IntxLine>>,
    pub wiring: Arc<dyn Wiring>,
}

impl VirtioPci {
    /// Puts the device described by `info` on a transport. `control` builds the device's
    /// control side from the state it reports through; it gets the queues' kick and call fds
    /// (the ones the backend must be given).
    pub fn new<F>(
        name: String,
        info: DeviceInfo,
        parts: TransportParts,
        control: F,
    ) -> std::io::Result<Self>
    where
        F: FnOnce(
            Arc<ControlState>,
            &[EventFd],
            &[EventFd],
        ) -> std::io::Result<Box<dyn DeviceControl>>,
    {
        let err = |e: String| std::io::Error::other(format!("{name}: {e}"));
        let queues = info.queue_sizes.len();
        let TransportParts {
            mem,
            bar_addr,
            vectors,
            intx,
            wiring,
        } = parts;
        let mut config = PciConfig::new(&PciHeader {
            vendor_id: VIRTIO_VENDOR_ID,
            device_id: VIRTIO_DEVICE_ID_BASE + info.device_type as u16,
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
        let fds = || {
            (0..queues)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<std::io::Result<Vec<_>>>()
        };
        let (kicks, calls) = (fds()?, fds()?);
        let interrupt = Arc::new(PciInterrupt::new(msix.clone(), intx, queues));
        let state = Arc::new(ControlState::new(info.config, interrupt.clone()));
        let control = control(state.clone(), &kicks, &calls)?;
        Ok(VirtioPci {
            name,
            device_type: info.device_type,
            config,
            common: CommonConfig::new(info.features, &info.queue_sizes),
            interrupt,
            msix,
            msix_cap,
            pci_cfg_cap,
            routes: vec![Route::None; queues],
            kicks,
            calls,
            mem,
            control,
            state,
            wiring,
            notify_at: bar_addr,
            phase: Phase::Idle,
        })
    }

    /// Guest addresses of the queues' notifications and the fds they should signal, for the
    /// VMM to register as ioeventfds (4-byte or any-width writes; the value does not matter).
    pub fn ioevents(&self) -> Vec<(u64, &EventFd)> {
        self.notify_addresses(self.notify_at)
    }

    fn notify_addresses(&self, bar: u64) -> Vec<(u64, &EventFd)> {
        let base = bar + NOTIFY_OFFSET;
        self.kicks
            .iter()
            .enumerate()
            .map(|(i, k)| (base + i as u64 * u64::from(NOTIFY_MULTIPLIER), k))
            .collect()
    }

    /// The virtio device type.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// `device_status` as the driver reads it.
    fn status(&mut self) -> u8 {
        if let Phase::Resetting(old) = self.phase {
            if self.state.resetting() {
                return old;
            }
            self.finish_reset();
        }
        let mut status = self.common.status;
        if self.state.failed() {
            status |= STATUS_DEVICE_NEEDS_RESET;
        }
        status
    }

    /// The control side stopped the device: back to power-on state.
    fn finish_reset(&mut self) {
        self.common.reset();
        self.interrupt.reset();
        self.state.clear_failed();
        for k in self.kicks.iter().chain(&self.calls) {
            // Stale notifications and interrupts of the old driver.
            let _ = k.read();
        }
        self.phase = Phase::Idle;
    }

    fn set_status(&mut self, status: u8) {
        if let Phase::Resetting(_) = self.phase {
            if self.state.resetting() {
                log_limited!(
                    log::Level::Warn,
                    "{}: status write during a reset ignored",
                    self.name
                );
                return;
            }
            self.finish_reset();
        }
        if status == 0 {
            self.start_reset();
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
        if status & STATUS_DRIVER_OK != 0 && self.phase == Phase::Idle {
            match self.activation() {
                Ok(queues) => {
                    self.control.activate(self.common.driver_features, queues);
                    self.phase = Phase::Active;
                    self.sync_routes();
                }
                Err(e) => {
                    log_limited!(log::Level::Warn, "{}: activation refused: {e}", self.name);
                    self.common.status |= STATUS_DEVICE_NEEDS_RESET;
                    self.interrupt.signal_config();
                }
            }
        }
    }

    fn start_reset(&mut self) {
        match self.phase {
            Phase::Idle => self.finish_reset(),
            Phase::Active => {
                let old = self.status().max(1);
                self.phase = Phase::Resetting(old);
                self.sync_routes();
                self.state.start_reset();
                self.control.reset();
            }
            Phase::Resetting(_) => {}
        }
    }

    /// The queues as the driver set them up, checked: sizes within bounds and rings inside
    /// guest memory (so no backend is ever handed a ring it cannot map).
    fn activation(&self) -> Result<Vec<Option<QueueSetup>>, String> {
        if self.common.status & STATUS_FEATURES_OK == 0 {
            return Err("DRIVER_OK without FEATURES_OK".into());
        }
        self.common
            .queues
            .iter()
            .enumerate()
            .map(|(i, qc)| {
                if !qc.enabled {
                    return Ok(None);
                }
                if qc.size == 0 || qc.size > qc.max_size || !qc.size.is_power_of_two() {
                    return Err(format!("queue {i}: size {}", qc.size));
                }
                if !rings_in_memory(&self.mem, qc.size, qc.desc, qc.avail, qc.used) {
                    return Err(format!("queue {i} lies outside guest memory"));
                }
                Ok(Some(QueueSetup {
                    size: qc.size,
                    desc: qc.desc,
                    avail: qc.avail,
                    used: qc.used,
                }))
            })
            .collect()
    }

    /// Where queue `q`'s call fd should go now.
    fn wanted_route(&self, q: usize, msix: &Msix) -> Route {
        if self.phase != Phase::Active {
            return Route::None;
        }
        if msix.enabled() {
            let v = self.common.queues[q].msix_vector;
            if v != NO_VECTOR && msix.delivers(v) {
                return Route::Msi(v);
            }
            return Route::None;
        }
        if self.interrupt.has_intx() {
            Route::Intx
        } else {
            Route::None
        }
    }

    /// Connects each call fd where it should go; called after anything that can change that
    /// (activation, reset, MSI-X enable and masks).
    fn sync_routes(&mut self) {
        let msix = lock(&self.msix);
        for q in 0..self.calls.len() {
            let want = self.wanted_route(q, &msix);
            let have = self.routes[q];
            if want == have {
                continue;
            }
            let call = &self.calls[q];
            match have {
                Route::Msi(v) => {
                    if let Some(vec) = msix.vector(v) {
                        vec.disconnect(call);
                    }
                }
                Route::Intx => self.wiring.unwatch_call(call),
                Route::None => {}
            }
            match want {
                Route::Msi(v) => {
                    if let Some(vec) = msix.vector(v) {
                        vec.connect(call);
                    }
                }
                Route::Intx => {
                    let irq = self.interrupt.clone();
                    self.wiring
                        .watch_call(call, Box::new(move || irq.signal_used(q as u16)));
                }
                Route::None => {}
            }
            self.routes[q] = want;
        }
    }

    fn read_bar0(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            STATUS_OFFSET if data.len() == 1 => data[0] = self.status(),
            o if o < COMMON_OFFSET + COMMON_CFG_LEN => self.common.read(o, data),
            ISR_OFFSET if data.len() == 1 => data[0] = self.interrupt.read_isr(),
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + DEVICE_CFG_LEN).contains(&o) => {
                self.state.read_config(o - DEVICE_CFG_OFFSET, data)
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
                let off = o - DEVICE_CFG_OFFSET;
                self.state.write_config(off, data);
                self.control.write_config(off as u32, data.to_vec());
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
                lock(&self.msix).write_table(o - MSIX_TABLE_OFFSET, data);
                self.sync_routes();
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

    /// BAR 0 moved to `new`: the notification ioeventfds follow it. A sizing probe writes
    /// all ones to each half in turn and then restores them; an address with either half
    /// all ones is that probe, not a place anyone will notify.
    fn bar_moved(&mut self, new: u64) {
        let low_ones = (new as u32) | (BAR_SIZE as u32 - 1) == u32::MAX;
        if low_ones || new >> 32 == u64::from(u32::MAX) || new == self.notify_at {
            return;
        }
        let old = self.notify_at;
        for ((old_addr, fd), (new_addr, _)) in self
            .notify_addresses(old)
            .into_iter()
            .zip(self.notify_addresses(new))
        {
            self.wiring.move_notify(fd, old_addr, new_addr);
        }
        self.notify_at = new;
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
                self.sync_routes();
            }
            ConfigWrite::BarMoved { index: 0, new, .. } => self.bar_moved(new),
            ConfigWrite::BarMoved { .. } | ConfigWrite::Capability(_) | ConfigWrite::Other => {}
        }
    }

    fn decode(&self, addr: u64) -> Option<(usize, u64)> {
        self.config.decode(addr)
    }

    fn bars(&self) -> Vec<(usize, u64, u64)> {
        self.config.decoding_bars()
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
