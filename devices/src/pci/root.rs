//! The root complex: bus 0, function 0 of 32 slots, slot 0 a host bridge. The VMM puts up to
//! three bus devices in front of it: [`PciConfigIo`] (x86 ports 0xCF8..0xD00),
//! [`PciConfigMmio`] (ECAM) and [`PciMmio`] (the window the BARs live in).

use std::sync::{Arc, Mutex};

use thiserror::Error;

use super::config::{valid_access, PciConfig, PciHeader};
use super::PciDevice;
use crate::bus::{lock, BusAccess};
use crate::{log_limited, BusDevice};

pub const NUM_SLOTS: usize = 32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PciRootError {
    #[error("all {NUM_SLOTS} PCI slots are in use")]
    NoFreeSlot,
}

/// Slot 0: an Intel host bridge, as cloud-hypervisor shows guests.
struct HostBridge(PciConfig);

impl HostBridge {
    fn new() -> Self {
        HostBridge(PciConfig::new(&PciHeader {
            vendor_id: 0x8086,
            device_id: 0x0d57,
            class: 0x06,
            ..Default::default()
        }))
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, reg: usize) -> u32 {
        self.0.read_reg(reg)
    }
    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.0.write_reg(reg, offset, data);
    }
    fn decode(&self, _addr: u64) -> Option<(usize, u64)> {
        None
    }
    fn bars(&self) -> Vec<(usize, u64, u64)> {
        Vec::new()
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

type Slot = Arc<Mutex<dyn PciDevice>>;

/// Where a configuration access goes: bus, device, function, dword and byte in it.
#[derive(Debug)]
struct Target {
    bus: u64,
    dev: u64,
    func: u64,
    reg: usize,
    byte: usize,
}

/// Bus 0 and its devices. Built before the guest runs, then shared (in an `Arc`) by the bus
/// devices in front of it. A BAR access finds its device in a table of decoding BARs (a
/// read lock, held only for the lookup) and then locks that device alone, so accesses to
/// different devices never wait on each other; the table is refreshed after every
/// configuration write, while the written device is locked.
pub struct PciRoot {
    slots: Vec<Option<Slot>>,
    /// (first, last address, slot) of every BAR that decodes (inclusive: a BAR may end at
    /// the top of the address space).
    windows: std::sync::RwLock<Vec<(u64, u64, usize)>>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    pub fn new() -> Self {
        let mut slots: Vec<Option<Slot>> = vec![None; NUM_SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        PciRoot {
            slots,
            windows: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Replaces slot `n`'s entries in the decode table with what `dev` decodes now.
    fn refresh(&self, n: usize, dev: &dyn PciDevice) {
        let mut w = self.windows.write().unwrap_or_else(|e| e.into_inner());
        w.retain(|&(_, _, s)| s != n);
        for (_, base, size) in dev.bars() {
            if let Some(last) = size.checked_sub(1).and_then(|l| base.checked_add(l)) {
                w.push((base, last, n));
            }
        }
    }

    /// The slot [`PciRoot::add_device`] will use next, if any is free.
    pub fn next_free_slot(&self) -> Option<u8> {
        self.slots.iter().position(Option::is_none).map(|n| n as u8)
    }

    /// Puts `dev` in the first free slot (as function 0) and returns the slot number.
    pub fn add_device(&mut self, dev: Arc<Mutex<dyn PciDevice>>) -> Result<u8, PciRootError> {
        let n = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciRootError::NoFreeSlot)?;
        self.refresh(n, &*lock(&dev));
        self.slots[n] = Some(dev);
        Ok(n as u8)
    }

    fn function(&self, t: &Target) -> Option<&Slot> {
        if t.bus != 0 || t.func != 0 {
            return None;
        }
        self.slots.get(usize::try_from(t.dev).ok()?)?.as_ref()
    }

    /// Reads `data.len()` bytes at `t`; absent functions and bad accesses read all ones.
    fn config_read(&self, t: &Target, data: &mut [u8]) {
        data.fill(0xff);
        if !valid_access(t.byte, data.len()) {
            log_limited!(
                log::Level::Debug,
                "pci: {}-byte config read at {t:?} ignored",
                data.len()
            );
            return;
        }
        if let Some(d) = self.function(t) {
            let v = lock(d).read_config(t.reg).to_le_bytes();
            data.copy_from_slice(&v[t.byte..t.byte + data.len()]);
        }
    }

    fn config_write(&self, t: &Target, data: &[u8]) {
        if !valid_access(t.byte, data.len()) {
            log_limited!(
                log::Level::Debug,
                "pci: {}-byte config write at {t:?} ignored",
                data.len()
            );
            return;
        }
        if let Some(d) = self.function(t) {
            let mut dev = lock(d);
            dev.write_config(t.reg, t.byte, data);
            self.refresh(t.dev as usize, &*dev);
        }
    }

    /// Runs `f` on the device and BAR that decode the whole access `addr .. addr + len`.
    fn with_bar(
        &self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&mut dyn PciDevice, usize, u64),
    ) -> bool {
        let Some(last) = (len as u64)
            .checked_sub(1)
            .and_then(|l| addr.checked_add(l))
        else {
            return false;
        };
        let slot = self
            .windows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|&&(first, last, _)| addr >= first && addr <= last)
            .map(|&(_, _, n)| n);
        let Some(d) = slot.and_then(|n| self.slots.get(n)?.as_ref()) else {
            return false;
        };
        let mut d = lock(d);
        // Decoded again under the device's lock: the table may be a moment old.
        if let Some((bar, off)) = d.decode(addr) {
            // The access must not run past the BAR's end (into another BAR or nothing).
            if off
                .checked_add(last - addr)
                .is_some_and(|end| d.decode(last) == Some((bar, end)))
            {
                f(&mut *d, bar, off);
                return true;
            }
        }
        false
    }
}

/// The x86 configuration mechanism #1: an address register at 0xCF8 and a data window at
/// 0xCFC..0xCFF. Insert it at 0xCF8 with length 8.
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
}

