//! Address ranges (I/O ports or MMIO) to devices. The bus is built before the vCPUs start and is
//! read-only afterwards, so dispatch takes no bus-wide lock, only the target device's.

use std::sync::{Arc, Mutex};

use thiserror::Error;

/// A device reachable through a [`Bus`]. `offset` is relative to the range's base.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// What the bus dispatches to. A device behind a `Mutex` is one (the lock taken per access);
/// a router that locks per target itself (the PCI windows: each function has its own lock)
/// implements it directly, so accesses to different devices never wait on each other.
pub trait BusAccess: Send + Sync {
    fn read(&self, offset: u64, data: &mut [u8]);
    fn write(&self, offset: u64, data: &[u8]);
}

impl<T: BusDevice + ?Sized> BusAccess for Mutex<T> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(self).read(offset, data)
    }

    fn write(&self, offset: u64, data: &[u8]) {
        lock(self).write(offset, data)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    InvalidRange { base: u64, len: u64 },
}

struct Entry {
    base: u64,
    len: u64,
    dev: Arc<dyn BusAccess>,
}

/// A set of non-overlapping ranges, sorted by base.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `base .. base + len` to `dev`.
    pub fn insert(&mut self, dev: Arc<dyn BusAccess>, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let pos = self.entries.partition_point(|e| e.base < base);
        let overlaps_prev = pos > 0 && {
            let p = &self.entries[pos - 1];
            p.base + p.len > base
        };
        let overlaps_next = pos < self.entries.len() && self.entries[pos].base < end;
        if overlaps_prev || overlaps_next {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.insert(pos, Entry { base, len, dev });
        Ok(())
    }

    /// The device whose range holds the whole access `addr .. addr + size`, and the offset.
    /// Empty accesses match nothing, so devices may always index `data[0]`.
    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        if size == 0 {
            return None;
        }
        let pos = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(pos.checked_sub(1)?)?;
        let offset = addr - e.base;
        let end = offset.checked_add(size as u64)?;
        (end <= e.len).then_some((e, offset))
    }

    /// Dispatches a read; false if no device claims the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                e.dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; false if no device claims the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                e.dev.write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device; a poisoned lock (a panic elsewhere) still yields the device, since device
/// state stays consistent between accesses.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn dev() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
        let a = dev();
        let b = dev();
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x60, 5).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d[0], 5);
        assert!(bus.write(0x64, &[0xfe]));
        assert_eq!(b.lock().unwrap().writes, vec![(4, vec![0xfe])]);
        assert!(a.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn accesses_outside_or_straddling_ranges_are_refused() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x1000, 0x10).unwrap();
        let mut d = [0u8; 4];
        assert!(!bus.read(0xfff, &mut d[..1]));
        assert!(!bus.read(0x1010, &mut d[..1]));
        assert!(!bus.read(0x100e, &mut d), "straddles the end");
        assert!(!bus.write(u64::MAX, &d), "wrapping address");
        assert!(!bus.read(u64::MAX - 1, &mut d));
        assert!(bus.read(0x100c, &mut d));
        assert!(!bus.read(0x1000, &mut []), "empty access");
        assert!(!bus.write(0x1000, &[]));
    }

    #[test]
    fn overlapping_or_wrapping_ranges_are_rejected() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x100, 0x10).unwrap();
        assert!(bus.insert(dev(), 0x10f, 1).is_err());
        assert!(bus.insert(dev(), 0xf8, 0x9).is_err());
        assert!(bus.insert(dev(), 0xf0, 0x10).is_ok());
        assert!(bus.insert(dev(), 0x110, 0x10).is_ok());
        assert_eq!(
            bus.insert(dev(), u64::MAX, 2),
            Err(BusError::InvalidRange {
                base: u64::MAX,
                len: 2
            })
        );
        assert!(bus.insert(dev(), 0x500, 0).is_err());
    }
}