const CONFIG_ENABLE: u32 = 1 << 31;
/// Enable, bus, device, function and register; reserved bits read 0.
const CONFIG_ADDRESS_MASK: u32 = CONFIG_ENABLE | 0x00ff_fffc;

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    /// The target of a data-port access at byte `port` (0..4) of 0xCFC; None while the
    /// enable bit is clear.
    fn target(&self, port: u64) -> Option<Target> {
        if self.address & CONFIG_ENABLE == 0 {
            return None;
        }
        let a = u64::from(self.address);
        Some(Target {
            bus: a >> 16 & 0xff,
            dev: a >> 11 & 0x1f,
            func: a >> 8 & 0x7,
            reg: (a >> 2 & 0x3f) as usize,
            byte: port as usize,
        })
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => {
                if let Some(t) = self.target(offset - 4) {
                    self.root.config_read(&t, data);
                }
            }
            _ => log_limited!(
                log::Level::Debug,
                "pci cf8: {}-byte read at {offset} ignored",
                data.len()
            ),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address = v & CONFIG_ADDRESS_MASK;
            }
            4..=7 => {
                if let Some(t) = self.target(offset - 4) {
                    self.root.config_write(&t, data);
                }
            }
            _ => log_limited!(
                log::Level::Debug,
                "pci cf8: {}-byte write at {offset} ignored",
                data.len()
            ),
        }
    }
}

/// ECAM: function configuration spaces at bus << 20 | device << 15 | function << 12.
/// Only bus 0 exists, so the VMM may map just its first 1 MiB.
pub struct PciConfigMmio {
    root: Arc<PciRoot>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigMmio { root }
    }

    /// Splits a naturally aligned 1/2/4-byte access; None for anything else.
    fn target(offset: u64, len: usize) -> Option<Target> {
        if !matches!(len, 1 | 2 | 4) || offset & (len as u64 - 1) != 0 {
            log_limited!(
                log::Level::Debug,
                "pci ecam: {len}-byte access at {offset:#x} ignored"
            );
            return None;
        }
        Some(Target {
            bus: offset >> 20,
            dev: offset >> 15 & 0x1f,
            func: offset >> 12 & 0x7,
            reg: (offset & 0xfff) as usize / 4,
            byte: (offset & 3) as usize,
        })
    }
}

// No lock of its own: each function's configuration space has its lock in the root.
impl BusAccess for PciConfigMmio {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(t) = Self::target(offset, data.len()) {
            self.root.config_read(&t, data);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(t) = Self::target(offset, data.len()) {
            self.root.config_write(&t, data);
        }
    }
}

/// The MMIO window BARs are placed in: forwards each access to the BAR that decodes it.
pub struct PciMmio {
    root: Arc<PciRoot>,
    base: u64,
}

impl PciMmio {
    /// `base` is the guest address the window is inserted at on the bus.
    pub fn new(root: Arc<PciRoot>, base: u64) -> Self {
        PciMmio { root, base }
    }
}

// No lock of its own: the BAR's function is locked alone, so the vCPUs' accesses to different
// devices go on in parallel.
impl BusAccess for PciMmio {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let Some(addr) = self.base.checked_add(offset) else {
            data.fill(0xff);
            return;
        };
        let len = data.len();
        if !self
            .root
            .with_bar(addr, len, |d, bar, off| d.read_bar(bar, off, data))
        {
            data.fill(0xff);
            log_limited!(
                log::Level::Debug,
                "pci: {len}-byte read at {addr:#x} hit no BAR"
            );
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(addr) = self.base.checked_add(offset) else {
            return;
        };
        if !self
            .root
            .with_bar(addr, data.len(), |d, bar, off| d.write_bar(bar, off, data))
        {
            log_limited!(
                log::Level::Debug,
                "pci: {}-byte write at {addr:#x} hit no BAR",
                data.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{BarKind, COMMAND_MEMORY};

    /// A device with one 64-bit BAR that records BAR accesses and reads back its offset.
    struct FakeDevice {
        config: PciConfig,
        writes: Vec<(usize, u64, Vec<u8>)>,
    }

    impl PciDevice for FakeDevice {
        fn read_config(&mut self, reg: usize) -> u32 {
            self.config.read_reg(reg)
        }
        fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
            self.config.write_reg(reg, offset, data);
        }
        fn decode(&self, addr: u64) -> Option<(usize, u64)> {
            self.config.decode(addr)
        }
        fn bars(&self) -> Vec<(usize, u64, u64)> {
            self.config.decoding_bars()
        }
        fn read_bar(&mut self, _bar: usize, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.writes.push((bar, offset, data.to_vec()));
        }
    }

    const WINDOW: u64 = 0xc000_0000;

    fn fake(bar_addr: u64) -> Arc<Mutex<FakeDevice>> {
        let mut config = PciConfig::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1042,
            ..Default::default()
        });
        config
            .add_bar(
                0,
                BarKind::Mem64 {
                    prefetchable: false,
                },
                bar_addr,
                0x1000,
            )
            .unwrap();
        Arc::new(Mutex::new(FakeDevice {
            config,
            writes: Vec::new(),
        }))
    }

    /// A root with the fake at slot 1, BAR 0 at the start of the window.
    fn root() -> (Arc<PciRoot>, Arc<Mutex<FakeDevice>>) {
        let mut root = PciRoot::new();
        let dev = fake(WINDOW);
        assert_eq!(root.add_device(dev.clone()), Ok(1));
        (Arc::new(root), dev)
    }

    fn cf8(io: &mut PciConfigIo, dev: u32, reg: u32) {
        io.write(0, &(CONFIG_ENABLE | dev << 11 | reg << 2).to_le_bytes());
    }

    fn cfc_read(io: &mut PciConfigIo, byte: u64, len: usize) -> u32 {
        let mut d = [0u8; 4];
        io.read(4 + byte, &mut d[..len]);
        u32::from_le_bytes(d)
    }

    fn ecam(dev: u64, reg: u64) -> u64 {
        dev << 15 | reg << 2
    }

    fn ecam_read(m: &PciConfigMmio, offset: u64, len: usize) -> u32 {
        let mut d = [0u8; 4];
        m.read(offset, &mut d[..len]);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_sits_in_slot_0() {
        let (root, _) = root();
        let m = PciConfigMmio::new(root);
        assert_eq!(ecam_read(&m, 0, 4), 0x0d57_8086);
        assert_eq!(ecam_read(&m, 8, 4) >> 8, 0x06_00_00);
    }

    #[test]
    fn cf8_cfc_round_trip_to_a_device() {
        let (root, dev) = root();
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 1, 0);
        assert_eq!(cfc_read(&mut io, 0, 4), 0x1042_1af4);
        assert_eq!(cfc_read(&mut io, 2, 2), 0x1042);
        assert_eq!(cfc_read(&mut io, 1, 1), 0x1a);
        cf8(&mut io, 1, 1);
        io.write(4, &[0x02]);
        assert_eq!(dev.lock().unwrap().config.command(), COMMAND_MEMORY);
        cf8(&mut io, 1, 5);
        io.write(4, &u32::MAX.to_le_bytes());
        assert_eq!(
            cfc_read(&mut io, 0, 4),
            u32::MAX,
            "a 4 KiB BAR's upper half"
        );
        io.write(4, &[0, 0, 0, 0]);
        assert_eq!(dev.lock().unwrap().config.bar_addr(0), Some(WINDOW));
        let mut a = [0u8; 4];
        io.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), CONFIG_ENABLE | 1 << 11 | 5 << 2);
    }

    #[test]
    fn cf8_needs_enable_and_full_dword_address_writes() {
        let (root, _) = root();
        let mut io = PciConfigIo::new(root);
        io.write(0, &(1u32 << 11).to_le_bytes());
        assert_eq!(cfc_read(&mut io, 0, 4), u32::MAX, "enable bit clear");
        io.write(0, &[0xff, 0xff]);
        io.write(3, &[0x80]);
        let mut a = [0u8; 4];
        io.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 1 << 11, "partial writes ignored");
        let mut b = [0u8; 1];
        io.read(0, &mut b);
        assert_eq!(b, [0xff]);
        // Linux's type 1 probe: reserved bits read 0.
        io.write(0, &u32::MAX.to_le_bytes());
        io.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 0x80ff_fffc);
    }

    #[test]
    fn ecam_round_trip_to_a_device() {
        let (root, dev) = root();
        let m = PciConfigMmio::new(root);
        assert_eq!(ecam_read(&m, ecam(1, 0), 4), 0x1042_1af4);
        assert_eq!(ecam_read(&m, ecam(1, 0) + 2, 2), 0x1042);
        m.write(ecam(1, 1), &[0x06, 0]);
        assert_eq!(dev.lock().unwrap().config.command(), 0x06);
        m.write(ecam(1, 4), &u32::MAX.to_le_bytes());
        assert_eq!(ecam_read(&m, ecam(1, 4), 4), 0xffff_f004);
        assert_eq!(ecam_read(&m, ecam(1, 0x40), 4), 0, "extended space");
    }

    #[test]
    fn absent_devices_functions_and_buses_read_all_ones() {
        let (root, _) = root();
        let m = PciConfigMmio::new(root.clone());
        for offset in [ecam(2, 0), ecam(31, 0), ecam(1, 0) | 1 << 12, 1 << 20, !3] {
            assert_eq!(ecam_read(&m, offset, 4), u32::MAX, "{offset:#x}");
            m.write(offset, &[0; 4]);
        }
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 7, 0);
        assert_eq!(cfc_read(&mut io, 0, 4), u32::MAX);
        io.write(0, &(CONFIG_ENABLE | 1 << 16 | 1 << 11).to_le_bytes());
        assert_eq!(cfc_read(&mut io, 0, 4), u32::MAX, "bus 1");
    }

    #[test]
    fn odd_and_straddling_config_accesses_are_ignored() {
        let (root, dev) = root();
        let m = PciConfigMmio::new(root.clone());
        assert_eq!(ecam_read(&m, ecam(1, 0), 3), 0x00ff_ffff);
        assert_eq!(ecam_read(&m, ecam(1, 0) + 1, 2), 0xffff, "misaligned");
        m.write(ecam(1, 1), &[0x06, 0, 0]);
        m.write(ecam(1, 1) + 1, &[0x06, 0x06]);
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 1, 1);
        io.write(7, &[0x06, 0x06]);
        io.write(6, &[0x06; 4]);
        assert_eq!(cfc_read(&mut io, 3, 2), 0xffff);
        assert_eq!(dev.lock().unwrap().config.command(), 0);
    }

    #[test]
    fn mmio_window_forwards_to_the_decoding_bar() {
        let (root, dev) = root();
        let mmio = PciMmio::new(root.clone(), WINDOW);
        let mut d = [0u8; 4];
        mmio.read(0x10, &mut d);
        assert_eq!(d, [0xff; 4], "memory space disabled");
        PciConfigMmio::new(root.clone()).write(ecam(1, 1), &[0x02]);
        mmio.read(0x10, &mut d);
        assert_eq!(d, [0x10; 4]);
        mmio.write(0x20, &[1, 2]);
        assert_eq!(dev.lock().unwrap().writes, [(0, 0x20, vec![1, 2])]);
        mmio.read(0xffe, &mut d);
        assert_eq!(d, [0xff; 4], "runs past the BAR");
        mmio.write(0xffe, &[0; 4]);
        mmio.read(0x1000, &mut d);
        assert_eq!(d, [0xff; 4]);
        // The guest moves the BAR 64 KiB up.
        let m = PciConfigMmio::new(root);
        m.write(ecam(1, 4), &((WINDOW + 0x1_0000) as u32).to_le_bytes());
        mmio.read(0x10, &mut d);
        assert_eq!(d, [0xff; 4]);
        mmio.read(0x1_0010, &mut d);
        assert_eq!(d, [0x10; 4]);
        assert_eq!(dev.lock().unwrap().writes.len(), 1);
    }

    #[test]
    fn mmio_window_never_wraps() {
        let mut root = PciRoot::new();
        let dev = fake(0);
        root.add_device(dev.clone()).unwrap();
        let root = Arc::new(root);
        let m = PciConfigMmio::new(root.clone());
        m.write(ecam(1, 1), &[0x02]);
        m.write(ecam(1, 4), &u32::MAX.to_le_bytes());
        m.write(ecam(1, 5), &u32::MAX.to_le_bytes());
        let mmio = PciMmio::new(root, u64::MAX - 0xfff);
        let mut d = [0u8; 4];
        mmio.read(0xffc, &mut d);
        assert_eq!(d, [0xfc; 4], "last dword of the address space");
        mmio.read(0xffe, &mut d);
        assert_eq!(d, [0xff; 4]);
        mmio.read(u64::MAX, &mut d[..1]);
        assert_eq!(d[0], 0xff);
        mmio.write(u64::MAX, &[1]);
        assert!(dev.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn slots_run_out_after_31_devices() {
        let mut root = PciRoot::new();
        for n in 1..NUM_SLOTS {
            assert_eq!(root.add_device(fake(0)), Ok(n as u8));
        }
        assert_eq!(root.add_device(fake(0)), Err(PciRootError::NoFreeSlot));
    }

    #[test]
    fn a_device_held_busy_does_not_stall_another_devices_bar() {
        let mut root = PciRoot::new();
        let (a, b) = (fake(WINDOW), fake(WINDOW + 0x1000));
        root.add_device(a.clone()).unwrap();
        root.add_device(b.clone()).unwrap();
        let root = Arc::new(root);
        // Memory decoding on, as the guest does it: through configuration space.
        for dev in [1u64, 2] {
            PciConfigMmio::new(root.clone()).write(ecam(dev, 1), &COMMAND_MEMORY.to_le_bytes());
        }
        let mmio = Arc::new(PciMmio::new(root, WINDOW));
        // A vCPU is inside device A (its lock held); another reads device B's BAR.
        let busy = a.lock().unwrap();
        let m = mmio.clone();
        let t = std::thread::spawn(move || {
            let mut d = [0u8; 4];
            m.read(0x1010, &mut d);
            d[0]
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !t.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "device B's BAR waited for device A"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(t.join().unwrap(), 0x10);
        drop(busy);
    }
}
